"""Where Ray Train keeps a run: ``HYPERNYM_STORAGE`` turned into Ray's ``storage_path`` and
``storage_filesystem``.

A local path (the embedded ``<home>/runs``, or a shared mount such as NFS) goes to Ray as is.
An ``s3://`` URI goes through s3fs, the client the data reader already uses, so datasets and
checkpoints share one endpoint and credential resolution (``AWS_ENDPOINT_URL`` for MinIO or any
S3-compatible store, then the usual ``AWS_*`` variables, profiles or instance roles); Ray takes a
custom filesystem as ``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))`` with the scheme stripped from
the path. Other URIs (``gs://``...) are left to Ray's own pyarrow filesystems.
"""

from __future__ import annotations

from typing import Any

from hypernym.data.storage import open_fs

__all__ = ["checkpoint_uri", "ray_storage"]



def ray_storage(uri: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for ``ray.train.RunConfig``.

    Args:
        uri: the resolved storage setting (``Settings.storage``).

    Returns:
        The path and None for local paths and URIs Ray handles itself; for ``s3://`` the path
        without its scheme and a pyarrow filesystem over s3fs.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return uri, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    # The data reader's filesystem: it names the endpoint explicitly, so the endpoint travels
    # with the (pickled) filesystem to every worker; credentials do not: each node takes them
    # from its own environment or role.
    fs, _ = open_fs(uri)
    return uri.split("://", 1)[1].rstrip("/"), PyFileSystem(FSSpecHandler(fs))


def checkpoint_uri(checkpoint, storage: str) -> str:
    """A Ray checkpoint's location as the user would write it (``s3://...`` or a path)."""
    path = checkpoint.path
    if "://" in storage and "://" not in path:
        return f"{storage.split('://', 1)[0]}://{path.lstrip('/')}"
    return path
