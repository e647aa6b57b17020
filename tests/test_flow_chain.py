"""Maps of chains: flows of one-task pool steps in sequence, whose runs move through their
steps in bulk (``flow/_chain.py``). What a run reports must not depend on that: every test
here that can compares against the general driver on the same inputs."""

from __future__ import annotations

import gc
import pickle
import threading
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import pytest

import chain_events as ce
import flow_run_events as ev
from event_pipeline import (
    EventResult,
    EventRun,
    Flow,
    FlowRun,
    Retry,
    Runner,
    StepRun,
    StepStatus,
)
from event_pipeline.flow import parallel, step
from event_pipeline.flow._chain import ChainMapUnit, _Block
from leaks import leftovers

SUCCEEDED, FAILED, SKIPPED = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED


def general(runner: Runner, flow: Flow) -> Runner:
    """``runner``, made to run ``flow`` through the general driver."""
    runner._program(flow).chain = False
    return runner


def record(run: FlowRun) -> tuple[Any, ...]:
    """Everything a flow run reports except its timings."""
    steps = []
    for s in run.steps:
        results = None
        if s.run is not None:
            results = [
                (r.task_id, r.error, repr(r.content), type(r.exception), r.attempts)
                for r in s.run.results
            ]
            assert s.run.success == (s.status is SUCCEEDED)
        steps.append((
            s.name, s.event_name, s.status, repr(s.value), s.route, s.handled, s.reason,
            s.attempts, s.started is None, s.duration == 0.0 and s.started is None, results,
        ))  # fmt: skip
    return (run.success, repr(run.output), [s.name for s in run.failed], steps)


FLOWS = [
    "Inc |-> Gate |-> Flake |-> Pair",
    "Inc |-> AsyncHalve |-> Inc",
    "Inc -> Label |-> Pair",
    "Gate",
    "Inc |-> Inc#2 |-> Gate |-> Inc#3",
]


@pytest.mark.parametrize("text", FLOWS)
def test_a_chain_reports_what_the_general_driver_reports(text: str) -> None:
    """Successes, (False, value) returns, exceptions, retries, named inputs and a step that
    takes no value: every run, step and task result is the same through either driver."""
    flow = Flow.parse(text.replace("#2", "").replace("#3", ""), ce)
    with Runner() as chain, Runner() as other:
        assert chain._program(flow).chain
        ce.forget_attempts()
        fast = chain.map(flow, range(400), tag="t")
        ce.forget_attempts()
        slow = general(other, flow).map(flow, range(400), tag="t")
    assert [record(r) for r in fast] == [record(r) for r in slow]
    statuses = {s.status for r in fast for s in r.steps}
    if "Gate" in text:
        assert {SUCCEEDED, FAILED, SKIPPED} <= statuses or text == "Gate"
        assert any(not r.success for r in fast)
    if "Flake" in text:
        assert any(s.attempts == 2 for r in fast for s in r.steps)


def test_a_chain_with_hooks_tells_them_what_the_general_driver_does() -> None:
    """Hooks see the same results, runs, steps and flow runs in either driver, and a step's
    result is the very object ``on_result`` was given."""

    class Hook:
        def __init__(self) -> None:
            self.seen: dict[str, list[Any]] = {}
            self.results: dict[str, EventResult] = {}

        def note(self, kind: str, what: Any) -> None:
            self.seen.setdefault(kind, []).append(what)

        def on_retry(self, retry: Retry) -> None:
            self.note("retry", (retry.task_id, retry.attempt, type(retry.exception)))

        def on_result(self, result: EventResult) -> None:
            self.results[result.task_id] = result
            self.note("result", (result.task_id, result.error, repr(result.content)))

        def on_run(self, run: EventRun) -> None:
            self.note("run", (run.event_name, run.success, [r.task_id for r in run.results]))

        def on_step(self, s: StepRun) -> None:
            self.note("step", (s.name, s.status, s.reason))

        def on_flow(self, run: FlowRun) -> None:
            self.note("flow", (run.success, repr(run.output)))

    flow = Flow.parse("Inc |-> Gate |-> Flake |-> Pair", ce)
    fast_hook, slow_hook = Hook(), Hook()
    with Runner(hooks=[fast_hook]) as chain, Runner(hooks=[slow_hook]) as other:
        ce.forget_attempts()
        fast = chain.map(flow, range(200), tag="t")
        ce.forget_attempts()
        general(other, flow).map(flow, range(200), tag="t")
    assert fast_hook.seen.keys() == {"retry", "result", "run", "step", "flow"}
    for kind in fast_hook.seen:
        assert sorted(fast_hook.seen[kind], key=repr) == sorted(slow_hook.seen[kind], key=repr)
    for run in fast:
        for s in run.steps:
            if s.run is not None:
                (result,) = s.run.results
                assert result is fast_hook.results[result.task_id]


def test_a_chain_under_a_progress_display_counts_every_task() -> None:
    """With a progress callable (which watches every result), a chain reports the same
    runs, and the last snapshot counts each task that ran once."""
    flow = Flow.parse("Inc |-> Gate |-> Inc", ce)
    snapshots: list[Any] = []
    with Runner(progress=snapshots.append) as watched, Runner() as other:
        runs = watched.map(flow, range(100))
        plain = other.map(flow, range(100))
    assert [record(r) for r in runs] == [record(r) for r in plain]
    ran = sum(1 for r in runs for s in r.steps if s.run is not None)
    last = snapshots[-1]
    assert (last.done, last.in_flight) == (ran, 0)
    assert last.failed == sum(1 for r in runs if not r.success)


def test_a_chain_only_takes_flows_it_can_run() -> None:
    """Groups, fan-out, tolerated or inline steps and stopping steps go to the general
    driver; sequences of pool steps (one step too) to the chain."""
    chains = ["Inc", "Inc |-> Gate", "Inc -> Label |-> Pair"]
    others = ["Inc |-> Gate?", "{Inc || Gate}", "Inc (0 -> Gate)", "Inc |=> Gate"]
    with Runner() as runner:
        for text in chains:
            assert runner._program(Flow.parse(text, ce)).chain, text
        for text in others:
            assert not runner._program(Flow.parse(text, ce)).chain, text
        assert not runner._program(step(ce.Inc).then(ev.Value)).chain  # an inline step
        assert not runner._program(step(ev.IncThread).then(ev.StopperInline)).chain
        assert not runner._program(parallel(ce.Inc, ce.Gate)).chain


def test_steps_of_a_chain_run_are_made_once_whoever_reads_them() -> None:
    """A chain's run makes its StepRuns when first read: threads reading at once get the
    same records, and a pickled run carries them."""
    flow = Flow.parse("Inc |-> Gate", ce)
    with Runner() as runner:
        runs = runner.map(flow, range(30))
    run = runs[10]
    barrier = threading.Barrier(8)
    got: list[list[StepRun]] = []

    def read() -> None:
        barrier.wait()
        got.append(run.steps)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and all(steps is got[0] for steps in got)
    assert run["Gate"] is got[0][1]
    assert run["Gate"].reason == "Gate failed: ValueError: eleven divides 11"
    again = pickle.loads(pickle.dumps(runs[13]))  # Gate refused 14, unread until now
    assert record(again) == record(runs[13])
    assert again.duration == runs[13].duration
    assert repr(runs[13]).startswith("FlowRun(failure, 2 steps: 1 succeeded, 1 failed")
    assert runs[13]["Gate"].reason == "Gate failed: returned (False, 'no 14')"


def test_a_chain_run_times_its_steps_one_after_another() -> None:
    """Each step starts when the one before it ended, within the run's duration."""
    flow = Flow.parse("Inc |-> Nap |-> Inc", ce)
    with Runner() as runner:
        runs = runner.map(flow, [0.01, 0.02, 0.0])
    for run in runs:
        first, nap, last = run.steps
        assert first.started == 0.0
        assert nap.started == pytest.approx(first.started + first.duration)
        assert last.started == pytest.approx(nap.started + nap.duration)
        assert nap.duration >= nap.value - 1e-3
        assert run.duration == pytest.approx(last.started + last.duration)
        assert nap.run is not None and nap.run.results[0].duration == nap.duration


def test_a_chain_imap_holds_only_a_window_of_runs() -> None:
    """Streaming a chain keeps the runs of at most a window in memory, however long the
    input: finished blocks of runs are let go."""
    window = 32
    read = 0

    def numbers() -> Iterator[int]:
        nonlocal read
        for x in range(3000):
            read += 1
            yield x

    flow = Flow.parse("Inc |-> Inc", ce)
    blocks = []
    with Runner(window=window) as runner:
        for got, run in enumerate(runner.imap(flow, numbers()), start=1):
            assert run.output == got + 1
            assert read - got <= window
            if got % 500 == 0:
                blocks.append(sum(type(o) is _Block for o in gc.get_objects()))
    assert max(blocks) <= window, blocks


def test_a_worker_death_in_a_chain_is_charged_to_its_run_alone() -> None:
    """A step that kills its process fails its own run (later steps skipped); every other
    run of the map succeeds, each step charged one attempt."""
    flow = Flow.parse("IncProc |-> CrashProc |-> IncProc", ce)
    with Runner() as runner:
        runs = runner.map(flow, range(40))
    bad = runs[12]
    assert not bad.success
    assert [s.status for s in bad.steps] == [SUCCEEDED, FAILED, SKIPPED]
    crash = bad.steps[1]
    assert crash.run is not None
    assert isinstance(crash.run.results[0].exception, BrokenProcessPool)
    assert crash.attempts == 1 and crash.reason and "BrokenProcessPool" in crash.reason
    assert bad.steps[2].reason == "upstream 'CrashProc' failed"
    for x, run in enumerate(runs):
        if x != 12:
            assert run.success and run.output == x + 2
            assert [s.attempts for s in run.steps] == [1, 1, 1]


def test_a_timed_out_step_of_a_chain_ends_its_run() -> None:
    """A step past its timeout fails its run with a TimeoutError; the others go on."""
    flow = Flow.parse("Nap ~ 0.2 |-> Inc", ce)
    with Runner() as runner:
        runs = runner.map(flow, [0.0, 2.0, 0.01])
    assert [r.success for r in runs] == [True, False, True]
    late = runs[1].steps[0]
    assert late.status is FAILED and late.run is not None
    assert isinstance(late.run.results[0].exception, TimeoutError)
    assert runs[1].steps[1].status is SKIPPED
    assert runs[2].output == 1.01


def test_a_keyboard_interrupt_in_a_chain_propagates_and_leaves_nothing_behind() -> None:
    """Ctrl-C raised by a step of a chain propagates as itself; shutdown leaves no thread."""
    before = set(threading.enumerate())
    flow = Flow.parse("Inc |-> Halt |-> Inc", ce)
    runner = Runner()
    with pytest.raises(KeyboardInterrupt):
        runner.map(flow, range(10))
    assert runner.map(flow, [5, 6])[0].output == 7  # the runner goes on
    runner.shutdown()
    assert leftovers(before) == ([], [])


def test_chain_map_unit_is_what_runs_a_chain(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain driver, not the general one, runs a map of a chain."""
    made: list[ChainMapUnit] = []
    original = ChainMapUnit.__init__

    def spy(self: ChainMapUnit, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ChainMapUnit, "__init__", spy)
    with Runner() as runner:
        runs = runner.map(Flow.parse("Inc |-> Inc", ce), range(5))
        runner.run(Flow.parse("Inc |-> Inc", ce), 1)
    assert [r.output for r in runs] == [2, 3, 4, 5, 6]
    assert len(made) == 1 and not made[0].blocks and made[0].finished


def test_a_value_that_cannot_reach_a_process_step_fails_its_run_alone() -> None:
    """A piped value that cannot be pickled fails the process step of its own run (with a
    message that says so, uncharged); the runs batched with it go on."""
    flow = Flow.parse("Opaque |-> IncProc", ce)
    with Runner() as runner:
        runs = runner.map(flow, range(8))
    assert [r.success for r in runs] == [x != 3 for x in range(8)]
    assert [r.output for r in runs if r.success] == [x + 1 for x in range(8) if x != 3]
    step = runs[3]["IncProc"]
    assert step.status is FAILED and step.run is not None
    assert "cannot be sent to a worker process" in str(step.run.results[0].exception)
    assert step.attempts == 0  # process() never ran


def test_threads_sharing_a_runner_map_chains_without_crossing_values() -> None:
    """Four threads map a chain on one runner at once; each gets its own runs, in order."""
    flow = Flow.parse("Inc |-> Inc |-> Inc", ce)
    outputs: dict[int, list[Any]] = {}
    errors: list[BaseException] = []
    with Runner() as runner:

        def work(number: int) -> None:
            try:
                runs = runner.map(flow, range(number * 1000, number * 1000 + 300))
                outputs[number] = [r.output for r in runs]
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    assert errors == [] and not any(t.is_alive() for t in threads)
    for number in range(4):
        assert outputs[number] == [x + 3 for x in range(number * 1000, number * 1000 + 300)]


def test_reading_steps_may_read_other_runs_steps_from_a_users_repr() -> None:
    """A failed step's reason shows its value's repr; a repr that reads another chain run's
    steps (made lazily too) neither deadlocks nor changes what either run reports."""
    flow = Flow.parse("Inc |-> Refuse", ce)
    with Runner() as runner:
        first, second = runner.map(flow, [1, 2])
    ce.OTHER[:] = [second]
    reasons: list[str | None] = []
    reader = threading.Thread(
        target=lambda: reasons.append(first["Refuse"].reason), daemon=True
    )
    reader.start()
    reader.join(timeout=10)
    ce.OTHER.clear()
    assert not reader.is_alive(), "reading steps deadlocked"
    assert reasons == ["Refuse failed: returned (False, Sneaky([2]))"]
    assert [s.status for s in second.steps] == [SUCCEEDED, FAILED]


def test_a_refused_value_whose_repr_raises_still_gives_a_reason() -> None:
    """(False, value) with a value whose repr raises: every run is reported, chain or not,
    with a reason naming the value's type."""
    expected = "RefuseUnshowable failed: returned (False, <Unshowable whose repr failed>)"
    chain = Flow.parse("Inc |-> RefuseUnshowable", ce)
    other = Flow.parse("Inc |-> RefuseUnshowable?", ce)  # tolerated: the general driver
    with Runner() as runner:
        assert not runner._program(other).chain
        for flow in (chain, other):
            runs = runner.map(flow, range(3))
            assert [r["RefuseUnshowable"].reason for r in runs] == [expected] * 3
            single = runner.run(flow, 5)
            assert single["RefuseUnshowable"].reason == expected


def test_a_route_whose_repr_raises_fails_its_step_with_a_reason() -> None:
    """A route that is no int and cannot be shown fails the step (not the call)."""
    flow = Flow.parse("RouteUnshowable (0 |-> Inc, 1 |-> Inc)", ce)
    with Runner() as runner:
        run = runner.run(flow, 1)
    step = run["RouteUnshowable"]
    assert step.status is FAILED
    assert step.reason == (
        "RouteUnshowable.route must return an int from 0 to 9, got <Unshowable whose repr "
        "failed>"
    )
