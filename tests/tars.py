"""Tar archives for tests, written with the standard library's tarfile."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping

__all__ = ["add_member", "tar_bytes"]


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    """A regular file ``name`` holding ``data``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def tar_bytes(members: Mapping[str, bytes] | Iterable[tuple[str, bytes]], *, mode: str = "w",
              format: int = tarfile.DEFAULT_FORMAT) -> bytes:
    """An archive of ``members`` (name -> data, in order) in memory; ``mode`` ``w:gz``
    compresses it."""
    items = members.items() if isinstance(members, Mapping) else members
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=mode, format=format) as tar:
        for name, data in items:
            add_member(tar, name, data)
    return out.getvalue()
