"""Run storage on S3 outlasts an endpoint outage (train/run_storage.py): the rig's S3 endpoint
(infra/stack/s3.py, a real server process that refuses connections while down and keeps its
objects) goes down, and a write and a read of run storage issued during the outage complete
once it is back, through run storage's retries; an answer from the endpoint (a missing key) is
still final at once."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.servers import free_port, start_server

pytestmark = pytest.mark.integration

OUTAGE_S = 12.0  # plain s3fs + botocore give up after 3-15 s (random backoff)


@pytest.fixture
def endpoint(tmp_path, monkeypatch):
    from infra.stack import s3 as s3_server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server([sys.executable, "-m", "infra.stack.s3", "--port", str(port)],
                          url=url, log=tmp_path / "s3.log")
    for key, value in {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    try:
        yield server, s3_server
    finally:
        server.stop()


def outage(server, s3_server) -> threading.Thread:
    os.kill(server.proc.pid, s3_server.GO_DOWN)
    back = threading.Timer(OUTAGE_S, os.kill, (server.proc.pid, s3_server.COME_BACK))
    back.start()
    return back


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def warnings_of(name: str) -> Iterator[_Records]:
    """The WARNING records of logger ``name`` during the block, from a handler on that logger
    itself: the CLI's logging set up by earlier tests in this process may stop records from
    propagating to pytest's capture. The handler and the level are undone afterwards."""
    logger, records = logging.getLogger(name), _Records()
    level = logger.level
    logger.addHandler(records)
    logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(records)
        logger.setLevel(level)


def test_run_storage_waits_out_an_s3_outage(endpoint):
    import pyarrow.fs

    from hypernym.train.run_storage import ray_storage

    server, s3_server = endpoint
    path, fs = ray_storage("s3://runs/team")
    assert path == "runs/team" and isinstance(fs, pyarrow.fs.PyFileSystem)
    fs.create_dir("runs")  # the bucket
    with fs.open_output_stream(f"{path}/before.json") as out:
        out.write(b"{}")

    with warnings_of("hypernym.train.run_storage") as records:
        back = outage(server, s3_server)
        started = time.monotonic()
        # What Ray Train's controller does at a checkpoint: write its snapshot, then read it back.
        with fs.open_output_stream(f"{path}/checkpoint_manager_snapshot.json") as out:
            out.write(b'{"step": 8}')
        waited = time.monotonic() - started
        back.join()
        with fs.open_input_stream(f"{path}/checkpoint_manager_snapshot.json") as src:
            assert src.read() == b'{"step": 8}'
        print(f"\nwrite during a {OUTAGE_S:.0f} s S3 outage completed after {waited:.1f} s")
        assert waited >= OUTAGE_S - 1, "the write did not meet the outage: the test proves nothing"
        # The write came through run storage's retries (plain s3fs gives up within seconds).
        assert any("retrying for up to" in r.getMessage() for r in records.records)

        # An answer is final: a missing object is reported at once, not retried for minutes.
        started = time.monotonic()
        info = fs.get_file_info(f"{path}/missing.json")
        assert info.type == pyarrow.fs.FileType.NotFound
        assert time.monotonic() - started < 5

