"""Case 7: ``stop_on_exception=True`` stops the run at the first task that ends with an
exception, whatever the executor.

Tasks not started are cancelled and running ones are not waited for; the call raises
``StopProcessingError`` whose ``__cause__`` is the task's exception and whose ``.run`` is the
partial ``EventRun``: not a success, holding the results finished so far, in input order.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from itertools import repeat

import pytest
from fault_events import KINDS, STOPPING, Fatal, calls_of, open_gate
from fault_helpers import Leaks, check_success, log_for

from event_pipeline import Runner, StopProcessingError

pytestmark = pytest.mark.timeout(60)

TASKS = 100
#: The most calls of ``process`` a stopped run may have made when the first task fails
#: and all the others wait at a gate: the culprit, one task per other worker, the next task
#: a freed worker picked before the cancel, and for process pools the work items already
#: in the pool's call queue (``max_workers + 1``), which can no longer be cancelled.
MOST_CALLS = {"default": 1, "thread": 3, "process": 1 + 2 + 3}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("action", "cause_type", "fragment"),
    [("raise", Fatal, "task 0 failed"), ("bad_shape", TypeError, "returned 0")],
    ids=["raises", "bad return"],
)
def test_stop_cancels_the_rest(
    kind: str,
    action: str,
    cause_type: type[Exception],
    fragment: str,
    leaks: Leaks,
    log: str,
    mem_log: str,
) -> None:
    """The first failing task stops the run; the others are cancelled or left running."""
    log = log_for(kind, log, mem_log)
    event = STOPPING[kind]
    actions = [action] + ["block"] * (TASKS - 1)
    runner = Runner(window=8)
    try:
        with pytest.raises(StopProcessingError) as caught:
            runner.map(event, actions, range(TASKS), repeat(log))
        # Raised while the other tasks still wait at the gate: they were not waited for.
    finally:
        open_gate(log)
        runner.shutdown()
    error = caught.value
    cause = error.__cause__
    assert isinstance(cause, cause_type), repr(cause)
    assert fragment in str(cause)
    assert event.__name__ in str(error)
    run = error.run
    assert not run.success
    assert run.event_name == event.__name__
    # Only the culprit had finished: the blocked tasks never count as successes.
    assert len(run.results) == 1, run.results
    assert run.results[0].exception is cause
    assert calls_of(log) <= MOST_CALLS[kind], "tasks not started were not cancelled"
    leaks.check()


@pytest.mark.parametrize("kind", KINDS)
def test_results_so_far_are_kept_in_order(kind: str, leaks: Leaks, log: str, mem_log: str) -> None:
    """Results finished before the stop are in ``.run``, in input order, each once."""
    log = log_for(kind, log, mem_log)
    event = STOPPING[kind]
    culprit = 6
    actions = ["ok"] * TASKS
    actions[culprit] = "raise"
    # Plain failures, (False, x), never stop a run.
    actions[2] = "false"
    runner = Runner(window=8)
    try:
        with pytest.raises(StopProcessingError) as caught:
            runner.map(event, actions, range(TASKS), repeat(log))
    finally:
        runner.shutdown()
    run = caught.value.run
    assert not run.success
    ids = [r.task_id for r in run.results]
    assert len(set(ids)) == len(ids)
    contents = [r.content for r in run.results if r.exception is None]
    assert contents == sorted(contents), f"not in input order: {contents}"
    by_index = {r.content: r for r in run.results if r.exception is None}
    # Inline, the run stops at the culprit: exactly the tasks before it have results.
    if kind == "default":
        assert sorted(by_index) == list(range(culprit))
        assert calls_of(log) == culprit + 1
    # On a pool, task 2 may still be running when the culprit stops the run (a loaded
    # machine can pause its worker): then it is simply not among the results.
    if 2 in by_index:
        assert by_index[2].error and not isinstance(by_index[2].content, Exception)
    for i, result in by_index.items():
        if i != 2:
            check_success(result, i)
    culprits = [r for r in run.results if r.exception is not None]
    assert len(culprits) == 1 and culprits[0].exception is caught.value.__cause__
    assert calls_of(log) < TASKS
    leaks.check()


def test_false_never_stops_a_run(leaks: Leaks, mem_log: str) -> None:
    """(False, x) is a failed task, not an exception: the run goes on to the end."""
    event = STOPPING["thread"]
    actions = ["false", "ok"] * 10
    with Runner() as runner:
        run = runner.map(event, actions, range(20), repeat(mem_log))
    assert [r.error for r in run.results] == [a == "false" for a in actions]
    assert [r.content for r in run.results] == list(range(20))
    leaks.check()


def test_broken_pool_stops_the_run(leaks: Leaks, log: str) -> None:
    """A worker death stops the run once its culprit is known, with BrokenProcessPool."""
    event = STOPPING["process"]
    actions = ["ok"] * 20
    actions[3] = "exit"
    runner = Runner(window=8)
    try:
        with pytest.raises(StopProcessingError) as caught:
            runner.map(event, actions, range(20), repeat(log))
    finally:
        runner.shutdown()
    assert isinstance(caught.value.__cause__, BrokenProcessPool)
    run = caught.value.run
    assert not run.success
    culprits = [r for r in run.results if r.exception is not None]
    assert len(culprits) == 1 and culprits[0].exception is caught.value.__cause__
    assert culprits[0].attempts == 1
    for result in run.results:
        if result.exception is None:
            check_success(result, result.content)
    leaks.check()
