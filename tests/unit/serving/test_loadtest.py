"""The load test's closed loops against a real HTTP server, and the equal-p99 comparison."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hypernym.serving.loadtest import RunStats, closed_loop, compare


class _Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the servers under test
    disable_nagle_algorithm = True  # as they do: no 40 ms delayed-ACK stalls

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        bad = body.get("bad")
        data = json.dumps({"predictions": [{"error": "no" if bad else None}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()


def test_closed_loop_counts_answers_and_errors(server):
    good = closed_loop(server, "/", b'{"bad": false}', server="t", clients=3, requests=60,
                       seconds=30)
    assert good.ok == 60 and good.errors == 0 and good.rps > 0
    assert 0 < good.p50_ms <= good.p99_ms
    bad = closed_loop(server, "/", b'{"bad": true}', server="t", clients=2, requests=10,
                      seconds=30)  # an answer whose row has an error is not a success
    assert bad.ok == 0 and bad.errors == 10


def test_clients_spread_over_processes(server):
    run = closed_loop(server, "/", b'{"bad": false}', server="t", clients=4, requests=40,
                      seconds=30, processes=2)
    assert run.ok == 40 and run.errors == 0


def _run(clients, rps, p99, errors=0):
    return RunStats(server="s", clients=clients, ok=100, errors=errors, wall_s=1.0, rps=rps,
                    p50_ms=p99 / 2, p99_ms=p99, load=0.0)


def test_compare_at_equal_p99():
    base = [_run(4, 50.0, 100.0), _run(16, 45.0, 400.0)]
    other = [_run(4, 60.0, 90.0), _run(16, 90.0, 300.0), _run(32, 200.0, 50.0, errors=3)]
    result = compare(base, other)
    at = result["at_base_best"]  # mlflow's best: 50 req/s at p99 100 ms
    assert at["rps"] == 60.0 and at["ratio"] == pytest.approx(1.2)
    assert result["best_any"]["ratio"] == pytest.approx(90.0 / 50.0)  # the run with errors
    assert [b["p99_ms"] for b in result["bounds"]] == [100.0, 300.0, 400.0]  # doesn't count
    assert result["bounds"][1]["ratio"] == pytest.approx(90.0 / 50.0)


def test_compare_when_the_other_never_fits():
    result = compare([_run(4, 50.0, 100.0)], [_run(4, 80.0, 150.0)])
    assert result["at_base_best"]["rps"] is None and result["at_base_best"]["ratio"] is None
    assert result["best_any"]["ratio"] == pytest.approx(1.6)
