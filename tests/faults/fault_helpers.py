"""Assertions and waits shared by the fault-injection tests (test process only)."""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from fault_events import GATE_TIMEOUT, calls_of, started

from event_pipeline import EventBase, EventResult


class Leaks:
    """What ran before a test, to tell what the test left behind."""

    def __init__(self) -> None:
        self.threads = set(threading.enumerate())
        self.children = set(multiprocessing.active_children())

    def check(self, where: str = "") -> None:
        """Assert that no thread and no child process started since remains.

        On failure the message also tells whether the leftovers ended on their own soon
        after (not joined by shutdown) or are still running (truly left behind).
        """
        threads = [t for t in threading.enumerate() if t not in self.threads]
        children = [p for p in multiprocessing.active_children() if p not in self.children]
        if not threads and not children:
            return
        described = f"{where}left behind after shutdown: threads {threads}, processes {children}"
        deadline = time.monotonic() + 5.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        for child in children:
            child.join(max(0.0, deadline - time.monotonic()))
        alive = [x for x in [*threads, *children] if x.is_alive()]
        fate = f"still alive 5s later: {alive}" if alive else "they ended on their own within 5s"
        raise AssertionError(f"{described} ({fate})")


def log_for(kind: str, log: str, mem_log: str) -> str:
    """The log a task of executor ``kind`` can write to: files only across processes."""
    return log if kind == "process" else mem_log


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds instead of hanging.

    Only for state that lives in another process (files), where no Event can reach.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {condition}"
        time.sleep(0.005)


def wait_started(log: str) -> None:
    """Wait until some task of ``log`` has called ``process`` (bounded)."""
    if log.startswith("mem:"):
        assert started(log).wait(GATE_TIMEOUT), f"no task of {log} started"
    else:
        wait_until(lambda: calls_of(log) > 0)


def check_results(results: Sequence[EventResult], event: type[EventBase], count: int) -> None:
    """Exactly ``count`` results of ``event``, with distinct task ids."""
    assert len(results) == count, f"{len(results)} results for {count} inputs"
    assert all(isinstance(r, EventResult) for r in results)
    assert {r.event_name for r in results} <= {event.__name__}
    assert len({r.task_id for r in results}) == count, "task ids are not unique"


def check_success(result: EventResult, i: int, attempts: int = 1) -> None:
    """``result`` is the success of task ``i`` (so it sits at input position ``i``)."""
    assert result.success, f"task {i}: {result!r}"
    assert result.exception is None
    assert result.content == i, f"result of task {result.content} at position {i}"
    assert result.attempts == attempts, f"task {i}: {result!r}"


def check_failure(
    result: EventResult,
    error_type: type[BaseException],
    *fragments: str,
    attempts: int | None = 1,
) -> None:
    """``result`` failed with an ``error_type`` whose message holds every fragment."""
    exc = result.exception
    assert result.error, result
    assert isinstance(exc, error_type), f"expected {error_type.__name__}, got {exc!r}"
    assert result.content is exc
    for fragment in fragments:
        assert fragment in str(exc), f"{fragment!r} not in {str(exc)!r}"
    if attempts is not None:
        assert result.attempts == attempts, result


def full_text(exc: BaseException) -> str:
    """An exception as a traceback prints it, causes included."""
    return "".join(traceback.format_exception(exc))


class Call:
    """A call run in a daemon thread, so that a test can bound it and see where it hangs."""

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self._outcome: list[Any] = []
        self._error: list[BaseException] = []

        def target() -> None:
            try:
                self._outcome.append(function(*args))
            except BaseException as exc:  # handed to the test thread by result()
                self._error.append(exc)

        # A daemon, so that a call that does hang cannot keep the test process alive.
        self.thread = threading.Thread(target=target, name="fault-call", daemon=True)
        self.thread.start()

    def where(self) -> str:
        """The call's current stack, formatted."""
        frame = sys._current_frames().get(self.thread.ident or -1)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(finished)"

    def wait_until_waiting(self, timeout: float = 20.0) -> None:
        """Wait until the call blocks in the coordinator's wait: all it could submit is out.

        The runner submits what its window allows, then waits for a completion; when no
        task can complete (they wait at a gate), that is a state that holds still.
        """

        def waiting() -> bool:
            frame = sys._current_frames().get(self.thread.ident or -1)
            while frame is not None:
                code = frame.f_code
                if code.co_name == "wait" and code.co_filename.endswith(
                    os.path.join("event_pipeline", "_coordinator.py")
                ):
                    return True
                frame = frame.f_back
            return False

        wait_until(waiting, timeout)

    def result(self, timeout: float) -> Any:
        """The call's return value or exception; AssertionError if it is still running."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(
                f"the call hangs: still running after {timeout}s, at\n{self.where()}"
            )
        if self._error:
            raise self._error[0]
        return self._outcome[0]


def join_new_threads(leaks: Leaks, timeout: float = 20.0) -> None:
    """Join threads started since ``leaks`` was taken (a user's executor winding down).

    A :class:`Call` that hangs is left alone: its test fails already.
    """
    for thread in threading.enumerate():
        if thread in leaks.threads or thread is threading.current_thread():
            continue
        if thread.name != "fault-call":
            thread.join(timeout)
