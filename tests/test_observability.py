"""Hooks and progress through the real runner (SPEC §13), over inline, thread and process
executors and over flows.

The building blocks (Retry, the hook registry, the Hooks plan, the progress tracker and line)
are tested on their own in test_hooks.py and test_progress.py; here every rule is checked end
to end: where hooks are called (the thread driving the call), how often (once per
occurrence), in what order (results in completion order, on_step in text order then
on_flow), what a Retry holds, what a raising or slow hook changes (nothing but itself), what
add_hook/remove_hook reach (every runner, the default one included), what is refused, and
what progress reports.

The ``kind`` fixture (tests/conftest.py) parametrises a test over "inline", "thread" and
"process"; the events of each kind are in tests/observability_events.py.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import event_pipeline
import observability_events as ev
from event_pipeline import (
    EventResult,
    EventRun,
    Flow,
    FlowRun,
    Progress,
    Retry,
    Runner,
    StepRun,
    StepStatus,
    StopProcessingError,
)
from event_pipeline.flow import step

KINDS = ev.KINDS
SUCCEEDED, FAILED, SKIPPED = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED
NOT_TAKEN = StepStatus.NOT_TAKEN


# -- a hook that records every call ------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One hook call: which method, with what, in which thread of which process."""

    method: str
    arg: Any
    thread: int
    pid: int


class Recorder:
    """A hook with all five methods, recording each call (thread-safe)."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "Recorder()"

    def _note(self, method: str, arg: Any) -> None:
        with self._lock:
            self.calls.append(Call(method, arg, threading.get_ident(), os.getpid()))

    def on_retry(self, retry: Retry) -> None:
        self._note("on_retry", retry)

    def on_result(self, result: EventResult) -> None:
        self._note("on_result", result)

    def on_run(self, run: EventRun) -> None:
        self._note("on_run", run)

    def on_step(self, step: StepRun) -> None:
        self._note("on_step", step)

    def on_flow(self, run: FlowRun) -> None:
        self._note("on_flow", run)

    def of(self, method: str) -> list[Any]:
        """The arguments of the calls of ``method``, in call order."""
        return [call.arg for call in self.calls if call.method == method]

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()


@dataclass
class Setup:
    """A runner of the module with a Recorder among its hooks, and the kind's events."""

    runner: Runner
    hook: Recorder
    kind: str

    def event(self, name: str) -> type[Any]:
        return ev.EVENTS[self.kind][name]


@pytest.fixture(scope="module")
def _runners() -> Iterator[dict[str, Setup]]:
    """One recording runner per executor kind for the module: process pools start once."""
    made: dict[str, Setup] = {}
    yield made
    for setup in made.values():
        setup.runner.shutdown()


@pytest.fixture
def rec(_runners: dict[str, Setup], kind: str) -> Setup:
    """The module's recording runner for ``kind``, its Recorder emptied."""
    if kind not in _runners:
        hook = Recorder()
        _runners[kind] = Setup(Runner(hooks=[hook]), hook, kind)
    setup = _runners[kind]
    setup.hook.clear()
    return setup


def pools(*kinds: str) -> list[Any]:
    """``kinds`` as parameters (for tests that only make sense on some executors)."""
    return [pytest.param(k, id=k) for k in kinds]


def expected_delay(policy: Any, retry_number: int) -> float:
    return float(min(policy.max_backoff, policy.backoff_factor * 2 ** (retry_number - 1)))


def flow_of(kind: str) -> Flow:
    """``Start (0 -> Nope, 1 -> Yes) -> Boom -> Never`` of ``kind``'s events."""
    e = ev.EVENTS[kind]
    return step(e["Start"]).branch({0: e["Nope"], 1: e["Yes"]}).then(e["Boom"], e["Never"])


# -- where: the thread that drives the call ------------------------------------------------------


def test_hooks_are_called_in_the_calling_thread(rec: Setup) -> None:
    """Every hook call of map, run and imap happens in the calling thread, in this process."""
    rec.runner.map(rec.event("Flaky"), range(6))
    rec.runner.run(rec.event("Square"), 3)
    rec.runner.run(rec.event("Flaky"), 0)
    list(rec.runner.imap(rec.event("Flaky"), range(4)))
    methods = {call.method for call in rec.hook.calls}
    assert methods == {"on_retry", "on_result", "on_run"}
    assert {(call.thread, call.pid) for call in rec.hook.calls} == {
        (threading.get_ident(), os.getpid())
    }


def test_hooks_follow_the_thread_that_drives_the_call(rec: Setup) -> None:
    """A call driven from another thread calls its hooks in that thread."""
    idents: list[int] = []

    def drive() -> None:
        idents.append(threading.get_ident())
        rec.runner.map(rec.event("Flaky"), range(6))

    thread = threading.Thread(target=drive)
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    assert rec.hook.calls
    assert {call.thread for call in rec.hook.calls} == set(idents)


def test_threads_sharing_a_runner_each_get_their_own_calls(rec: Setup) -> None:
    """Two threads mapping on one runner at once: each thread's hook calls are exactly those
    of its own tasks."""
    runs: dict[int, EventRun] = {}
    barrier = threading.Barrier(2)

    def drive() -> None:
        barrier.wait(10)
        runs[threading.get_ident()] = rec.runner.map(rec.event("Flaky"), range(12))

    threads = [threading.Thread(target=drive) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(runs) == 2
    for ident, run in runs.items():
        mine = [call for call in rec.hook.calls if call.thread == ident]
        ids = {r.task_id for r in run.results}
        assert sorted(c.arg.task_id for c in mine if c.method == "on_result") == sorted(ids)
        assert {c.arg.task_id for c in mine if c.method == "on_retry"} == {
            r.task_id for r in run.results if r.error
        }
        assert [c.arg for c in mine if c.method == "on_run"] == [run]


# -- how often, in what order -----------------------------------------------------------------


def test_map_calls_each_hook_once_per_occurrence(rec: Setup) -> None:
    """map: one on_result per task, one on_retry per retry, one on_run after all results."""
    run = rec.runner.map(rec.event("Flaky"), range(9))
    results = rec.hook.of("on_result")
    assert len(results) == 9
    assert sorted(r.task_id for r in results) == sorted(r.task_id for r in run.results)
    assert {id(r) for r in results} == {id(r) for r in run.results}  # the very results
    assert rec.hook.of("on_run") == [run]
    assert rec.hook.calls[-1].method == "on_run"
    retries = rec.hook.of("on_retry")
    failing = [r for r in run.results if r.error]
    assert len(failing) == 3 and all(r.attempts == 3 for r in failing)
    assert len(retries) == 2 * 3  # two retries for each of 0, 3 and 6
    # Each retry comes before its task's result.
    position = {id(call.arg): i for i, call in enumerate(rec.hook.calls)}
    for retry in retries:
        (result,) = [r for r in results if r.task_id == retry.task_id]
        assert position[id(retry)] < position[id(result)]


def test_run_calls_on_result_then_on_run_once(rec: Setup) -> None:
    """run (the inline fast path too): one on_result, then one on_run."""
    run = rec.runner.run(rec.event("Square"), 7)
    assert [call.method for call in rec.hook.calls] == ["on_result", "on_run"]
    assert rec.hook.of("on_result") == run.results
    assert rec.hook.of("on_run") == [run]


def test_run_that_retries_calls_on_retry_per_retry(rec: Setup) -> None:
    """run of a task that always raises: two on_retry, one on_result, one on_run, in order."""
    run = rec.runner.run(rec.event("Flaky"), 3)
    assert [call.method for call in rec.hook.calls] == [
        "on_retry",
        "on_retry",
        "on_result",
        "on_run",
    ]
    assert rec.hook.of("on_run") == [run]
    assert not run.success


def test_imap_calls_on_result_per_task_and_no_on_run(rec: Setup) -> None:
    """imap yields results, not an EventRun: one on_result per task, no on_run."""
    yielded = list(rec.runner.imap(rec.event("Flaky"), range(7)))
    assert sorted(r.task_id for r in rec.hook.of("on_result")) == sorted(r.task_id for r in yielded)
    assert len(rec.hook.of("on_retry")) == 2 * 3  # 0, 3, 6
    assert rec.hook.of("on_run") == []


def test_results_come_in_completion_order(kind: str) -> None:
    """on_result follows completion, not input order (inline: they are the same)."""
    hook = Recorder()
    sleepy = ev.EVENTS[kind]["Sleepy"]
    with Runner(hooks=[hook]) as runner:
        if kind == "process":
            runner.map(sleepy, [0.3] * 3)  # three warm workers, one task each below
        hook.clear()
        run = runner.map(sleepy, [0.6, 0.0, 0.3])
    assert [r.content[0] for r in run.results] == [0.6, 0.0, 0.3]  # input order
    seen = [r.content for r in hook.of("on_result")]
    assert seen == sorted(seen, key=lambda content: content[1])  # by the time each finished
    if kind == "inline":
        assert [s for s, _ in seen] == [0.6, 0.0, 0.3]
    else:
        assert [s for s, _ in seen] == [0.0, 0.3, 0.6]


# -- what a Retry holds -------------------------------------------------------------------------


def test_retry_fields(rec: Setup) -> None:
    """event_name, task_id (the result's), 1-based attempt, the exception, the delay."""
    flaky = rec.event("Flaky")
    run = rec.runner.map(flaky, [1, 3])
    result = run.results[1]
    retries = rec.hook.of("on_retry")
    assert all(isinstance(retry, Retry) for retry in retries)
    assert [retry.task_id for retry in retries] == [result.task_id] * 2
    assert [retry.event_name for retry in retries] == [flaky.__name__] * 2
    assert [retry.attempt for retry in retries] == [1, 2]
    assert result.attempts == 3
    for retry in retries:
        assert type(retry.exception) is ValueError
        assert str(retry.exception) == "bad 3"
    # The last attempt's exception is the result's; the earlier ones are their own.
    assert type(result.exception) is ValueError
    assert [retry.delay for retry in retries] == pytest.approx(
        [expected_delay(ev.FLAKY_POLICY, 1), expected_delay(ev.FLAKY_POLICY, 2)]
    )
    assert retries[1].delay == pytest.approx(0.0015)  # capped by max_backoff


def test_retries_of_a_task_that_recovers(rec: Setup, tmp_path: Path) -> None:
    """A task that succeeds on its third attempt: retries 1 and 2, then a successful result
    with attempts == 3."""
    path = tmp_path / "attempts"
    run = rec.runner.run(rec.event("Recover"), str(path), 3)
    assert run.success
    (result,) = run.results
    assert (result.content, result.attempts) == (3, 3)
    retries = rec.hook.of("on_retry")
    assert [(r.attempt, r.task_id) for r in retries] == [(1, result.task_id), (2, result.task_id)]
    assert [str(r.exception) for r in retries] == [
        f"attempt 1 of {path}",
        f"attempt 2 of {path}",
    ]
    assert all(type(r.exception) is OSError for r in retries)
    assert [r.delay for r in retries] == pytest.approx(
        [expected_delay(ev.RECOVER_POLICY, n) for n in (1, 2)]
    )


def test_a_false_return_is_a_result_not_a_retry(rec: Setup) -> None:
    """(False, value) is a failed result, never an on_retry."""
    run = rec.runner.map(rec.event("Refuse"), range(4))
    assert rec.hook.of("on_retry") == []
    assert sorted(r.error for r in rec.hook.of("on_result")) == [False, False, True, True]
    assert rec.hook.of("on_run") == [run]


def _stopped_event_run_params() -> list[Any]:
    return [
        pytest.param("inline", "run", id="inline-run"),
        pytest.param("inline", "map", id="inline-map"),
        pytest.param("thread", "run", id="thread-run"),
        pytest.param("thread", "map", id="thread-map"),
        pytest.param("process", "run", id="process-run"),
        pytest.param("process", "map", id="process-map"),
    ]


@pytest.mark.parametrize(("kind", "call"), _stopped_event_run_params())
def test_a_stopped_event_run_reports_its_result_and_its_run(rec: Setup, call: str) -> None:
    """stop_on_exception: the task that stopped the run reaches on_result once, and the
    partial run reaches on_run once (as a stopped flow run reaches on_flow), whatever the
    executor and the call."""
    stop = rec.event("Stop")
    with pytest.raises(StopProcessingError) as info:
        if call == "run":
            rec.runner.run(stop, 0)
        else:
            rec.runner.map(stop, [0])
    partial = info.value.run
    assert isinstance(partial, EventRun)
    (failed,) = [r for r in rec.hook.of("on_result") if r.error]
    assert isinstance(failed.exception, RuntimeError)
    runs = rec.hook.of("on_run")
    assert len(runs) == 1
    assert not runs[0].success
    assert [r.task_id for r in runs[0].results] == [r.task_id for r in partial.results]


# -- flows: on_step once per step, then on_flow ------------------------------------------------


def test_flow_steps_are_reported_once_each_in_text_order_then_the_flow(rec: Setup) -> None:
    """Every step, whatever its status (not taken and skipped too), once, in text order, then
    on_flow once; results, runs and the retry of the steps that ran come before."""
    flow = flow_of(rec.kind)
    flow_run = rec.runner.run(flow, 5)
    assert not flow_run.success
    steps = rec.hook.of("on_step")
    e = ev.EVENTS[rec.kind]
    assert [s.name for s in steps] == [
        e[name].__name__ for name in ("Start", "Nope", "Yes", "Boom", "Never")
    ]
    assert [s.status for s in steps] == [SUCCEEDED, NOT_TAKEN, SUCCEEDED, FAILED, SKIPPED]
    assert all(a is b for a, b in zip(steps, flow_run.steps, strict=True))  # the final records
    assert rec.hook.of("on_flow") == [flow_run]
    methods = [call.method for call in rec.hook.calls]
    assert methods[-6:] == ["on_step"] * 5 + ["on_flow"]
    assert methods.count("on_flow") == 1
    # The three steps that ran: one result and one run each; Boom's retry before its result.
    assert [r.event_name for r in rec.hook.of("on_run")] == [
        e[name].__name__ for name in ("Start", "Yes", "Boom")
    ]
    assert len(rec.hook.of("on_result")) == 3
    (retry,) = rec.hook.of("on_retry")
    boom = flow_run[e["Boom"].__name__]
    assert boom.run is not None
    assert (retry.event_name, retry.task_id, retry.attempt) == (
        e["Boom"].__name__,
        boom.run.results[0].task_id,
        1,
    )
    assert isinstance(retry.exception, KeyError)
    assert retry.delay == pytest.approx(expected_delay(ev.BOOM_POLICY, 1))
    assert {(call.thread, call.pid) for call in rec.hook.calls} == {
        (threading.get_ident(), os.getpid())
    }


def test_a_stopped_flow_run_reports_every_step_then_the_flow(rec: Setup) -> None:
    """A flow run stopped by stop_on_exception still reports each step once, then on_flow
    with the partial FlowRun the exception carries."""
    e = ev.EVENTS[rec.kind]
    flow = step(e["Start"]).then(e["Stop"], e["Never"])
    with pytest.raises(StopProcessingError) as info:
        rec.runner.run(flow, 1)
    partial = info.value.run
    assert isinstance(partial, FlowRun)
    steps = rec.hook.of("on_step")
    assert [s.status for s in steps] == [SUCCEEDED, FAILED, SKIPPED]
    assert [s.status for s in partial.steps] == [SUCCEEDED, FAILED, SKIPPED]
    assert rec.hook.of("on_flow") == [partial]
    assert [call.method for call in rec.hook.calls][-4:] == ["on_step"] * 3 + ["on_flow"]


def test_a_flow_map_reports_each_flow_run_after_its_own_steps(rec: Setup) -> None:
    """map of a flow: each FlowRun's on_flow comes right after its own five on_steps."""
    flow_runs = rec.runner.map(flow_of(rec.kind), [1, 2, 3])
    calls = [call for call in rec.hook.calls if call.method in ("on_step", "on_flow")]
    assert [c.method for c in calls] == (["on_step"] * 5 + ["on_flow"]) * 3
    reported = [c.arg for c in calls if c.method == "on_flow"]
    assert sorted(map(id, reported)) == sorted(map(id, flow_runs))
    for i in range(3):
        group = calls[6 * i : 6 * i + 6]
        flow_run = group[-1].arg
        assert all(c.arg is s for c, s in zip(group[:5], flow_run.steps, strict=True))
    assert len(rec.hook.of("on_run")) == 3 * 3
    assert len(rec.hook.of("on_retry")) == 3


def test_a_one_step_flow_reports_result_run_step_and_flow(kind: str) -> None:
    """A flow of one step: on_result, on_run, on_step, on_flow, once each, in that order."""
    hook = Recorder()
    with Runner(hooks=[hook]) as runner:
        flow_run = runner.run(step(ev.EVENTS[kind]["Square"]), 4)
    assert flow_run.output == 16
    assert [c.method for c in hook.calls] == ["on_result", "on_run", "on_step", "on_flow"]


# -- a hook that raises ------------------------------------------------------------------------


class Raising:
    """Raises from every method; counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __repr__(self) -> str:
        return "Raising()"

    def _fail(self, *_: Any) -> None:
        self.calls += 1
        raise RuntimeError("hook broke")

    on_retry = on_result = on_run = on_step = on_flow = _fail


def hook_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "event_pipeline" and record.levelno >= logging.ERROR
    ]


def test_a_raising_hook_is_logged_once_dropped_and_loses_nothing(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The first raise is logged once at ERROR naming the hook; that runner never calls it
    again (none of its methods); the run and the other hooks get everything."""
    bad, good = Raising(), Recorder()
    flaky = ev.EVENTS[kind]["Flaky"]
    caplog.set_level(logging.ERROR, logger="event_pipeline")
    with Runner(hooks=[bad, good]) as runner:
        run = runner.map(flaky, range(9))
        assert bad.calls == 1
        (record,) = hook_errors(caplog)
        assert "Raising()" in record.getMessage()
        assert record.exc_info is not None and "hook broke" in str(record.exc_info[1])
        assert len(run.results) == 9
        assert [r.error for r in run.results] == [n % 3 == 0 for n in range(9)]
        assert len(good.of("on_result")) == 9
        assert len(good.of("on_retry")) == 6
        assert good.of("on_run") == [run]
        # Later calls of the same runner: still dropped, nothing more logged.
        runner.run(flaky, 1)
        runner.run(flow_of(kind), 1)
        assert bad.calls == 1
        assert len(hook_errors(caplog)) == 1
        assert len(good.of("on_flow")) == 1
    # Another runner calls it again: dropping is per runner.
    with Runner(hooks=[bad]) as other:
        other.run(flaky, 1)
    assert bad.calls == 2


def test_a_hook_raising_in_on_step_loses_no_step(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook raising in on_step: logged once, the other hook still gets every step and the
    flow; the FlowRun is whole."""

    class BadStep:
        calls = 0

        def on_step(self, step: StepRun) -> None:
            BadStep.calls += 1
            raise ValueError("on_step broke")

    good = Recorder()
    caplog.set_level(logging.ERROR, logger="event_pipeline")
    with Runner(hooks=[BadStep(), good]) as runner:
        flow_run = runner.run(flow_of(kind), 2)
    assert BadStep.calls == 1
    (record,) = hook_errors(caplog)
    assert "BadStep" in record.getMessage() and "on_step" in record.getMessage()
    assert len(flow_run.steps) == 5
    assert good.of("on_step") == flow_run.steps
    assert good.of("on_flow") == [flow_run]


def test_a_raising_hook_on_the_inline_fast_path(caplog: pytest.LogCaptureFixture) -> None:
    """run() of an inline event (no coordinator): the raising hook is dropped, the other gets
    its result and run."""
    bad, good = Raising(), Recorder()
    caplog.set_level(logging.ERROR, logger="event_pipeline")
    with Runner(hooks=[bad, good]) as runner:
        first = runner.run(ev.InlineSquare, 2)
        second = runner.run(ev.InlineSquare, 3)
    assert (first.results[0].content, second.results[0].content) == (4, 9)
    assert bad.calls == 1
    assert len(hook_errors(caplog)) == 1
    assert good.of("on_run") == [first, second]


# -- a slow hook --------------------------------------------------------------------------------


def test_a_slow_hook_never_loses_a_result(kind: str) -> None:
    """A hook that takes 20 ms per call slows the caller, never loses a result or a retry."""

    class Slow(Recorder):
        def _note(self, method: str, arg: Any) -> None:
            time.sleep(0.02)
            super()._note(method, arg)

    hook = Slow()
    with Runner(hooks=[hook]) as runner:
        run = runner.map(ev.EVENTS[kind]["Flaky"], range(24))
        streamed = list(runner.imap(ev.EVENTS[kind]["Square"], range(12)))
    assert [r.content for r in run.results if not r.error] == [n for n in range(24) if n % 3]
    assert sum(r.error for r in run.results) == 8
    assert len(hook.of("on_result")) == 24 + 12
    assert len(hook.of("on_retry")) == 16
    assert hook.of("on_run") == [run]
    assert [r.content for r in streamed] == [n * n for n in range(12)]


# -- add_hook / remove_hook ----------------------------------------------------------------------


@pytest.fixture
def global_hook() -> Iterator[Recorder]:
    """A Recorder registered with add_hook for the test, removed in any case."""
    hook = Recorder()
    event_pipeline.add_hook(hook)
    try:
        yield hook
    finally:
        event_pipeline.remove_hook(hook)


def test_add_hook_reaches_runners_made_before_and_after(kind: str) -> None:
    """A process-wide hook is called by a runner made before it was added and by one made
    after, once each even when the runner has it too; after remove_hook, no more."""
    square = ev.EVENTS[kind]["Square"]
    hook = Recorder()
    with Runner() as before:
        before.run(square, 1)  # resolved its (empty) hooks already
        event_pipeline.add_hook(hook)
        try:
            with Runner() as after, Runner(hooks=[hook]) as both:
                before.map(square, [2, 3])
                after.run(square, 4)
                both.run(square, 5)
            assert sorted(r.content for r in hook.of("on_result")) == [4, 9, 16, 25]
            assert len(hook.of("on_run")) == 3
        finally:
            event_pipeline.remove_hook(hook)
        hook.clear()
        before.map(square, [6])
    assert hook.calls == []


@pytest.mark.parametrize("kind", pools("inline", "thread"))
def test_add_hook_reaches_the_default_runner(kind: str, global_hook: Recorder) -> None:
    """MyEvent.run/map/imap, event_pipeline.run and flow.run (the default runner) call it."""
    e = ev.EVENTS[kind]
    e["Square"].run(2)
    e["Square"].map([3, 4])
    list(e["Square"].imap([5]))
    event_pipeline.run(e["Flaky"], 0)
    flow_run = flow_of(kind).run(1)
    contents = [r.content for r in global_hook.of("on_result") if not r.error]
    assert sorted(contents, key=str) == [1, 16, 25, 4, 9, "yes"]  # Start(1) and Yes too
    assert len(global_hook.of("on_retry")) == 2 + 1  # Flaky(0) twice, Boom once
    assert len(global_hook.of("on_step")) == 5
    assert global_hook.of("on_flow") == [flow_run]
    assert {call.thread for call in global_hook.calls} == {threading.get_ident()}


def test_remove_hook_stops_the_default_runner_calling_it() -> None:
    hook = Recorder()
    event_pipeline.add_hook(hook)
    try:
        ev.InlineSquare.run(1)
    finally:
        event_pipeline.remove_hook(hook)
    ev.InlineSquare.run(2)
    assert [r.content for r in hook.of("on_result")] == [1]
    with pytest.raises(ValueError, match="not a registered hook"):
        event_pipeline.remove_hook(hook)


# -- what is refused ----------------------------------------------------------------------------


class NotAHook:
    def on_something(self, x: Any) -> None:
        pass


BAD_HOOKS = [
    pytest.param("on_result", "'on_result'", id="a-string"),
    pytest.param(Recorder, "Recorder()", id="a-class"),
    pytest.param(NotAHook(), "NotAHook", id="no-hook-method"),
    pytest.param(object(), "object", id="a-plain-object"),
    pytest.param(42, "42", id="a-number"),
    pytest.param(None, "None", id="none"),
]


@pytest.mark.parametrize(("bad", "named"), BAD_HOOKS)
def test_a_bad_hook_is_refused_when_the_runner_is_made(bad: object, named: str) -> None:
    with pytest.raises(TypeError) as info:
        Runner(hooks=[Recorder(), bad])
    assert named in str(info.value)


@pytest.mark.parametrize(("bad", "named"), BAD_HOOKS)
def test_a_bad_hook_is_refused_by_add_hook(bad: object, named: str) -> None:
    generation = event_pipeline._hooks.hook_generation()
    with pytest.raises(TypeError) as info:
        event_pipeline.add_hook(bad)
    assert named in str(info.value)
    assert event_pipeline._hooks.hook_generation() == generation  # nothing registered


def test_hooks_given_as_a_string_are_refused() -> None:
    with pytest.raises(TypeError, match="sequence of hooks"):
        Runner(hooks="on_result")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [None, 0, 1, "yes", 0.5, [print]], ids=repr)
def test_progress_that_is_neither_a_bool_nor_callable_is_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="progress"):
        Runner(progress=bad)  # type: ignore[arg-type]


def test_hooks_given_as_a_generator_are_kept() -> None:
    """Any iterable of hooks will do, a one-shot generator too, also once the process-wide
    hooks change and the runner resolves its hooks again."""
    hook, other = Recorder(), Recorder()
    with Runner(hooks=(h for h in [hook])) as runner:
        runner.run(ev.ThreadSquare, 2)
        event_pipeline.add_hook(other)
        try:
            runner.run(ev.ThreadSquare, 3)
        finally:
            event_pipeline.remove_hook(other)
    assert [r.content for r in hook.of("on_result")] == [4, 9]
    assert [r.content for r in other.of("on_result")] == [9]


# -- progress=callable -------------------------------------------------------------------------


def check_snapshots(snapshots: list[Progress]) -> None:
    """Fields consistent within each snapshot, and monotonic across them."""
    assert snapshots
    for p in snapshots:
        assert isinstance(p, Progress)
        assert 0 <= p.failed <= p.done
        assert p.in_flight >= 0
        if p.total is not None:
            assert p.done + p.in_flight <= p.total
        assert p.elapsed >= 0
        if p.elapsed > 0:
            assert p.rate == pytest.approx(p.done / p.elapsed)
    for earlier, later in itertools.pairwise(snapshots):
        assert later.done >= earlier.done
        assert later.failed >= earlier.failed
        assert later.retried >= earlier.retried
        assert later.elapsed >= earlier.elapsed
    assert snapshots[-1].in_flight == 0


class Snapshots(list[Progress]):
    """A progress callable that keeps what it gets, and where it got it."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def __call__(self, progress: Progress) -> None:
        self.threads.add(threading.get_ident())
        self.append(progress)


def test_progress_of_a_map_over_a_list(kind: str) -> None:
    """total is the list's length; the final snapshot has everything done, failures
    included in done, nothing in flight; called in the calling thread."""
    snapshots = Snapshots()
    with Runner(progress=snapshots) as runner:
        run = runner.map(ev.EVENTS[kind]["Refuse"], list(range(10)))
    check_snapshots(snapshots)
    last = snapshots[-1]
    assert (last.done, last.failed, last.retried, last.in_flight, last.total) == (10, 5, 0, 0, 10)
    assert all(p.total == 10 for p in snapshots)
    assert last.elapsed <= run.duration + 1.0
    assert snapshots.threads == {threading.get_ident()}


def test_progress_of_a_map_over_a_generator(kind: str) -> None:
    """Without len(), total is None; retries are counted."""
    snapshots = Snapshots()
    with Runner(progress=snapshots) as runner:
        runner.map(ev.EVENTS[kind]["Flaky"], (n for n in range(9)))
    check_snapshots(snapshots)
    last = snapshots[-1]
    assert (last.done, last.failed, last.retried, last.in_flight, last.total) == (9, 3, 6, 0, None)
    assert all(p.total is None for p in snapshots)


def test_progress_of_imap(kind: str) -> None:
    snapshots = Snapshots()
    with Runner(progress=snapshots) as runner:
        results = list(runner.imap(ev.EVENTS[kind]["Square"], range(5)))
    assert len(results) == 5
    check_snapshots(snapshots)
    assert (snapshots[-1].done, snapshots[-1].total) == (5, 5)


def _run_total_params() -> list[Any]:
    return [
        pytest.param("inline", id="inline"),
        pytest.param("thread", id="thread"),
        pytest.param("process", id="process"),
    ]


@pytest.mark.parametrize("kind", _run_total_params())
def test_progress_of_run_knows_its_one_task(kind: str) -> None:
    """run() has exactly one task: total is 1 whatever the executor."""
    snapshots = Snapshots()
    with Runner(progress=snapshots) as runner:
        runner.run(ev.EVENTS[kind]["Square"], 3)
    check_snapshots(snapshots)
    assert (snapshots[-1].done, snapshots[-1].total) == (1, 1)


def test_progress_of_a_flow_run(kind: str) -> None:
    """A flow run counts the tasks of its steps that ran (Start, Yes, Boom)."""
    snapshots = Snapshots()
    with Runner(progress=snapshots) as runner:
        runner.run(flow_of(kind), 1)
    check_snapshots(snapshots)
    last = snapshots[-1]
    assert (last.done, last.failed, last.retried, last.in_flight) == (3, 1, 1, 0)


@pytest.mark.parametrize("kind", pools("thread", "process"))
def test_progress_comes_at_least_once_a_second_and_at_most_ten_times(kind: str) -> None:
    """One task of 2.2 s: snapshots keep coming while nothing finishes (at least one a
    second); many quick tasks: at most ten a second, plus the final one."""
    snapshots = Snapshots()
    stamps: list[float] = []

    def sink(progress: Progress) -> None:
        stamps.append(time.monotonic())
        snapshots(progress)

    with Runner(progress=sink) as runner:
        runner.map(ev.EVENTS[kind]["Sleepy"], [2.2])
        check_snapshots(snapshots)
        assert snapshots[-1].done == 1
        assert len(snapshots) >= 3  # at ~0.9 s, ~1.8 s and the end
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) <= 1.25
        assert snapshots[0].elapsed <= 1.25
        snapshots.clear()
        stamps.clear()
        started = time.monotonic()
        runner.map(ev.EVENTS[kind]["Sleepy"], [0.01] * 60)
        took = time.monotonic() - started
    check_snapshots(snapshots)
    assert len(snapshots) <= took * 10 + 2
    gaps = [b - a for a, b in itertools.pairwise(stamps[:-1])]
    assert all(gap >= 0.09 for gap in gaps)


# -- progress=True ------------------------------------------------------------------------------


def test_progress_true_draws_one_line_on_stderr(
    kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One line on stderr (redrawn with \\r, ended by one newline), nothing on stdout."""
    with Runner(progress=True) as runner:
        runner.map(ev.EVENTS[kind]["Flaky"], list(range(12)))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n")
    assert err.count("\n") == 1
    final = err.rstrip("\n").rsplit("\r", 1)[-1].rstrip()
    assert final.startswith("done 12/12 (100%) | failed 4 | retried 8 | ")
    assert "elapsed 0:0" in final and final.endswith("ETA 0:00")


def test_progress_true_draws_a_line_per_call(capsys: pytest.CaptureFixture[str]) -> None:
    with Runner(progress=True) as runner:
        runner.map(ev.ThreadSquare, range(3))
        runner.run(ev.InlineSquare, 2)
        list(runner.imap(ev.ThreadSquare, iter(range(4))))
    out, err = capsys.readouterr()
    assert out == ""
    assert err.endswith("\n")
    lines = err[:-1].split("\n")
    assert len(lines) == 3
    finals = [line.rsplit("\r", 1)[-1] for line in lines]
    assert finals[0].startswith("done 3/3 (100%)")
    assert finals[1].startswith("done 1/1 (100%)")
    assert finals[2].startswith("done 4 | failed 0")


def _stopped_progress_params() -> list[Any]:
    return [pytest.param(k, id=k) for k in KINDS]


@pytest.mark.parametrize("kind", _stopped_progress_params())
def test_progress_line_is_ended_when_the_call_raises(
    kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A call stopped by stop_on_exception still ends its progress line with a newline, so
    the traceback does not start in the middle of it; a callable gets its final snapshot."""
    snapshots = Snapshots()
    with Runner(progress=True) as runner, pytest.raises(StopProcessingError):
        # The second task finishes after 0.15 s, so the line is drawn; the third stops.
        runner.map(ev.EVENTS[kind]["Stop"], [1, 1, 0], [0.0, 0.15, 0.3])
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("\rdone ")
    assert err.endswith("\n")
    with Runner(progress=snapshots) as runner, pytest.raises(StopProcessingError):
        runner.map(ev.EVENTS[kind]["Stop"], [1, 1, 0], [0.0, 0.15, 0.3])
    assert snapshots[-1].done == 3


def test_progress_and_hooks_together(kind: str) -> None:
    """Progress and hooks see the same tasks."""
    snapshots = Snapshots()
    hook = Recorder()
    with Runner(hooks=[hook], progress=snapshots) as runner:
        runner.map(ev.EVENTS[kind]["Flaky"], range(6))
    last = snapshots[-1]
    assert last.done == len(hook.of("on_result")) == 6
    assert last.retried == len(hook.of("on_retry")) == 4
    assert last.failed == sum(r.error for r in hook.of("on_result")) == 2


def test_a_progress_callable_with_a_slow_hook_loses_nothing(kind: str) -> None:
    """Callable progress that is slow never drops a task either."""

    def slow(progress: Progress) -> None:
        time.sleep(0.05)
        seen.append(progress)

    seen: list[Progress] = []
    with Runner(progress=slow) as runner:
        run = runner.map(ev.EVENTS[kind]["Square"], range(40))
    assert [r.content for r in run.results] == [n * n for n in range(40)]
    assert seen[-1].done == 40
