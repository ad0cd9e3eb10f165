"""tests/servers.py: start, wait for readiness through refusals and timeouts, stop by group."""

from __future__ import annotations

import os
import socket
import sys

import pytest
import requests

from tests.servers import free_port, start_server, wait_ready


def test_a_server_starts_answers_and_stops_with_its_group(tmp_path):
    port = free_port()
    server = start_server([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                          url=f"http://127.0.0.1:{port}", log=tmp_path / "http.log",
                          timeout_s=60)
    with server:
        assert requests.get(server.url, timeout=10).status_code == 200
        assert os.getpgid(server.proc.pid) == server.proc.pid  # its own process group
    assert not server.running()
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url, timeout=5)


def test_a_server_that_exits_fails_with_its_log(tmp_path):
    command = [sys.executable, "-c", "import sys; print('port in use, giving up'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*port in use, giving up"):
        start_server(command, url=f"http://127.0.0.1:{free_port()}", log=tmp_path / "s.log")


def test_a_listener_that_never_answers_is_retried_until_the_deadline(tmp_path):
    """Connections are accepted (by the kernel) but no reply comes: each GET times out, which
    counts as "not ready yet", not as a crash; the deadline ends the wait."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        with pytest.raises(RuntimeError, match=r"not ready after 2 s \(last: ReadTimeout"):
            wait_ready(url, timeout_s=2)
