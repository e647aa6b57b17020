"""Per-attempt timeouts (SPEC §14.2).

Two halves:

- The coordinator driven by hand (as in test_coordinator.py): an executor whose futures the
  test completes, exposing ``cancel_running`` as AsyncExecutor does, and a clock the test
  moves. Deadlines are checked exactly: nothing happens a hair before start + timeout, the
  attempt ends at it, and a task waiting for its retry has no deadline.
- A few real runs, one per executor kind, with generous margins: the loop cancels the
  coroutine, a process pool loses (only) the hung worker's attempt and leaves no process, a
  thread pool returns at the deadline and still joins the abandoned thread at shutdown.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import async_run_events as ev
from event_pipeline import (
    EventBase,
    ExecutorInitializerConfig,
    Flow,
    ImproperlyConfigured,
    RetryPolicy,
    Runner,
    StepStatus,
)
from event_pipeline._async import RunCancelled
from event_pipeline._coordinator import Coordinator
from event_pipeline._event import settings_of
from event_pipeline._executors import ExecutorCache
from event_pipeline._plan import Plan
from event_pipeline._units import EventRunUnit
from event_pipeline._worker import OK
from event_pipeline.flow import parallel, pipe, step
from hand_clock import HandClock
from leaks import leftovers


@pytest.fixture
def key(request: pytest.FixtureRequest) -> Iterator[str]:
    name = request.node.name
    ev.forget(name)
    yield name
    ev.forget(name)


# -- the coordinator with an injected clock --------------------------------------------------


class Timed(EventBase):
    """Two attempts, the second 5 s after the first; each attempt allowed 2 s."""

    timeout = 2.0
    retry_policy = RetryPolicy(max_attempts=2, backoff_factor=5.0)

    async def process(self, x: int) -> tuple[bool, int]:  # never run: the test decides
        return True, x


class LoopLike(Executor):
    """Hands out plain futures the test completes; records ``cancel_running`` calls."""

    def __init__(self, workers: int = 1) -> None:
        self._max_workers = workers
        self.futures: list[Future[Any]] = []
        self.inputs: list[list[Any]] = []
        self.cancelled: list[Future[Any]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        self.futures.append(future)
        self.inputs.append([a[0] for a, _ in args[1]])
        return future

    def cancel_running(self, future: Future[Any]) -> bool:
        self.cancelled.append(future)
        return True


class Rig:
    def __init__(self, event: type[EventBase] = Timed, workers: int = 1) -> None:
        self.executor = LoopLike(workers)
        self.clock = HandClock()
        self.coordinator = Coordinator(ExecutorCache(), self.clock)
        self.plan = Plan(event, settings_of(event), self.executor, None, 8)

    def unit(self, inputs: list[int]) -> EventRunUnit:
        unit = EventRunUnit(
            self.coordinator,
            self.plan,
            iter([((x,), {}) for x in inputs]),
            streaming=False,
            window=8,
            task_prefix="u:",
        )
        self.coordinator.attach(unit)
        return unit

    def step(self) -> None:
        self.coordinator.step(8)

    def deadlines(self) -> list[float]:
        return self.coordinator.deadlines.pending()


def test_deadline_is_start_plus_timeout_and_caps_the_wait() -> None:
    rig = Rig()
    unit = rig.unit([7])
    rig.step()
    [future] = rig.executor.futures
    assert rig.deadlines() == [102.0]
    # Far from the deadline the wait is the usual slice; near it, the wait ends at it.
    rig.clock.now = 101.97
    rig.step()
    assert rig.clock.waits[-1] == pytest.approx(0.03)
    assert rig.executor.cancelled == []
    # A hair before the deadline nothing happens.
    rig.clock.now = 102.0 - 1e-9
    rig.step()
    assert rig.clock.waits[-1] == pytest.approx(1e-9, abs=1e-8)
    assert rig.executor.cancelled == [] and rig.coordinator.retries == []
    assert future in rig.coordinator.in_flight and unit.run is None
    # At the deadline the coroutine is cancelled and the task scheduled for its retry.
    rig.clock.now = 102.0
    rig.step()
    assert rig.executor.cancelled == [future]
    [(due, _, task)] = rig.coordinator.retries
    assert due == 107.0 and task.attempts == 1 and task.index == 0
    assert not rig.coordinator.deadlines  # waiting for a retry: no deadline


def test_timed_out_attempt_is_retried_then_fails_with_timeout_error() -> None:
    rig = Rig()
    unit = rig.unit([7])
    rig.step()
    first = rig.executor.futures[0]
    rig.clock.now = 102.0
    rig.step()
    assert rig.executor.cancelled == [first]
    # The cancelled coroutine ends (as AsyncExecutor reports it): nothing more is charged.
    first.set_exception(RunCancelled("the running coroutine was cancelled"))
    rig.step()
    assert unit.run is None and len(rig.coordinator.retries) == 1
    assert not rig.coordinator.deadlines
    # The retry waits in the heap (the coordinator sleeps, nothing is in flight) ...
    rig.step()
    assert rig.clock.sleeps == [5.0] and rig.clock.now == 107.0
    # ... and its attempt has a deadline of its own, from its own start.
    rig.step()
    assert len(rig.executor.futures) == 2 and rig.executor.inputs[1] == [7]
    assert rig.deadlines() == [109.0]
    rig.clock.now = 109.0
    rig.step()
    rig.step()
    assert unit.run is not None
    [result] = unit.run.results
    assert isinstance(result.exception, TimeoutError)
    assert result.attempts == 2 and result.task_id == "u:0"
    message = str(result.exception)
    assert "Timed" in message and "u:0" in message and "2 s" in message
    assert rig.executor.cancelled == rig.executor.futures
    # A late outcome of the abandoned attempt is ignored.
    rig.executor.futures[1].set_result((0.1, [(OK, (True, 7))], False))
    rig.step()
    assert unit.run.results == [result]


def test_attempt_finishing_before_its_deadline_is_not_touched() -> None:
    rig = Rig()
    unit = rig.unit([3])
    rig.step()
    [future] = rig.executor.futures
    rig.clock.now = 101.999
    future.set_result((1.999, [(OK, (True, 3))], False))
    rig.step()
    assert unit.run is not None and unit.run.success
    rig.clock.now = 150.0
    rig.coordinator._expire(rig.clock.now)
    assert rig.executor.cancelled == []


def test_timed_tasks_go_one_per_work_item_each_with_its_own_deadline() -> None:
    """Timed tasks go one per work item (up to the usual two per worker on an executor
    whose futures say when they start), each with a deadline from its own start."""
    rig = Rig(workers=2)
    rig.unit(list(range(5)))
    rig.step()
    rig.step()
    assert rig.executor.inputs == [[0], [1], [2], [3]]
    assert rig.deadlines() == [102.0] * 4
    rig.clock.now = 101.0
    rig.executor.futures[0].set_result((1.0, [(OK, (True, 0))], False))
    rig.step()
    rig.step()
    assert rig.executor.inputs == [[0], [1], [2], [3], [4]]
    assert rig.deadlines()[-1] == 103.0  # counted from its own start


# -- AsyncExecutor ---------------------------------------------------------------------------


def test_coroutine_is_cancelled_at_its_deadline(key: str) -> None:
    with Runner() as runner:
        started = time.monotonic()
        run = runner.run(ev.SleepsOnLoop, key, 5.0)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0
    [result] = run.results
    assert not run.success and isinstance(result.exception, TimeoutError)
    assert result.attempts == 1
    message = str(result.exception)
    assert "SleepsOnLoop" in message and result.task_id in message and "0.2" in message
    whats = [what for what, _, _ in ev.TRACE[key]]
    assert whats == ["start", "cancelled"]  # the coroutine saw CancelledError
    start, cancelled = (t for _, _, t in ev.TRACE[key])
    assert cancelled - start >= 0.19


def test_quick_attempts_of_a_timed_event_succeed(key: str) -> None:
    with Runner() as runner:
        run = runner.map(ev.SleepsOnLoop, [key] * 20, [0.01] * 20)
    assert run.success and [r.attempts for r in run.results] == [1] * 20


def test_timeout_error_is_retried_by_an_empty_retry_on(key: str) -> None:
    with Runner() as runner:
        run = runner.run(ev.SleepsOnLoopRetried, key, 5.0)
    [result] = run.results
    assert isinstance(result.exception, TimeoutError) and result.attempts == 3
    assert ev.ATTEMPTS[key, "attempt"] == 3
    assert [w for w, _, _ in ev.TRACE[key]] == ["start", "cancelled"] * 3


def test_timeout_error_not_in_retry_on_ends_the_task(key: str) -> None:
    with Runner() as runner:
        run = runner.run(ev.SleepsOnLoopNotRetried, key, 5.0)
    [result] = run.results
    assert isinstance(result.exception, TimeoutError) and result.attempts == 1


def test_decorated_async_event_with_a_timeout() -> None:
    with Runner() as runner:
        run = runner.map(ev.sleeps_decorated, [0.01, 5.0])
    ok, late = run.results
    assert ok.success and ok.content == 0.01
    assert isinstance(late.exception, TimeoutError) and "sleeps_decorated" in str(late.exception)


def test_deadline_counts_from_the_start_on_a_shared_loop() -> None:
    class OneSlot(EventBase):
        executor_config = ExecutorInitializerConfig(max_workers=1)
        timeout = 0.5

        async def process(self, i: int) -> tuple[bool, int]:
            import asyncio

            await asyncio.sleep(0.3)
            return True, i

    runs: dict[int, Any] = {}
    with Runner() as runner:
        runner.run(OneSlot, -1)  # the executor exists before the threads race for it
        threads = [
            threading.Thread(target=lambda i=i: runs.__setitem__(i, runner.run(OneSlot, i)))
            for i in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert all(run.success for run in runs.values()), runs


# -- process pool ----------------------------------------------------------------------------


def _pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether process ``pid`` has ended (a zombie counts as ended)."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            return True
        except OSError:  # pragma: no cover - no /proc
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
        else:
            if "\nState:\tZ" in status:
                return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_hung_process_attempt_is_killed_and_innocents_rerun_uncharged(tmp_path: Path) -> None:
    """A hung attempt (60 s, timeout 1.5 s) and an innocent 2 s attempt of another event run
    side by side in one two-worker pool. At the deadline the pool's workers are killed; the
    hung task ends with TimeoutError, the innocent re-runs uncharged on a fresh pool; the
    next run uses the replacement pool; after shutdown no process is left."""
    import multiprocessing

    directory = str(tmp_path)
    threads_before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    runner = Runner()
    try:
        started = time.monotonic()
        run = runner.run(
            parallel(ev.SleepsInProcess, ev.BesideInProcess),
            directory=directory, tag="hung", seconds=60.0, innocent_seconds=2.0,
        )
        elapsed = time.monotonic() - started
        [hung] = run["SleepsInProcess"].run.results
        assert isinstance(hung.exception, TimeoutError), hung
        assert hung.attempts == 1
        message = str(hung.exception)
        assert "SleepsInProcess" in message and hung.task_id in message and "1.5" in message
        [innocent] = run["BesideInProcess"].run.results
        assert innocent.success and innocent.content == "innocent", innocent
        assert innocent.attempts == 1  # re-run after the pool broke, not charged
        assert len(_pids(tmp_path / "innocent")) == 2  # it did run twice
        [hung_pid] = _pids(tmp_path / "hung")
        assert _gone(hung_pid), "the hung worker is still alive"
        assert elapsed < 20.0  # nowhere near the 60 s sleep
        # The pool was replaced: the next run works, in a fresh worker.
        again = runner.run(ev.SleepsInProcess, directory, "after", 0.0)
        assert again.success, again.results
        assert _pids(tmp_path / "after")[0] != hung_pid
    finally:
        runner.shutdown()
    assert leftovers(threads_before, children_before) == ([], [])


# -- thread pool -----------------------------------------------------------------------------


def test_thread_attempt_is_abandoned_at_the_deadline_and_joined_at_shutdown(key: str) -> None:
    threads_before = set(threading.enumerate())
    runner = Runner()
    try:
        started = time.monotonic()
        run = runner.run(ev.SleepsInThread, key, 1.5)
        returned = time.monotonic()
        [result] = run.results
        assert isinstance(result.exception, TimeoutError) and result.attempts == 1
        assert "SleepsInThread" in str(result.exception) and "0.3" in str(result.exception)
        assert returned - started < 1.0  # at the deadline, well before the attempt ends
        assert [what for what, _, _ in ev.TRACE[key]] == ["start"]  # still sleeping
    finally:
        runner.shutdown()
    shut = time.monotonic()
    # shutdown() returned only after the abandoned attempt ended; its thread is gone.
    ended = [t for what, _, t in ev.TRACE[key] if what == "end"]
    assert len(ended) == 1 and ended[0] <= shut
    assert leftovers(threads_before) == ([], [])
    assert run.results == [result]  # what the attempt returned later was discarded


def test_timed_attempt_queued_behind_other_work_is_not_timed_out() -> None:
    one = ExecutorInitializerConfig(max_workers=1)

    class Untimed(EventBase):
        executor = ThreadPoolExecutor
        executor_config = one

        def process(self) -> tuple[bool, str]:
            time.sleep(0.6)
            return True, "untimed"

    class TimedThread(EventBase):
        executor = ThreadPoolExecutor
        executor_config = one
        timeout = 0.4

        def process(self) -> tuple[bool, str]:
            time.sleep(0.05)
            return True, "timed"

    with Runner() as runner:
        run = runner.run(parallel(Untimed, TimedThread))
    assert run.success, run.summary()


# -- flows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["python", "text"])
def test_step_timeout_override(form: str) -> None:
    if form == "python":
        flow = step(ev.Double).then(pipe(step(ev.SlowOnLoop, timeout=0.2)))
    else:
        flow = Flow.parse("Double |-> SlowOnLoop ~ 0.2", ev)
        assert flow == step(ev.Double).then(pipe(step(ev.SlowOnLoop, timeout=0.2)))
    started = time.monotonic()
    with Runner() as runner:
        run = runner.run(flow, 5)  # SlowOnLoop sleeps 10 s: 2 * 5
    assert time.monotonic() - started < 3.0
    slow = run["SlowOnLoop"]
    assert slow.status is StepStatus.FAILED and not run.success
    assert isinstance(slow.value, TimeoutError) and "0.2" in str(slow.value)
    assert ev.SlowOnLoop.timeout is None  # the event class is not modified


def test_step_timeout_overrides_the_events_own() -> None:
    flow = Flow.parse("sleeps_decorated ~ 5", ev)
    with Runner() as runner:
        run = runner.run(flow, 0.4)  # past the event's own 0.2 s, within the step's 5 s
    assert run.success, run.summary()
    assert run.output == 0.4


def test_step_timeout_on_an_inline_event_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match="Inline"), Runner() as runner:
        runner.run(step(ev.Inline, timeout=0.05), 0.2)
