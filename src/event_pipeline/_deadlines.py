"""The deadlines of attempts with a timeout, kept by the coordinator beside its retry heap.

A deadline lives on its work item (:class:`~event_pipeline._tasks.WorkItem`): ``deadline``
is when its attempt must end (None once it finished), ``queued`` the deadline it was queued
with. Attempts of one event share one timeout and are submitted in time order, so their
deadlines arrive already sorted: one FIFO queue of work items per timeout value costs an
append per attempt, where a heap would cost a push and a pop. The few deadlines that break
the order (an attempt seen starting later than it was submitted) go to a small heap. A
finished attempt clears its ``deadline`` and leaves its queue at once when at the head, as
it mostly is; the queues are swept of the other finished ones once they hold well more
than what is in flight.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._tasks import WorkItem

__all__ = ["Deadlines"]

#: A finished attempt behind a running one is taken out of a queue this short at once
#: (finished work items kept alive cost more than the scan); in a longer one it waits for
#: a sweep.
_SHORT = 32


class Deadlines:
    """When each timed attempt in flight must end."""

    __slots__ = ("_entries", "_late", "_queue", "_queues", "_sequence", "_sweep_at", "_timeout")

    def __init__(self) -> None:
        # By timeout: one call mostly has one, so its queue is also kept at hand.
        self._queues: dict[float, deque[WorkItem]] = {}
        self._timeout: float | None = None
        self._queue: deque[WorkItem] = deque()
        self._late: list[tuple[float, int, WorkItem]] = []
        self._sequence = itertools.count()
        #: Work items in the queues, finished ones included, and how many make a sweep.
        self._entries = 0
        self._sweep_at = 64

    def __bool__(self) -> bool:
        """Something may still be due (finished attempts not yet swept out included)."""
        return self._entries > 0 or bool(self._late)

    def add(self, item: WorkItem, now: float, timeout: float) -> None:
        """``item`` is submitted at ``now`` with ``timeout`` seconds per attempt."""
        item.deadline = item.queued = now + timeout
        if timeout == self._timeout:
            self._queue.append(item)
        else:
            self._queue_for(timeout).append(item)
        self._entries += 1

    def _queue_for(self, timeout: float) -> deque[WorkItem]:
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
            if self._timeout is None:
                self._timeout, self._queue = timeout, queue
        return queue

    def move(self, item: WorkItem, due: float) -> None:
        """Give ``item`` a new deadline (its attempt started later than submitted)."""
        item.deadline = due
        heapq.heappush(self._late, (due, next(self._sequence), item))

    def finished(self, item: WorkItem, timeout: float) -> None:
        """``item``'s attempt ended before its deadline: it leaves its queue at once when at
        the head (attempts mostly end in the order they started) or when the queue is
        short, else at the next sweep, once the queues hold well more than what is in
        flight. Either way soon: a finished work item kept alive, with its future and
        results, costs more than taking it out."""
        if item.deadline != item.queued:
            item.deadline = None  # moved: only in the late heap, where it is skipped
            return
        item.deadline = None
        queue = self._queue if timeout == self._timeout else self._queues[timeout]
        if queue and queue[0] is item:
            queue.popleft()
            self._entries -= 1
            while queue and queue[0].deadline is None:
                queue.popleft()
                self._entries -= 1
        elif len(queue) <= _SHORT:
            queue.remove(item)  # a short scan, in C
            self._entries -= 1
        elif self._entries > self._sweep_at:
            self._sweep()

    def _sweep(self) -> None:
        """Drop every finished work item from the queues."""
        self._entries = 0
        for queue in self._queues.values():
            kept = [entry for entry in queue if entry.deadline is not None]
            queue.clear()
            queue.extend(kept)
            self._entries += len(kept)
        self._sweep_at = 64 + 2 * self._entries

    def next_due(self) -> float | None:
        """The earliest deadline, finished and moved ones included (waking early is
        harmless)."""
        earliest = self._late[0][0] if self._late else None
        for queue in self._queues.values():
            if queue and (earliest is None or queue[0].queued < earliest):
                earliest = queue[0].queued
        return earliest

    def expired(self, now: float) -> Iterator[WorkItem]:
        """Pop every work item whose current deadline is ``now`` or earlier."""
        for queue in self._queues.values():
            while queue and queue[0].queued <= now:
                item = queue.popleft()
                self._entries -= 1
                if item.deadline is not None and item.deadline == item.queued:
                    item.deadline = None
                    yield item
        late = self._late
        while late and late[0][0] <= now:
            when, _, item = heapq.heappop(late)
            if item.deadline == when:
                item.deadline = None
                yield item

    def pending(self) -> list[float]:
        """The deadlines of the attempts that have not finished (for tests)."""
        seen: set[int] = set()
        found: list[float] = []
        entries = [*itertools.chain.from_iterable(self._queues.values())]
        entries += [item for _, _, item in self._late]
        for item in entries:
            if item.deadline is not None and id(item) not in seen:
                seen.add(id(item))
                found.append(item.deadline)
        return sorted(found)
