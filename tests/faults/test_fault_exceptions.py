"""Cases 1 and 2: what a worker sends back cannot always cross a process boundary.

An exception that does not survive pickling comes back as itself or as a stand-in that
keeps its type name, message and traceback text; a returned value that cannot be pickled
fails its own task. Neither breaks the pool, and in-process executors are not affected.
"""

from __future__ import annotations

import multiprocessing
import threading

import pytest
from fault_events import FAULT, KINDS, RETRYING_ANYTHING, LockedError, TwoArgumentError
from fault_helpers import Leaks, check_failure, check_results, check_success, full_text

from event_pipeline import Runner

pytestmark = pytest.mark.timeout(60)

UNPICKLABLE_EXCEPTIONS = [
    ("lock_error", LockedError, "holds a lock"),
    ("two_arg_error", TwoArgumentError, "code {i}: needs two arguments"),
]


def check_stand_in(exc: BaseException, error_type: type[Exception], message: str) -> None:
    """``exc`` is the original exception, or a stand-in with its type name, message, traceback."""
    assert isinstance(exc, Exception)
    text = full_text(exc)
    assert message in str(exc), f"{message!r} not in {str(exc)!r}"
    if not isinstance(exc, error_type):
        assert error_type.__name__ in str(exc), f"{error_type.__name__} not in {str(exc)!r}"
    # The worker's traceback text names the line that raised.
    assert f"raise {error_type.__name__}(" in text, text


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("action", "error_type", "message"), UNPICKLABLE_EXCEPTIONS)
def test_unpicklable_exception_fails_its_task_only(
    kind: str,
    action: str,
    error_type: type[Exception],
    message: str,
    runner: Runner,
    leaks: Leaks,
) -> None:
    """An exception that cannot be pickled fails its task, keeps its text, breaks nothing."""
    event = FAULT[kind]
    runner.map(event, ["ok"] * 4, range(4))  # the pool is up before the faults
    workers = set(multiprocessing.active_children())
    actions = ["ok", action, "ok", "ok", action, "ok", "ok", "ok"]

    run = runner.map(event, actions, range(len(actions)))

    check_results(run.results, event, len(actions))
    for i, (act, result) in enumerate(zip(actions, run.results, strict=True)):
        if act == "ok":
            check_success(result, i)
        else:
            assert result.error and result.attempts == 1, result
            assert result.exception is result.content
            check_stand_in(result.exception, error_type, message.format(i=i))
    assert not run.success
    # Never a broken pool: the same workers are still there, and the next run works.
    assert set(multiprocessing.active_children()) == workers
    again = runner.map(event, ["ok"] * 6, range(6))
    assert again.success
    for i, result in enumerate(again.results):
        check_success(result, i)
    assert set(multiprocessing.active_children()) == workers
    runner.shutdown()
    leaks.check()


@pytest.mark.parametrize("kind", KINDS)
def test_unpicklable_exception_is_retried_like_the_original(
    kind: str, runner: Runner, leaks: Leaks
) -> None:
    """The retry policy judges the real exception, so its attempts are counted as usual."""
    event = RETRYING_ANYTHING[kind]
    run = runner.map(event, ["lock_error", "ok", "two_arg_error"], range(3))

    check_results(run.results, event, 3)
    assert run.results[0].attempts == 3
    check_stand_in(run.results[0].exception, LockedError, "task 0 holds a lock")
    check_success(run.results[1], 1)
    assert run.results[2].attempts == 3
    check_stand_in(run.results[2].exception, TwoArgumentError, "code 2: needs two arguments")
    runner.shutdown()
    leaks.check()


@pytest.mark.parametrize("kind", KINDS)
def test_unpicklable_return_value_fails_its_task_only(
    kind: str, runner: Runner, leaks: Leaks
) -> None:
    """A process worker returning a lock fails that task, naming the event and the type."""
    event = FAULT[kind]
    actions = ["ok", "lock_result", "ok", "ok", "lock_result", "ok"]

    run = runner.map(event, actions, range(len(actions)))

    check_results(run.results, event, len(actions))
    for i, (act, result) in enumerate(zip(actions, run.results, strict=True)):
        if act == "ok":
            check_success(result, i)
        elif kind == "process":
            check_failure(result, TypeError, event.__name__, "lock")
        else:
            # No boundary to cross: the lock is the value.
            assert result.success
            assert isinstance(result.content, type(threading.Lock()))
    again = runner.map(event, ["ok"] * 4, range(4))
    assert again.success
    runner.shutdown()
    leaks.check()
