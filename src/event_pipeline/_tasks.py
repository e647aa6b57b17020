"""What the coordinator schedules: tasks, runs of fresh tasks, ready queues and work items.

A :class:`Task` is one set of arguments for one event over all its attempts. Most tasks
never need one: an event-run unit reads its inputs a window at a time and queues them as
one :class:`Fresh` run, and a batch taken from a run travels as a slice of it. When every
attempt of that batch returns ``(bool, value)`` its results are built straight from the
slice; only a batch that meets anything else (an exception, a broken pool, a cancel, a
deadline) becomes :class:`Task` objects, which every other path works with.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future
from typing import TYPE_CHECKING, Any, Protocol

from ._results import IdParts, join_id

if TYPE_CHECKING:
    from ._coordinator import Lane
    from ._plan import Plan
    from ._results import EventResult

__all__ = ["NO_KWARGS", "BulkOwner", "Fresh", "Owner", "Ready", "Task", "WorkItem", "as_call"]

Call = tuple[tuple[Any, ...], dict[str, Any]]


class Owner(Protocol):
    """What the coordinator needs of whoever gives it tasks (an event-run unit)."""

    @property
    def task_prefix(self) -> IdParts:
        """What a task's number is joined to, to make its id (see ``join_id``)."""

    def admit(self) -> bool:
        """Add tasks while there is room; False once no more will ever come."""

    def on_result(self, task: Task, result: EventResult) -> None:
        """Take the final result of ``task``."""


class BulkOwner(Owner, Protocol):
    """An owner that queues :class:`Fresh` runs, and so takes results in bulk."""

    def on_results(self, first: int, results: list[EventResult]) -> None:
        """Take the final results of the tasks numbered ``first``, ``first + 1``, ...;
        each returned ``(bool, value)`` at its first attempt."""

    def on_plain(self, first: int, outcomes: list[tuple[bool, Any]], duration: float) -> None:
        """The same, as each task's ``(ok, content)`` and the duration they share: the
        owner makes results only if it keeps them."""


class Task:
    """One set of arguments for one event, over all its attempts."""

    __slots__ = (
        "attempts",
        "call",
        "dropped",
        "index",
        "isolate",
        "owner",
        "payload",
        "plan",
        "started",
    )

    def __init__(
        self,
        plan: Plan,
        owner: Owner,
        index: int,
        call: Call,
        started: float | None = None,
    ) -> None:
        self.plan = plan
        self.owner = owner
        self.index = index
        #: ``(args, kwargs)``: sent to the worker as it is.
        self.call = call
        self.attempts = 0
        #: When it was first submitted: its result's duration counts from then.
        self.started = started
        #: Its ``call`` pickled alone, once a batch of it could not travel as one.
        self.payload: bytes | None = None
        #: Run alone: it was in a pool that broke.
        self.isolate = False
        #: Its owner stopped: whatever comes back for it is ignored.
        self.dropped = False

    @property
    def task_id(self) -> str:
        return join_id(self.owner.task_prefix, self.index)


#: The keyword arguments of a call that has none (never written to).
NO_KWARGS: dict[str, Any] = {}


def as_call(value: Any) -> Call:
    """The ``(args, kwargs)`` of a task whose one argument is ``value`` (a single call)."""
    return (value,), NO_KWARGS


class Fresh:
    """Consecutive new tasks of one owner, numbered from ``first``, none submitted yet
    when queued; ``taken`` of them have been since.

    ``calls`` are ``(args, kwargs)`` pairs, or with ``single`` each task's one positional
    argument (a map over one iterable, a value piped to the next step): no tuples are made
    per task for those, here or in a thread pool's worker.
    """

    __slots__ = ("calls", "first", "owner", "plan", "single", "taken")

    def __init__(
        self, plan: Plan, owner: BulkOwner, first: int, calls: list[Any], single: bool = False
    ) -> None:
        self.plan = plan
        self.owner = owner
        self.first = first
        self.calls = calls
        self.single = single
        self.taken = 0


class Ready:
    """The tasks of one plan waiting on a lane for a worker, first in, first out: tasks
    one at a time and :class:`Fresh` runs. Its length counts tasks, not entries."""

    __slots__ = ("count", "entries")

    def __init__(self) -> None:
        self.entries: deque[Task | Fresh] = deque()
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Task | Fresh]:
        return iter(self.entries)

    def append(self, task: Task) -> None:
        self.entries.append(task)
        self.count += 1

    def append_fresh(self, fresh: Fresh) -> None:
        self.entries.append(fresh)
        self.count += len(fresh.calls)

    def push_front(self, tasks: list[Task]) -> None:
        """Put ``tasks`` back at the head, in their order (a retry, or a batch not sent)."""
        self.entries.extendleft(reversed(tasks))
        self.count += len(tasks)

    def take(self, size: int) -> list[Task] | tuple[Fresh, int, int]:
        """Up to ``size`` tasks from the head: Task objects, or a slice ``(run, start,
        end)`` of a fresh run. A batch is one or the other, never both."""
        entries = self.entries
        head = entries[0]
        if type(head) is Fresh:
            start = head.taken
            end = min(start + size, len(head.calls))
            head.taken = end
            if end == len(head.calls):
                entries.popleft()
            self.count -= end - start
            return head, start, end
        tasks: list[Task] = []
        while entries and len(tasks) < size and type(entries[0]) is Task:
            tasks.append(entries.popleft())  # type: ignore[arg-type]
        self.count -= len(tasks)
        return tasks

    def drop(self, owner: Owner | None) -> list[Task]:
        """Remove what belongs to ``owner`` (to anyone when None); return the Task objects
        removed (fresh runs are simply forgotten)."""
        removed: list[Task] = []
        kept: deque[Task | Fresh] = deque()
        count = 0
        for entry in self.entries:
            if owner is not None and entry.owner is not owner:
                kept.append(entry)
                count += 1 if type(entry) is Task else len(entry.calls) - entry.taken  # type: ignore[union-attr]
            elif type(entry) is Task:
                removed.append(entry)
        self.entries = kept
        self.count = count
        return removed


class WorkItem:
    """One submitted future: what it carries, where it went, whether it runs alone.

    It carries Task objects, or a slice of a fresh run (``owner``, ``first`` and ``calls``)
    whose Task objects :attr:`tasks` makes only when asked.
    """

    __slots__ = (
        "_tasks",
        "began",
        "calls",
        "count",
        "deadline",
        "executor",
        "first",
        "future",
        "isolated",
        "lane",
        "owner",
        "plan",
        "single",
        "submitted",
    )

    def __init__(
        self,
        lane: Lane,
        executor: Executor,
        plan: Plan,
        submitted: float,
        *,
        tasks: list[Task] | None = None,
        isolated: bool = False,
        owner: BulkOwner | None = None,
        first: int = 0,
        calls: list[Any] | None = None,
        single: bool = False,
    ) -> None:
        self.lane = lane
        self.executor = executor
        self.plan = plan
        #: When it was submitted: the start of its fresh tasks' durations.
        self.submitted = submitted
        self.isolated = isolated
        self._tasks = tasks
        self.owner = owner
        self.first = first
        self.calls = calls
        #: ``calls`` are single arguments (see :class:`Fresh`).
        self.single = single
        self.count = len(tasks) if tasks is not None else len(calls or ())
        #: When a timed batch on a thread pool or the loop began (noted by the worker).
        self.began: float | None = None
        #: The future it was submitted as.
        self.future: Future[Any] | None = None
        #: When its attempt must end (None without a timeout, or once it ended; see
        #: ``_deadlines``).
        self.deadline: float | None = None

    @property
    def fresh(self) -> bool:
        """It is still a slice of a fresh run: no Task object was made for it."""
        return self._tasks is None

    @property
    def tasks(self) -> list[Task]:
        tasks = self._tasks
        if tasks is None:
            owner, plan, submitted = self.owner, self.plan, self.submitted
            assert owner is not None and self.calls is not None
            calls = map(as_call, self.calls) if self.single else self.calls
            tasks = self._tasks = [
                Task(plan, owner, index, call, submitted)
                for index, call in enumerate(calls, self.first)
            ]
        return tasks
