"""Local paths and ``s3://`` URIs through one interface (fsspec/s3fs).

An S3-compatible endpoint other than AWS (MinIO, a test server) is set the way boto sets it:
``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``), with the usual ``AWS_*`` credentials.
"""

from __future__ import annotations

import os

import fsspec
from fsspec.core import url_to_fs

__all__ = ["RETRY_S", "is_remote", "join", "open_fs", "unreachable_errors"]

# How long a read of a shard (data/reader.py) and a call of run storage on S3
# (train/run_storage.py) retry an endpoint they cannot reach: outlasts a restart of the store.
RETRY_S = 120.0


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """Errors of an endpoint that could not be reached (refused, reset, timed out). botocore's
    connection errors are not OSErrors, and s3fs lets them through untranslated; an answer
    (404, 403...) is not among them."""
    errors: list[type[BaseException]] = [TimeoutError, ConnectionError]
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError

        errors += [BotoConnectionError, HTTPClientError]
    except ImportError:  # no S3 support installed: nothing of it to retry
        pass
    return tuple(errors)


def open_fs(uri: str, cls: type | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path within it (scheme stripped).

    ``cls``: an s3fs subclass to use for ``s3://`` (run storage's retrying one)."""
    uri = str(uri)
    if not uri.startswith(("s3://", "s3a://")):
        return url_to_fs(uri)
    options: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        # Named explicitly: fsspec caches filesystems by their arguments, and an s3fs instance
        # keeps the endpoint botocore read when it was made, so a process whose endpoint
        # changes would otherwise go on talking to the old one.
        options["endpoint_url"] = endpoint
    if cls is not None:
        return cls(**options), cls._strip_protocol(uri)
    return url_to_fs(uri, **options)


def join(root: str, *parts: str) -> str:
    """Join with '/' whatever the filesystem (os.path.join would break s3:// URIs on Windows)."""
    out = str(root).rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")
