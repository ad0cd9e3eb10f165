"""Where Ray Train keeps a run: ``HYPERNYM_STORAGE`` turned into Ray's ``storage_path`` and
``storage_filesystem``.

A local path (the embedded ``<home>/runs``, or a shared mount such as NFS) goes to Ray as is.
An ``s3://`` URI goes through s3fs, the client the data reader already uses, so datasets and
checkpoints share one endpoint and credential resolution (``AWS_ENDPOINT_URL`` for MinIO or any
S3-compatible store, then the usual ``AWS_*`` variables, profiles or instance roles); Ray takes a
custom filesystem as ``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))`` with the scheme stripped from
the path. Other URIs (``gs://``...) are left to Ray's own pyarrow filesystems.

Run storage must outlast an endpoint outage. Ray Train's controller records every checkpoint in
``checkpoint_manager_snapshot.json`` and ends the run (``ControllerError``) when that write
fails; s3fs gives up on a refused connection after 5 immediate attempts, and botocore's own
retries back off by random, version-dependent amounts. So every S3 call of run storage retries
connection failures itself, for `OUTAGE_S` (measured on the rig: a 20 s S3 outage during a
checkpoint record, docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import Any

from fsspec.asyn import sync_wrapper
from s3fs import S3FileSystem

from hypernym.data.storage import RETRY_S, join, open_fs, unreachable_errors

__all__ = ["OUTAGE_S", "PatientS3FileSystem", "checkpoint_uri", "ray_storage", "run_dir",
           "run_name"]

log = logging.getLogger(__name__)

OUTAGE_S = RETRY_S  # as long as the data reader retries a shard


def _connection_errors() -> tuple[type[BaseException], ...]:
    # Only failures to reach the endpoint: an answer (404, 403...) is final, and s3fs turns
    # it into FileNotFoundError/PermissionError, which Ray relies on (exists checks). aiohttp's
    # own connection errors can surface from aiobotocore untranslated, and before Python 3.11
    # asyncio's timeout is not the builtin TimeoutError.
    from aiohttp import ClientConnectionError

    return (*unreachable_errors(), ClientConnectionError, asyncio.TimeoutError)


class PatientS3FileSystem(S3FileSystem):
    """s3fs whose every call retries failures to reach the endpoint for `OUTAGE_S`."""

    async def _call_s3(self, method, *akwarglist, **kwargs):
        deadline = time.monotonic() + OUTAGE_S
        for attempt in itertools.count():
            try:
                return await super()._call_s3(method, *akwarglist, **kwargs)
            except _connection_errors() as exc:
                if time.monotonic() > deadline:
                    raise
                if attempt == 0:
                    log.warning("run storage: %s failed (%s); retrying for up to %.0f s",
                                method, exc, OUTAGE_S)
                await asyncio.sleep(min(0.5 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    # s3fs's files call the synchronous wrapper, which its base class bound to its own
    # ``_call_s3``: bind it again to the retrying one.
    call_s3 = sync_wrapper(_call_s3)


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
    fs, path = open_fs(uri, cls=PatientS3FileSystem)
    return path, PyFileSystem(FSSpecHandler(fs))


def checkpoint_uri(checkpoint, storage: str) -> str:
    """A Ray checkpoint's location as the user would write it (``s3://...`` or a path)."""
    path = checkpoint.path
    if "://" in storage and "://" not in path:
        return f"{storage.split('://', 1)[0]}://{path.lstrip('/')}"
    return path


def run_name(recipe_name: str, run_id: str) -> str:
    """A run's directory name on run storage (Ray Train's run name): the recipe's name and the
    MLflow run id, so rerunning a recipe starts fresh and resuming names the run."""
    return f"{recipe_name}-{run_id[:12]}"


def run_dir(storage: str, recipe_name: str, run_id: str) -> str:
    """Where a run's checkpoints are on run storage (a path or URI)."""
    return join(storage, run_name(recipe_name, run_id))
