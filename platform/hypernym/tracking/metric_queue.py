"""Metrics sent to MLflow from a background thread that keeps them through a tracking outage.

MLflow's own asynchronous logging (``log_batch(synchronous=False)``) logs a failed batch's error
and drops the batch, so every metric sent while the server is down is lost. This queue holds
them instead and retries with backoff, in the order they were logged and with their original
timestamps, until the server answers again. It is bounded: past ``max_pending`` metrics the
oldest are dropped and counted, so a long outage cannot grow the training process without limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_BATCH = 1000  # MLflow's limit on metrics per log_batch request


class MetricQueue:
    """``put`` never blocks on the network; ``flush`` waits (bounded) until all is sent.

    ``send`` is called with a list of at most 1000 ``mlflow.entities.Metric`` and must raise on
    failure; it runs only on the queue's thread.
    """

    def __init__(self, send: Callable[[list[Any]], None], *, max_pending: int = 200_000,
                 backoff_s: tuple[float, float] = (1.0, 30.0)) -> None:
        self._send, self.max_pending = send, max_pending
        self._backoff_min, self._backoff_max = backoff_s
        self._pending: deque[Any] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.failures = 0  # failed send attempts
        self.dropped = 0  # metrics given up: over max_pending, or unsent when a flush timed out

    def put(self, metrics: list[Any]) -> None:
        with self._cond:
            if self._closed:  # a logger used after its run ended: say so by the count
                self.dropped += len(metrics)
                return
            self._pending.extend(metrics)
            over = len(self._pending) - self.max_pending
            if over > 0:
                for _ in range(over):
                    self._pending.popleft()
                if self.dropped == 0:
                    log.warning("MLflow metric queue full (%d): dropping the oldest metrics",
                                self.max_pending)
                self.dropped += over
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hypernym-metrics",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + self._in_flight

    def flush(self, timeout_s: float = 120.0) -> bool:
        """Wait until every queued metric is sent; False (and a warning) after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("MLflow unreachable: %d metrics not sent after waiting %.0f s",
                                len(self._pending) + self._in_flight, timeout_s)
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 120.0) -> bool:
        """Flush, then stop the thread; what could not be sent is counted as dropped."""
        sent = self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5.0)  # a send under way finishes (or fails) and puts its batch back
        with self._cond:
            self.dropped += len(self._pending) + self._in_flight
            self._pending.clear()
        return sent

    def _run(self) -> None:
        backoff = self._backoff_min
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                self._in_flight = len(batch)
            try:
                self._send(batch)
            except Exception as exc:  # noqa: BLE001 - any tracking error: keep the batch, retry
                with self._cond:
                    self.failures += 1
                    self._pending.extendleft(reversed(batch))  # back at the front, in order
                    self._in_flight = 0
                    if self.failures == 1 or backoff == self._backoff_max:
                        log.warning("MLflow log_batch failed (%d so far), %d metrics held, "
                                    "retrying in %.0f s: %s", self.failures,
                                    len(self._pending), backoff, exc)
                    # Sleep out the backoff (puts notify too, and must not shorten it).
                    retry_at = time.monotonic() + backoff
                    while not self._closed and time.monotonic() < retry_at:
                        self._cond.wait(retry_at - time.monotonic())
                    if self._closed:
                        return
                backoff = min(backoff * 2, self._backoff_max)
                continue
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()
            if backoff > self._backoff_min:
                log.warning("MLflow reachable again: sending the %d held metrics", self.pending)
            backoff = self._backoff_min
