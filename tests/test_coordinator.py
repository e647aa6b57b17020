"""The coordinator driven by hand: an executor whose futures the test completes, a clock the
test moves, and event-run units as owners.

Nothing runs in a worker and nothing sleeps: each test submits through
:meth:`Coordinator.step`, completes the futures it chooses with the outcomes it chooses, and
asserts what the coordinator submitted, scheduled and delivered.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, NamedTuple

import pytest

from event_pipeline import DefaultExecutor, EventBase, EventResult, EventRun, RetryPolicy
from event_pipeline._coordinator import Coordinator, Lane, Task
from event_pipeline._event import settings_of
from event_pipeline._executors import ExecutorCache
from event_pipeline._plan import Plan
from event_pipeline._tasks import Fresh
from event_pipeline._units import EventRunUnit
from event_pipeline._worker import FATAL, OK, RETRY
from hand_clock import HandClock

#: Seconds a hand-completed batch claims it took: long enough that batching stays at one
#: task per work item unless a test says otherwise.
SLOW = 1.0


class Echo(EventBase):
    """Returns its input (never run here: the test decides every outcome)."""

    def process(self, x: int) -> tuple[bool, Any]:
        return True, x


class Flaky(Echo):
    """Retries anything: first retry after 5 s, then 10 s."""

    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=5.0, max_backoff=60.0)


class Submission(NamedTuple):
    future: Future[Any]
    event: type[EventBase]
    items: list[tuple[tuple[Any, ...], dict[str, Any]]]

    @property
    def inputs(self) -> list[Any]:
        return [args[0] for args, _ in self.items]

    def complete(self, *outcomes: tuple[int, Any], elapsed: float = SLOW) -> None:
        """Finish the work item with one outcome per task, as a worker would."""
        assert len(outcomes) == len(self.items)
        self.future.set_result((elapsed, list(outcomes), False))

    def succeed(self, elapsed: float = SLOW) -> None:
        self.complete(*[(OK, (True, x)) for x in self.inputs], elapsed=elapsed)


class HandExecutor(Executor):
    """Records each submission and returns a plain future that the test completes."""

    def __init__(self, workers: int) -> None:
        self._max_workers = workers
        self.submissions: list[Submission] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        event, items = args[0], args[1]
        self.submissions.append(Submission(future, event, list(items)))
        return future

    def pending(self) -> list[Submission]:
        return [s for s in self.submissions if not s.future.done()]


class RecordingUnit(EventRunUnit):
    """An event-run unit that also records the order its results arrive in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[int] = []

    def on_result(self, task: Task, result: EventResult) -> None:
        self.arrivals.append(task.index)
        super().on_result(task, result)

    def on_results(self, first: int, results: list[EventResult]) -> None:
        self.arrivals.extend(range(first, first + len(results)))
        super().on_results(first, results)


class Rig:
    """One coordinator on a hand executor and a hand clock, with units attached on demand."""

    def __init__(self, workers: int = 2) -> None:
        self.executor = HandExecutor(workers)
        self.clock = HandClock()
        self.cache = ExecutorCache()
        self.coordinator = Coordinator(self.cache, self.clock)
        self.plans: dict[type[EventBase], Plan] = {}

    def plan(self, event: type[EventBase], window: int) -> Plan:
        if event not in self.plans:
            self.plans[event] = Plan(event, settings_of(event), self.executor, None, window)
        return self.plans[event]

    def unit(
        self, event: type[EventBase], inputs: list[int], *, window: int, prefix: str = "u:"
    ) -> RecordingUnit:
        unit = RecordingUnit(
            self.coordinator,
            self.plan(event, window),
            iter([((x,), {}) for x in inputs]),
            streaming=False,
            window=window,
            task_prefix=prefix,
        )
        self.coordinator.attach(unit)
        return unit

    def step(self, window: int = 64) -> None:
        self.coordinator.step(window)

    @property
    def in_flight(self) -> int:
        return len(self.coordinator.in_flight)

    def submitted_inputs(self) -> list[list[Any]]:
        return [s.inputs for s in self.executor.submissions]


def contents(run: EventRun | None) -> list[Any]:
    assert run is not None, "the unit has not completed"
    return [r.content for r in run.results]


def test_budget_is_two_work_items_per_worker() -> None:
    """With 2 workers, 4 work items are in flight and no more; each completion lets one more in."""
    rig = Rig(workers=2)
    unit = rig.unit(Echo, list(range(20)), window=20)

    rig.step()
    rig.step()
    assert rig.submitted_inputs() == [[0], [1], [2], [3]]
    assert rig.in_flight == 4

    rig.executor.submissions[1].succeed()
    rig.step()  # takes in the completion
    rig.step()  # submits into the freed slot
    assert len(rig.executor.submissions) == 5
    assert rig.in_flight == 4

    for _ in range(50):
        for submission in rig.executor.pending():
            submission.succeed()
        rig.step()
        assert rig.in_flight <= 4
        if unit.run is not None:
            break
    assert contents(unit.run) == list(range(20))
    assert unit.run is not None and unit.run.success


def test_retry_is_scheduled_at_now_plus_backoff_and_released_when_due() -> None:
    """A retry is due exactly now + backoff, waits without holding a slot, and is resubmitted
    only once the clock reaches its due time."""
    rig = Rig(workers=1)  # a budget of 2 work items
    unit = rig.unit(Flaky, [0, 1, 2], window=3)
    rig.step()
    first, second = rig.executor.submissions
    assert rig.submitted_inputs() == [[0], [1]]

    first.complete((RETRY, ConnectionError("down")))
    rig.step()
    [(due, _, task)] = rig.coordinator.retries
    assert due == 105.0 and task.index == 0 and task.attempts == 1

    # The retrying task holds no slot: the third input takes it.
    rig.step()
    assert rig.submitted_inputs() == [[0], [1], [2]]
    rig.executor.submissions[2].succeed()
    rig.step()

    rig.clock.now = 104.999
    rig.step()
    assert len(rig.executor.submissions) == 3, "released before it was due"
    assert rig.clock.waits[-1] == pytest.approx(0.001), "the wait overshoots the due time"

    rig.clock.now = 105.0
    rig.step()
    assert rig.submitted_inputs() == [[0], [1], [2], [0]]
    assert not rig.coordinator.retries

    rig.executor.submissions[3].succeed()
    second.succeed()
    rig.step()
    assert contents(unit.run) == [0, 1, 2]
    assert [r.attempts for r in unit.run.results] == [2, 1, 1]  # type: ignore[union-attr]
    assert unit.run.results[0].duration == pytest.approx(5.0)  # type: ignore[union-attr]


def test_idle_coordinator_sleeps_exactly_until_the_retry_is_due() -> None:
    """With nothing in flight, the loop sleeps the backoff in one clock.sleep, no more."""
    rig = Rig(workers=1)
    unit = rig.unit(Flaky, [7], window=1)
    rig.step()
    rig.executor.submissions[0].complete((RETRY, ConnectionError("down")))
    rig.step()
    assert rig.coordinator.retries[0][0] == 105.0

    rig.step()  # nothing in flight: sleeps until due
    assert rig.clock.sleeps == [5.0]
    rig.step()
    assert rig.submitted_inputs() == [[7], [7]]
    rig.executor.submissions[1].complete((RETRY, ConnectionError("still down")))
    rig.step()
    assert rig.coordinator.retries[0][0] == 105.0 + 10.0  # the second backoff doubles
    rig.step()
    rig.step()
    rig.executor.submissions[2].succeed()
    rig.step()
    rig.step()  # the window of 1 was full: only now does the unit find its input exhausted
    assert rig.clock.sleeps == [5.0, 10.0]
    [result] = unit.run.results  # type: ignore[union-attr]
    assert result.success and result.attempts == 3


def test_results_arrive_in_completion_order_and_are_kept_in_input_order() -> None:
    """Owners hear results in the order work items finished, from the loop (not from the
    done-callback), while the run lists them in input order."""
    rig = Rig(workers=2)
    unit = rig.unit(Echo, [0, 1, 2, 3], window=4)
    rig.step()
    subs = rig.executor.submissions
    assert rig.submitted_inputs() == [[0], [1], [2], [3]]

    subs[3].succeed()
    subs[1].succeed()
    assert unit.arrivals == [], "a result was delivered inside the future's callback"
    rig.step()
    assert unit.arrivals == [3, 1]

    subs[0].complete((FATAL, ValueError("bad input")))
    subs[2].succeed()
    rig.step()
    assert unit.arrivals == [3, 1, 0, 2]
    run = unit.run
    assert run is not None
    assert [r.task_id for r in run.results] == ["u:0", "u:1", "u:2", "u:3"]
    assert isinstance(run.results[0].exception, ValueError)
    assert [r.content for r in run.results[1:]] == [1, 2, 3]


def test_cancel_drops_one_owners_work_only() -> None:
    """cancel(owner) drops that owner's ready and retrying tasks and cancels its unstarted
    futures; another owner on the same executor keeps its work and completes."""
    rig = Rig(workers=2)  # a budget of 4 work items, shared by both units
    other = rig.unit(Echo, [10, 11], window=2, prefix="b:")
    doomed = rig.unit(Flaky, [0, 1, 2, 3], window=4, prefix="a:")
    rig.step()
    assert rig.submitted_inputs() == [[10], [11], [0], [1]]
    b10, b11, a0, a1 = rig.executor.submissions

    a0.complete((RETRY, ConnectionError("down")))
    rig.step()
    lane = next(iter(rig.coordinator.lanes.values()))
    assert _waiting(lane) == [2, 3]
    assert len(rig.coordinator.retries) == 1

    rig.coordinator.cancel(doomed)

    assert a1.future.cancelled()
    assert not b10.future.cancelled() and not b11.future.cancelled()
    assert not lane.ready
    rig.clock.now += 60.0  # well past the retry's due time
    b10.succeed()
    b11.succeed()
    for _ in range(3):
        rig.step()
    assert len(rig.executor.submissions) == 4, "work of the cancelled owner was submitted"
    assert contents(other.run) == [10, 11]
    assert doomed.arrivals == [] and doomed.run is None
    assert rig.in_flight == 0 and not rig.coordinator.retries


def test_broken_user_executor_charges_every_task_it_held() -> None:
    """A BrokenProcessPool from an executor the runner does not own (key None) is not
    isolated: each task of each failed work item is charged one failed attempt."""
    rig = Rig(workers=2)
    plan = rig.plan(Echo, window=16)
    plan.per_task = 1e-6  # fast tasks: work items carry several tasks
    unit = rig.unit(Echo, list(range(16)), window=16)
    for _ in range(20):
        rig.step()
        for submission in rig.executor.pending():
            submission.future.set_exception(BrokenProcessPool("a worker died"))
        if unit.run is not None:
            break

    run = unit.run
    assert run is not None and not run.success
    assert max(len(s.items) for s in rig.executor.submissions) > 1
    assert sorted(x for s in rig.executor.submissions for x in s.inputs) == list(range(16))
    for result in run.results:
        assert isinstance(result.exception, BrokenProcessPool), result
        assert result.attempts == 1
        message = str(result.exception)
        assert "Echo" in message and result.task_id in message
    lane = next(iter(rig.coordinator.lanes.values()))
    assert lane.isolation is None and not lane.suspects


class ChainOwner:
    """Adds one task to start with, and the next task from each result, up to ``length``."""

    task_prefix = "chain:"

    def __init__(self, coordinator: Coordinator, plan: Plan, length: int) -> None:
        self.coordinator = coordinator
        self.plan = plan
        self.length = length
        self.started = False
        self.results: list[EventResult] = []
        self.depths: list[int] = []

    def admit(self) -> bool:
        if not self.started:
            self.started = True
            self.coordinator.add(Task(self.plan, self, 0, ((0,), {})), 1)
        return False

    def on_result(self, task: Task, result: EventResult) -> None:
        self.results.append(result)
        self.depths.append(_depth())
        if task.index + 1 < self.length:
            self.coordinator.add(Task(self.plan, self, task.index + 1, ((task.index + 1,), {})), 1)


def _waiting(lane: Lane) -> list[int]:
    """The indices of the tasks ready on ``lane``, in order."""
    indices: list[int] = []
    for queue in lane.ready.values():
        for entry in queue:
            if isinstance(entry, Fresh):
                indices.extend(range(entry.first + entry.taken, entry.first + len(entry.calls)))
            else:
                indices.append(entry.index)
    return indices


def _depth() -> int:
    frame, depth = sys._getframe(), 0
    while frame is not None:
        frame, depth = frame.f_back, depth + 1  # type: ignore[assignment]
    return depth


@pytest.fixture
def low_recursion_limit() -> Iterator[int]:
    """A recursion limit a little above the current depth, restored after the test."""
    previous = sys.getrecursionlimit()
    limit = _depth() + 120
    sys.setrecursionlimit(limit)
    try:
        yield limit
    finally:
        sys.setrecursionlimit(previous)


def test_a_long_chain_of_results_adding_work_does_not_recurse(low_recursion_limit: int) -> None:
    """5,000 tasks, each added from the previous one's result, complete at a constant stack
    depth, under a recursion limit far below the chain's length."""
    executor = DefaultExecutor()  # each work item is done when submitted
    coordinator = Coordinator(ExecutorCache(), HandClock())
    plan = Plan(Echo, settings_of(Echo), executor, None, 1)
    owner = ChainOwner(coordinator, plan, 5_000)
    coordinator.attach(owner)

    for _ in range(10):
        coordinator.step(1)
        if len(owner.results) == owner.length:
            break

    assert [r.content for r in owner.results] == list(range(5_000))
    assert all(r.success and r.attempts == 1 for r in owner.results)
    assert max(owner.depths) - min(owner.depths) <= 2
    assert max(owner.depths) < low_recursion_limit


class HandProcessPool(HandExecutor):
    """A hand executor whose work travels pickled, as a process pool's does."""

    _event_pipeline_pickles = True

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        event, blob = args[0], args[1]
        self.submissions.append(Submission(future, event, pickle.loads(blob)))
        return future


def test_process_batches_shrink_as_the_waiting_work_runs_out() -> None:
    """On a process pool, batches of 1 ms tasks are 100 ms long (100 tasks) while much
    waits, then a share of what waits per work-item slot, down to 10 ms (10 tasks): every
    task is sent once, and no batch sent last is longer than the tail allows."""
    rig = Rig(workers=2)
    rig.executor = HandProcessPool(2)
    plan = rig.plan(Echo, 1000)
    assert plan.remote
    plan.per_task = 0.001
    unit = rig.unit(Echo, list(range(1000)), window=1000)
    for _ in range(400):
        rig.step(1000)
        pending = rig.executor.pending()
        if not pending:
            break
        submission = pending[0]
        blob = pickle.dumps([(True, x) for x in submission.inputs])
        submission.future.set_result((0.001 * len(submission.items), blob, True))
    sizes = [len(s.items) for s in rig.executor.submissions]
    assert contents(unit.run) == list(range(1000))
    assert sum(sizes) == 1000
    assert sizes[0] == 100 and max(sizes) == 100
    assert sizes == sorted(sizes, reverse=True), sizes
    assert min(sizes[:-1]) == 10 and sizes[-1] <= 10, sizes  # the last takes what is left
    assert any(10 < size < 100 for size in sizes), "no batch shrank on the way down"
