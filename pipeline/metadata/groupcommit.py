"""Group commit: writes that concurrent threads of one process make at the same moment go to
MongoDB as one command.

Every MongoDB command costs the server a fixed price (about half a millisecond on the nx-27017
stand-in) whatever it carries; a small upload's records are a few hundred bytes. A thread that
finds no write in flight writes its own record at once (no waiting, no added latency when alone);
records submitted while a write is in flight wait for it to end and are then written together by
one of them. Each caller returns only once its own record is acknowledged, or raises its own
error: the durability of each write is what it was.

Under a steady load few writes overlap by chance: each is short. So a leader that knows more
callers are on their way (``expected``: PostgreSQL's ``commit_siblings``) waits for them a moment
before it writes (``linger_s``: its ``commit_delay``), and writes as soon as they have all arrived.
The callers on their way are counted by ``InFlight``: a small upload is one from its first byte
until its records are written.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")


class _Slot(Generic[T]):
    __slots__ = ("item", "error", "result", "written", "event")

    def __init__(self, item: T):
        self.item = item
        self.error: BaseException | None = None
        self.result = None
        self.written = False  # woken unwritten: this thread writes the next batch
        self.event = threading.Event()


class InFlight:
    """How many callers of this process are on their way to a group commit."""

    def __init__(self):
        self._lock = threading.Lock()
        self.count = 0

    @contextmanager
    def counting(self, counted: bool = True) -> Iterator[None]:
        if not counted:
            yield
            return
        with self._lock:
            self.count += 1
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1

    def __call__(self) -> int:
        return self.count


# how long a leader waits for the records it expects: a fraction of one command's cost
COMMIT_DELAY_S = 0.002
# small uploads under way in this process (``pipeline.datapath.upload``): each ends in records written
SMALL_UPLOADS = InFlight()


class GroupCommit(Generic[T]):
    """``submit(item)`` returns once ``write(batch)`` has written a batch holding ``item``.

    ``write(items)`` returns, for each item, what its ``submit`` returns (None when there is
    nothing to say) or the exception its caller raises; an exception ``write`` raises is every item's.
    ``expected(pending)``: how many records a batch can expect, the ``pending`` ones included; while
    fewer are pending, a leader waits up to ``linger_s`` for the others."""

    def __init__(self, write: Callable[[Sequence[T]], Sequence[object]], max_batch: int = 64,
                 linger_s: float = 0.0, expected: Callable[[int], int] | None = None):
        self._write = write
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._expected = expected
        self._lock = threading.Lock()
        self._gathered = threading.Condition(self._lock)
        self._lingering = False
        self._pending: list[_Slot[T]] = []
        self._writing = False  # invariant: records pending => a writer is in flight or promoted

    def submit(self, item: T):
        slot = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            lead = not self._writing
            self._writing = True
            if self._lingering and self._complete():
                self._gathered.notify()
        if not lead:
            slot.event.wait()
        if not slot.written:  # a leader: the first pending record is this one
            self._lead()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _complete(self) -> bool:
        """Every record the batch can expect is pending (called holding the lock)."""
        n = len(self._pending)
        return n >= self.max_batch or n >= self._expected(n)

    def _lead(self) -> None:
        with self._lock:
            if self.linger_s and self._expected is not None and not self._complete():
                self._lingering = True
                self._gathered.wait_for(self._complete, timeout=self.linger_s)
                self._lingering = False
            batch, self._pending = self._pending[:self.max_batch], self._pending[self.max_batch:]
        try:
            results = self._write([s.item for s in batch])
        except BaseException as exc:  # noqa: BLE001 - every caller of the batch raises it
            results = [exc] * len(batch)
        following = None
        with self._lock:
            if self._pending:  # written next by the first of them, as soon as it wakes
                following = self._pending[0]
            else:
                self._writing = False
        for s, result in zip(batch, results):
            if isinstance(result, BaseException):
                s.error = result
            else:
                s.result = result
            s.written = True
            s.event.set()
        if following is not None:
            following.event.set()
