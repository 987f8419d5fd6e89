"""The data channel between executors: a bounded trajectory queue and the staleness gate.

LlamaRL (arXiv:2505.24034; spec `llamarl.md` §1, §5.3, §5.5, §9.1–9.2). The generator puts one
`Rollout` per step (a group-sampled batch of trajectories with the behaviour log-probs μ, the
rewards, the policy version that sampled them and the generator id); the trainer takes them in
order. The queue is bounded: a full queue blocks the producer (back-pressure), so the generator
can never run more than `capacity` batches ahead. Every blocking call has a timeout: a silent
peer (a dead generator or trainer) is reported as `ChannelTimeout` naming the channel, never a
hang. `snapshot()` lists what is queued (for a lossless checkpoint of the training frontier).

`StalenessGate(k)` admits a batch when `trainer_version - behaviour_version <= k` and drops (and
counts) it otherwise; k = 0 is the synchronous on-policy baseline, k = 1 LlamaRL's one-step
asynchrony.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Any


class ChannelTimeout(TimeoutError):
    """A blocking channel call waited longer than its timeout (the peer is presumed dead)."""


class ChannelClosed(RuntimeError):
    """The channel was closed (the run is shutting down or a peer failed)."""


@dataclasses.dataclass
class Rollout:
    """One step's trajectories as the generator hands them over.

    Attributes:
      seq: the stream ordinal (0, 1, ...): the trainer's loop step that will consume it.
      prompt_ids: indices of the prompts in the training set [P] (each sampled `group_size` times).
      batch: host arrays in the GRPO/AIPO layout (`tokens`, `mask`, `score_mask`, `old_logp` = μ,
        `adv`) with rows = prompts x samples.
      reward: per-row rewards [R].
      policy_version: the weight version the generator sampled with.
      generator_id: which generator produced it.
      stats: host metrics (reward mean, generation length, ...).
    """

    seq: int
    prompt_ids: Any
    batch: dict
    reward: Any
    policy_version: int
    generator_id: int = 0
    stats: dict = dataclasses.field(default_factory=dict)


class TrajectoryQueue:
    """A bounded FIFO with back-pressure, timeouts and idle-time accounting.

    Args:
      capacity: the most items held; `put` blocks while full.
      timeout_s: default timeout of `put`/`get` (None: wait forever; tests and runs set one).
      name: used in error messages.
    """

    def __init__(self, capacity: int, timeout_s: float | None = 60.0, name: str = "trajectories"):
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity, self.timeout_s, self.name = int(capacity), timeout_s, name
        self._items: collections.deque = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self.put_wait_s = 0.0  # producer time blocked on a full queue (generator idle)
        self.get_wait_s = 0.0  # consumer time blocked on an empty queue (trainer idle)
        self.puts = 0
        self.gets = 0

    def _wait(self, ready, timeout, what: str) -> float:
        timeout = self.timeout_s if timeout is None else timeout
        t0 = time.perf_counter()
        if not self._cv.wait_for(lambda: ready() or self._closed, timeout):
            raise ChannelTimeout(
                f"{self.name}: {what} waited {timeout:.1f} s; the peer is not responding"
            )
        if self._closed and not ready():
            raise ChannelClosed(f"{self.name} is closed")
        return time.perf_counter() - t0

    def put(self, item, timeout: float | None = None) -> None:
        """Appends `item`, blocking while the queue is full (back-pressure)."""
        with self._cv:
            if self._closed:
                raise ChannelClosed(f"{self.name} is closed")
            self.put_wait_s += self._wait(lambda: len(self._items) < self.capacity, timeout, "put")
            if self._closed:
                raise ChannelClosed(f"{self.name} is closed")
            self._items.append(item)
            self.puts += 1
            self._cv.notify_all()

    def get(self, timeout: float | None = None):
        """Removes and returns the oldest item, blocking while the queue is empty."""
        with self._cv:
            self.get_wait_s += self._wait(lambda: len(self._items) > 0, timeout, "get")
            item = self._items.popleft()
            self.gets += 1
            self._cv.notify_all()
            return item

    def close(self) -> None:
        """Wakes every waiter; later puts raise `ChannelClosed`, gets drain what is left."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cv:
            return len(self._items)

    def snapshot(self) -> list:
        """The queued items, oldest first (not removed)."""
        with self._cv:
            return list(self._items)


class StalenessGate:
    """Admits a batch iff its lag `trainer_version - behaviour_version` is at most `max_staleness`.

    Counts admitted and dropped batches and keeps a histogram of admitted lags.
    """

    def __init__(self, max_staleness: int):
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
        self.k = int(max_staleness)
        self.admitted = 0
        self.dropped = 0
        self.lags: collections.Counter = collections.Counter()

    def admit(self, trainer_version: int, behaviour_version: int) -> bool:
        lag = int(trainer_version) - int(behaviour_version)
        if lag < 0:
            raise ValueError(
                f"behaviour version {behaviour_version} is ahead of the trainer's {trainer_version}"
            )
        if lag > self.k:
            self.dropped += 1
            return False
        self.admitted += 1
        self.lags[lag] += 1
        return True

    def stats(self) -> dict[str, float]:
        n = max(self.admitted, 1)
        return {
            "staleness/mean": sum(k * v for k, v in self.lags.items()) / n,
            "staleness/max": float(max(self.lags, default=0)),
            "staleness/dropped": float(self.dropped),
            "staleness/admitted": float(self.admitted),
        }


class PeerDead(ChannelTimeout):
    """A role stopped beating: its heartbeat is older than the timeout, or its thread/process is
    gone. The message names the role and its last heartbeat."""


class Heartbeat:
    """The liveness of one role (the generator's thread or process), read by its peer.

    The role calls `beat(note)` at every point of progress (a rollout sent, a weight set
    received, a slice of waiting for weights); the peer calls `check(alive)` whenever it has
    waited a slice for that role and raises `PeerDead` when the last beat is older than
    `timeout_s` or `alive()` says the thread/process is gone. A beat is progress, not a timer
    thread: a role that hangs inside a step stops beating, which a timer thread would hide.

    Args:
      role: named in the error ("generator", "generator (process 1)").
      timeout_s: the longest silence tolerated (must exceed the longest step of the role).
    """

    def __init__(self, role: str, timeout_s: float):
        self.role, self.timeout_s = role, float(timeout_s)
        self._lock = threading.Lock()
        self.t0 = time.monotonic()
        self.last = self.t0
        self.note = "started"
        self.beats = 0

    def beat(self, note: str = "") -> None:
        with self._lock:
            self.last = time.monotonic()
            self.note = note or self.note
            self.beats += 1

    def age(self) -> float:
        with self._lock:
            return time.monotonic() - self.last

    def describe(self) -> str:
        with self._lock:
            since = self.last - self.t0
            return (
                f"last heartbeat {time.monotonic() - self.last:.1f} s ago "
                f"({since:.1f} s after start, {self.note}; {self.beats} beats)"
            )

    def check(self, alive=None) -> None:
        """Raises `PeerDead` if the role is gone (`alive()` false) or silent past the timeout."""
        if alive is not None and not alive():
            raise PeerDead(f"{self.role} is dead (not responding); {self.describe()}")
        if self.age() > self.timeout_s:
            raise PeerDead(
                f"{self.role} heartbeat timed out after {self.timeout_s:.1f} s (not responding); "
                f"{self.describe()}"
            )
