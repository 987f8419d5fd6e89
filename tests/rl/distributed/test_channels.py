"""The data channel: bounded queue (capacity, back-pressure, FIFO order, timeouts, close) and the
staleness gate (lag <= k admitted, lag > k dropped and counted, k = 0 synchronous)."""

import threading
import time

import pytest

from rl.distributed.channels import ChannelClosed, ChannelTimeout, StalenessGate, TrajectoryQueue


def test_queue_capacity_and_order():
    q = TrajectoryQueue(3, timeout_s=0.05)
    for i in range(3):
        q.put(i)
    assert len(q) == 3 and q.snapshot() == [0, 1, 2]
    with pytest.raises(ChannelTimeout, match="put"):
        q.put(3)  # full: the producer is held back
    assert [q.get() for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ChannelTimeout, match="get"):
        q.get()


def test_back_pressure_blocks_the_producer_until_the_consumer_takes():
    q = TrajectoryQueue(2, timeout_s=5.0)
    produced = []

    def producer():
        for i in range(6):
            q.put(i)
            produced.append(i)

    t = threading.Thread(target=producer)
    t.start()
    time.sleep(0.2)
    assert produced == [0, 1]  # held at capacity
    got = []
    for _ in range(6):
        got.append(q.get())
        time.sleep(0.01)
        assert len(q) <= 2
    t.join(5)
    assert got == list(range(6)) and q.put_wait_s > 0.1


def test_close_wakes_waiters_and_drains():
    q = TrajectoryQueue(1, timeout_s=5.0)
    q.put("a")
    err = []

    def blocked_put():
        try:
            q.put("b")
        except ChannelClosed as e:
            err.append(e)

    t = threading.Thread(target=blocked_put)
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(2)
    assert err and not t.is_alive()
    assert q.get() == "a"  # what was queued is still delivered
    with pytest.raises(ChannelClosed):
        q.get()


@pytest.mark.parametrize("k", [0, 1, 3])
def test_staleness_gate(k):
    g = StalenessGate(k)
    assert g.admit(5, 5)
    assert g.admit(5, 5 - k)
    assert not g.admit(5, 4 - k)
    assert not g.admit(9, 0)
    s = g.stats()
    assert s["staleness/admitted"] == 2 and s["staleness/dropped"] == 2
    assert s["staleness/max"] == k
    with pytest.raises(ValueError):
        g.admit(1, 2)  # a batch from the future is a bug, not staleness


def test_zero_staleness_is_synchronous():
    g = StalenessGate(0)
    assert g.admit(0, 0) and not g.admit(1, 0)
    with pytest.raises(ValueError):
        StalenessGate(-1)
