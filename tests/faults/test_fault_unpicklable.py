"""Case 6: events and arguments that cannot be sent to a process pool.

An event class a worker cannot import (defined in a function) is refused by ``map``
with ``ImproperlyConfigured`` before any process starts. An argument that cannot be
pickled fails its own task with a ``TypeError`` naming the event, and is never submitted;
the other tasks run. In-process executors need no pickling and run them all.
"""

from __future__ import annotations

import multiprocessing
import threading
from itertools import repeat
from pathlib import Path
from typing import Any

import pytest
from fault_events import CARRY, EXECUTORS, KINDS, WORKERS, Unloadable, calls_of
from fault_helpers import Leaks, check_failure, check_results, check_success, log_for

from event_pipeline import EventBase, ImproperlyConfigured, Runner, event

pytestmark = pytest.mark.timeout(60)


def local_events(kind: str) -> list[type[EventBase]]:
    """A class-based and a function-based event, both defined inside this function."""
    config = {"max_workers": WORKERS} if kind != "default" else {}

    class LocalClass(EventBase):
        executor = EXECUTORS[kind]
        executor_config = config

        def process(self, x: int) -> tuple[bool, Any]:
            return True, x + 1

    @event(executor=EXECUTORS[kind], executor_config=config)
    def local_function(x: int) -> tuple[bool, Any]:
        return True, x + 1

    return [LocalClass, local_function]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", [0, 1], ids=["class", "function"])
def test_event_defined_in_a_function(kind: str, which: int, runner: Runner, leaks: Leaks) -> None:
    """A process pool refuses an event it cannot import, by name, before starting a worker."""
    local = local_events(kind)[which]
    if kind == "process":
        with pytest.raises(ImproperlyConfigured) as caught:
            runner.map(local, range(5))
        message = str(caught.value)
        assert local.__name__ in message and "module level" in message, message
        assert not multiprocessing.active_children(), "a worker was started for nothing"
        with pytest.raises(ImproperlyConfigured, match=local.__name__):
            runner.run(local, 1)
    else:
        run = runner.map(local, range(5))
        assert [r.content for r in run.results] == [1, 2, 3, 4, 5]
    runner.shutdown()
    leaks.check()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload_kind", ["lambda", "open file", "lock", "local function"])
def test_argument_that_cannot_be_pickled(
    kind: str,
    payload_kind: str,
    runner: Runner,
    leaks: Leaks,
    log: str,
    mem_log: str,
    tmp_path: Path,
) -> None:
    """The task fails alone with a TypeError naming the event, never submitted."""
    log = log_for(kind, log, mem_log)
    event = CARRY[kind]

    def local_function() -> None:
        pass

    with open(tmp_path / "payload.txt", "w") as handle:
        bad = {
            "lambda": lambda: None,
            "open file": handle,
            "lock": threading.Lock(),
            "local function": local_function,
        }[payload_kind]
        payloads: list[object] = [None] * 8
        for i in (2, 5):
            payloads[i] = bad
        run = runner.map(event, range(8), payloads, repeat(log))

    check_results(run.results, event, 8)
    for i, result in enumerate(run.results):
        if kind == "process" and i in (2, 5):
            check_failure(
                result,
                TypeError,
                event.__name__,
                "cannot be sent to a worker process",
                attempts=0,
            )
            assert calls_of(log, i) == 0, "the task was submitted all the same"
        else:
            check_success(result, i)
    runner.shutdown()
    leaks.check()


def test_argument_that_cannot_be_unpickled_in_the_worker(
    runner: Runner, leaks: Leaks, log: str
) -> None:
    """An argument that pickles but fails to load in the worker fails its own task only.

    It cannot be caught before submission without loading every payload twice; it must
    still fail alone, naming the event, and not take the tasks batched with it along.
    """
    event = CARRY["process"]
    tasks = 300
    bad = 200  # late enough for the runner to be sending tasks in batches
    payloads: list[object] = [None] * tasks
    payloads[bad] = Unloadable(1, "two arguments")

    run = runner.map(event, range(tasks), payloads, repeat(log))

    check_results(run.results, event, tasks)
    failed = [i for i, result in enumerate(run.results) if result.error]
    assert failed == [bad], f"tasks failed with it: {failed}"
    check_failure(run.results[bad], TypeError, event.__name__)
    runner.shutdown()
    leaks.check()
