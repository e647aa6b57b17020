"""Cases 5 and 8: an executor goes away while a ``map`` runs.

Case 5: ``Runner.shutdown()`` from another thread. The ``map`` returns every result or
raises ``RuntimeError("this Runner has been shut down")``; it never hangs.
Case 8: the user shuts down their own executor instance. The tasks it refuses become failed
results whose error names the event; nothing hangs, every input still gets its result.

Calls that might hang run in a :class:`~fault_helpers.Call` with a bounded wait, so that a
hang fails in seconds and shows where the call is stuck.
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import CancelledError, Executor, ProcessPoolExecutor, ThreadPoolExecutor
from itertools import repeat

import pytest
from fault_events import FAULT, KINDS, OnUserExecutor, calls_of, open_gate, register_executor
from fault_helpers import (
    Call,
    Leaks,
    check_results,
    check_success,
    join_new_threads,
    log_for,
    wait_started,
    wait_until,
)

from event_pipeline import DefaultExecutor, EventResult, Runner

pytestmark = pytest.mark.timeout(60)

TASKS = 200
#: How long a call may take once nothing holds it back any more.
PATIENCE = 10.0


def check_shut_down_outcome(call: Call, event: type, count: int) -> None:
    """The map either raised the runner's RuntimeError or returned every result in order."""
    try:
        run = call.result(PATIENCE)
    except RuntimeError as exc:
        assert "this Runner has been shut down" in str(exc)
    else:
        check_results(run.results, event, count)
        for i, result in enumerate(run.results):
            check_success(result, i)


@pytest.mark.parametrize("kind", KINDS)
def test_runner_shutdown_from_another_thread(
    kind: str, leaks: Leaks, log: str, mem_log: str
) -> None:
    """The map in this thread returns all its results or raises a clear RuntimeError."""
    log = log_for(kind, log, mem_log)
    event = FAULT[kind]
    runner = Runner()

    def shut_down() -> None:
        wait_started(log)
        runner.shutdown()

    closer = threading.Thread(target=shut_down)
    closer.start()
    try:
        run = runner.map(event, ["sleep"] * TASKS, range(TASKS), repeat(log))
    except RuntimeError as exc:
        assert "this Runner has been shut down" in str(exc)
    else:
        check_results(run.results, event, TASKS)
        for i, result in enumerate(run.results):
            check_success(result, i)
    finally:
        closer.join(30)
    assert not closer.is_alive(), "Runner.shutdown() hung"
    assert calls_of(log) < TASKS, "the map ran to the end: the shutdown came too late to test"
    # A runner that has been shut down says so, and stays shut.
    with pytest.raises(RuntimeError, match="shut down"):
        runner.map(event, ["ok"], [0])
    runner.shutdown()
    leaks.check()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_runner_shutdown_with_nothing_left_to_submit(
    kind: str, leaks: Leaks, log: str, mem_log: str
) -> None:
    """All tasks submitted, some still queued, the runner shut down: the map still ends.

    The queued tasks are cancelled by the shutdown and the running ones then finish; with
    no input left, nothing more is submitted that could notice the shutdown.
    """
    log = log_for(kind, log, mem_log)
    event = FAULT[kind]
    runner = Runner(window=4)
    call = Call(runner.map, event, ["block"] * 4, range(4), repeat(log))
    try:
        call.wait_until_waiting()
        # wait=False: the running tasks hold at the gate until the shutdown has cancelled
        # the queued ones.
        runner.shutdown(wait=False)
        open_gate(log)
        check_shut_down_outcome(call, event, 4)
    finally:
        open_gate(log)
        runner.shutdown()
        # The pools wind down on their own after shutdown(wait=False).
        join_new_threads(leaks)
    leaks.check()


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_shutdown_waits_after_shutdown_without_waiting(
    kind: str, leaks: Leaks, log: str, mem_log: str
) -> None:
    """``shutdown()`` after ``shutdown(wait=False)`` still returns with nothing left running."""
    log = log_for(kind, log, mem_log)
    event = FAULT[kind]
    runner = Runner()
    try:
        call = Call(runner.map, event, ["block"] * 2, range(2), repeat(log))
        call.wait_until_waiting()
        # Both running: a work item still queued would be cancelled by the shutdown.
        wait_until(lambda: calls_of(log) == 2)
        runner.shutdown(wait=False)
        open_gate(log)
        call.result(PATIENCE)
    finally:
        open_gate(log)
        runner.shutdown()
    leaks.check()


def make_executor(kind: str) -> Executor:
    if kind == "default":
        return DefaultExecutor()
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=2)
    return ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))


def check_refused_suffix(results: list[EventResult], event_name: str) -> int:
    """Results succeed up to some task, then every later one failed for the shut executor.

    Returns:
        The index of the first refused task.
    """
    first_refused = next((i for i, r in enumerate(results) if r.error), len(results))
    for i, result in enumerate(results):
        if i < first_refused:
            check_success(result, i)
            continue
        exc = result.exception
        assert result.error, f"task {i} ran after the executor was shut down: {result!r}"
        # Refused at submission, or cancelled by shutdown(cancel_futures=True).
        assert isinstance(exc, RuntimeError | CancelledError), repr(exc)
        assert event_name in str(exc), f"{event_name!r} not in {str(exc)!r}"
        if isinstance(exc, RuntimeError):
            assert "refused new work" in str(exc)
    return first_refused


@pytest.mark.parametrize(
    ("kind", "how"),
    [
        ("default", "by a task"),
        ("thread", "by a task"),
        ("thread", "from a thread"),
        ("thread", "from a thread, cancel_futures"),
        ("process", "from a thread"),
        ("process", "from a thread, cancel_futures"),
    ],
)
def test_user_executor_shut_down_during_run(
    kind: str,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
    leaks: Leaks,
    log: str,
    mem_log: str,
) -> None:
    """Tasks refused by a user's executor that was shut down fail, naming the event."""
    log = log_for(kind, log, mem_log)
    executor = make_executor(kind)
    monkeypatch.setattr(OnUserExecutor, "executor", executor)
    # A small window, so that most tasks are still to be submitted at shutdown.
    runner = Runner(window=4)
    tasks = 40
    try:
        if how == "by a task":
            # shutdown(wait=False) from inside process(), as a user's code might.
            register_executor("user", executor)
            actions = ["ok"] * tasks
            actions[3] = "shutdown:user"
            call = Call(runner.map, OnUserExecutor, actions, range(tasks), repeat(log))
        else:
            # Shut down while the window is full: two tasks running at the gate, the
            # others submitted and queued behind them.
            call = Call(runner.map, OnUserExecutor, ["block"] * tasks, range(tasks), repeat(log))
            call.wait_until_waiting()
            executor.shutdown(wait=False, cancel_futures=how.endswith("cancel_futures"))
            open_gate(log)
        run = call.result(PATIENCE)
    finally:
        register_executor("user", None)
        open_gate(log)
        runner.shutdown()
        executor.shutdown(wait=True)
        join_new_threads(leaks)

    check_results(run.results, OnUserExecutor, tasks)
    first_refused = check_refused_suffix(run.results, OnUserExecutor.__name__)
    assert first_refused < tasks, "no task was refused: the shutdown came too late"
    leaks.check()
