"""The rig's S3 endpoint: moto's S3 server on a loopback address, in its own process.

An outage is a real one: on SIGUSR1 the process closes its listening socket and every open
connection (clients get "connection refused" / "server disconnected"); on SIGUSR2 it listens
again. The buckets and objects stay, as a real S3-compatible service (MinIO) restarting with its
disk keeps them: moto holds them in this process's memory, so a killed process would lose them,
which is why this launcher exists rather than ``python -m moto.server``.

Run: ``python -m infra.stack.s3 --host 127.0.0.1 --port PORT`` (the stack does it).
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
import time

__all__ = ["GO_DOWN", "COME_BACK", "main"]

GO_DOWN, COME_BACK = signal.SIGUSR1, signal.SIGUSR2


class _Endpoint:
    def __init__(self, host: str, port: int) -> None:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )

        self.host, self.port = host, port
        self.app = DomainDispatcherApplication(create_backend_app)  # state lives across restarts
        self.open: set[socket.socket] = set()
        lock, opened = threading.Lock(), self.open

        class Handler(MotoRequestHandler):  # remembers its connection, to drop it in an outage
            def setup(self) -> None:
                super().setup()
                with lock:
                    opened.add(self.connection)

            def finish(self) -> None:
                with lock:
                    opened.discard(self.connection)
                super().finish()

        self.handler, self.lock = Handler, lock
        self.server = None

    def start(self) -> None:
        from werkzeug.serving import make_server

        deadline = time.monotonic() + 30
        while True:  # the port may linger a moment after an outage
            try:
                self.server = make_server(self.host, self.port, self.app, threaded=True,
                                          request_handler=self.handler)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is None:
            return
        self.server.shutdown()
        self.server.server_close()  # refuse new connections now
        with self.lock:
            for conn in list(self.open):  # and drop the open ones, as a dead process would
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.server = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    handled = {GO_DOWN, COME_BACK, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)  # before any thread: main takes them all
    endpoint = _Endpoint(args.host, args.port)
    endpoint.start()
    print(f"S3 endpoint on http://{args.host}:{args.port}", flush=True)
    while True:
        sig = signal.sigwait(handled)
        if sig == GO_DOWN:
            endpoint.stop()
            print("S3 endpoint down (outage)", flush=True)
        elif sig == COME_BACK:
            if endpoint.server is None:
                endpoint.start()
            print("S3 endpoint back", flush=True)
        else:
            endpoint.stop()
            return


if __name__ == "__main__":
    main()
