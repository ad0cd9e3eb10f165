"""The metric queue keeps metrics through send failures, in order, and bounds what it holds.

The sender here is a plain function standing in for the network, so the failure pattern is exact;
the same queue against a real `mlflow server` that is stopped and restarted is tested in
tests/integration/registry/test_registry.py.
"""

import threading
import time

from hypernym.tracking.metric_queue import MetricQueue


class Flaky:
    """Fails while ``down`` is set; records what it accepted."""

    def __init__(self) -> None:
        self.down = threading.Event()
        self.sent: list[int] = []
        self.batches: list[int] = []

    def __call__(self, batch: list[int]) -> None:
        if self.down.is_set():
            raise ConnectionError("server down")
        self.batches.append(len(batch))
        self.sent.extend(batch)


def test_outage_keeps_every_metric_in_order():
    send = Flaky()
    queue = MetricQueue(send, backoff_s=(0.01, 0.05))
    queue.put([0, 1])
    assert queue.flush(5)
    send.down.set()
    queue.put([2, 3])
    queue.put([4])
    assert not queue.flush(0.3)  # still down: the flush gives up, nothing is lost
    assert queue.pending == 3 and queue.failures >= 2
    send.down.clear()
    queue.put([5])
    assert queue.close(5)
    assert send.sent == [0, 1, 2, 3, 4, 5]
    assert queue.dropped == 0


def test_batches_respect_mlflow_limit():
    send = Flaky()
    queue = MetricQueue(send)
    send.down.set()  # let 2500 pile up, then send them
    queue.put(list(range(2500)))
    time.sleep(0.05)
    send.down.clear()
    assert queue.close(10)
    assert send.sent == list(range(2500))
    assert max(send.batches) <= 1000


def test_bounded_oldest_dropped_and_counted():
    send = Flaky()
    send.down.set()
    queue = MetricQueue(send, max_pending=10, backoff_s=(0.01, 0.02))
    queue.put(list(range(25)))
    assert queue.pending <= 10
    send.down.clear()
    assert queue.close(5)
    # the newest ten survive (one batch may have been in flight when the rest arrived)
    assert send.sent[-10:] == list(range(15, 25))
    assert queue.dropped + len(send.sent) == 25


def test_close_while_down_counts_unsent_as_dropped():
    send = Flaky()
    send.down.set()
    queue = MetricQueue(send, backoff_s=(0.01, 0.02))
    queue.put([1, 2, 3])
    assert not queue.close(0.2)
    assert queue.dropped == 3 and send.sent == []
