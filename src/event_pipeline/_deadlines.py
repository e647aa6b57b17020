"""The deadlines of attempts with a timeout, kept by the coordinator beside its retry heap.

Attempts of one event share one timeout and are submitted in time order, so their
deadlines arrive already sorted: one FIFO queue per timeout value costs an append per
attempt, where a heap would cost a push and a pop. The few deadlines that break the order
(an attempt seen starting later than it was submitted) go to a small heap. An attempt that
finishes is not looked for: its entry is dropped when it reaches the head, or when the
queues have grown well past what is in flight.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

__all__ = ["Deadlines"]


class Deadlines:
    """When each timed attempt in flight must end, by future."""

    __slots__ = ("_entries", "_late", "_queues", "_sequence", "due")

    def __init__(self) -> None:
        self._queues: dict[float, deque[tuple[float, Future[Any]]]] = {}
        self._late: list[tuple[float, int, Future[Any]]] = []
        self._sequence = itertools.count()
        #: Entries in the queues, stale ones included.
        self._entries = 0
        #: The current deadline of each future; an entry with another time is stale.
        self.due: dict[Future[Any], float] = {}

    def __bool__(self) -> bool:
        return bool(self.due)

    def add(self, future: Future[Any], now: float, timeout: float) -> None:
        """``future`` was submitted at ``now`` with ``timeout`` seconds per attempt."""
        due = now + timeout
        self.due[future] = due
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
        queue.append((due, future))
        self._entries += 1

    def move(self, future: Future[Any], due: float) -> None:
        """Give ``future`` a new deadline (its attempt started later than submitted)."""
        self.due[future] = due
        heapq.heappush(self._late, (due, next(self._sequence), future))

    def forget(self, future: Future[Any], timeout: float, in_flight: int) -> None:
        """``future`` finished: drop its entry, and those of others that finished."""
        due = self.due
        if due.pop(future, None) is None:
            return
        # Attempts mostly finish in the order they started: the head is usually done.
        # Dropping finished entries at once lets their futures die young (a queue of
        # finished futures kept the garbage collector busy).
        queue = self._queues.get(timeout)
        while queue and due.get(queue[0][1]) != queue[0][0]:
            queue.popleft()
            self._entries -= 1
        if self._entries > 64 + 2 * in_flight:
            due = self.due
            self._entries = 0
            for timeout, queue in list(self._queues.items()):
                kept = deque(entry for entry in queue if due.get(entry[1]) == entry[0])
                self._entries += len(kept)
                if kept:
                    self._queues[timeout] = kept
                else:
                    del self._queues[timeout]

    def next_due(self) -> float | None:
        """The earliest deadline, stale entries included (waking early is harmless)."""
        heads = [queue[0][0] for queue in self._queues.values() if queue]
        if self._late:
            heads.append(self._late[0][0])
        return min(heads) if heads else None

    def expired(self, now: float) -> Iterator[Future[Any]]:
        """Pop every future whose current deadline is ``now`` or earlier."""
        due = self.due
        for timeout, queue in list(self._queues.items()):
            while queue and queue[0][0] <= now:
                when, future = queue.popleft()
                self._entries -= 1
                if due.get(future) == when:
                    del due[future]
                    yield future
            if not queue:
                del self._queues[timeout]
        late = self._late
        while late and late[0][0] <= now:
            when, _, future = heapq.heappop(late)
            if due.get(future) == when:
                del due[future]
                yield future
