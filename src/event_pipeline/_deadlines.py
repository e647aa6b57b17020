"""The deadlines of attempts with a timeout, kept by the coordinator beside its retry heap.

A deadline lives on its work item (:class:`~event_pipeline._tasks.WorkItem`): ``deadline``
is when its attempt must end, None once it ended. Attempts of one event share one timeout
and are submitted in time order, so their deadlines arrive already sorted: one FIFO queue
of work items per timeout value costs an append per attempt, where a heap would cost a
push and a pop. The few deadlines that break the order (an attempt seen starting later
than it was submitted) leave their queue for a small heap.

An attempt that ends leaves its queue at once: from the head (attempts mostly end in the
order they started), or by a short scan; only in a long queue is it left marked (its
``deadline`` None) for a sweep. Finished work items kept alive, with their futures and
results, cost far more than taking them out.

Every attempt with a timeout pays for this, so the common case — the call's first timeout,
an attempt ending at the head of its queue — is written out by the coordinator itself
against :attr:`Deadlines.queue` and :attr:`Deadlines.timeout`; :meth:`Deadlines.add` and
:meth:`Deadlines.finished` do everything else.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._tasks import WorkItem

__all__ = ["Deadlines"]

#: An attempt that ends behind a running one is taken out of a queue this short at once
#: (a scan in C); in a longer one it is marked, and swept out later.
_SHORT = 32


class Deadlines:
    """When each timed attempt in flight must end."""

    __slots__ = ("_late", "_queues", "_sequence", "_sweep_at", "queue", "timeout")

    def __init__(self) -> None:
        self._queues: dict[float, deque[WorkItem]] = {}
        #: The queue of the first timeout seen (one call mostly has one), and that timeout.
        self.queue: deque[WorkItem] = deque()
        self.timeout: float | None = None
        self._late: list[tuple[float, int, WorkItem]] = []
        self._sequence = itertools.count()
        #: How long a queue grows before it is swept of marked work items.
        self._sweep_at = 64

    def __bool__(self) -> bool:
        """Something may still be due (marked work items not yet swept out included)."""
        return bool(self._late) or any(self._queues.values())

    def add(self, item: WorkItem, timeout: float) -> None:
        """Queue ``item``, whose ``deadline`` is set, under ``timeout``."""
        queue = self._queues.get(timeout)
        if queue is None:
            queue = self._queues[timeout] = deque()
            if self.timeout is None:
                self.timeout, self.queue = timeout, queue
        queue.append(item)

    def finished(self, item: WorkItem, timeout: float) -> None:
        """``item``'s attempt ended before its deadline (its ``deadline`` is now None)."""
        queue = self._queues.get(timeout)
        if not queue:
            return  # moved to the late heap, where it is skipped
        if queue[0] is item:
            queue.popleft()
        elif len(queue) <= _SHORT:
            with contextlib.suppress(ValueError):  # not there: moved to the late heap
                queue.remove(item)
        elif len(queue) > self._sweep_at:
            self._sweep()

    def move(self, item: WorkItem, due: float) -> None:
        """Give ``item``, just taken out by :meth:`expired`, a later deadline (its attempt
        started later than it was submitted)."""
        item.deadline = due
        heapq.heappush(self._late, (due, next(self._sequence), item))

    def _sweep(self) -> None:
        """Take every marked work item out of the queues."""
        longest = 0
        for queue in self._queues.values():
            kept = [entry for entry in queue if entry.deadline is not None]
            queue.clear()
            queue.extend(kept)
            longest = max(longest, len(kept))
        self._sweep_at = 64 + 2 * longest

    def next_due(self, now: float) -> float | None:
        """The earliest deadline; ``now`` when a marked work item heads a queue (the next
        look at what expired takes it out)."""
        earliest = self._late[0][0] if self._late else None
        for queue in self._queues.values():
            if queue:
                due = queue[0].deadline
                if due is None:
                    return now
                if earliest is None or due < earliest:
                    earliest = due
        return earliest

    def expired(self, now: float) -> Iterator[WorkItem]:
        """Take out every work item whose deadline is ``now`` or earlier (and the marked
        ones at the heads), yielding the former."""
        for queue in self._queues.values():
            while queue:
                due = queue[0].deadline
                if due is not None and due > now:
                    break
                item = queue.popleft()
                if due is not None:
                    item.deadline = None
                    yield item
        late = self._late
        while late and late[0][0] <= now:
            when, _, item = heapq.heappop(late)
            if item.deadline == when:
                item.deadline = None
                yield item

    def pending(self) -> list[float]:
        """The deadlines of the attempts that have not ended (for tests)."""
        items = {id(item): item for queue in self._queues.values() for item in queue}
        items.update((id(item), item) for _, _, item in self._late)
        return sorted(item.deadline for item in items.values() if item.deadline is not None)
