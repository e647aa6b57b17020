"""Running flows (SPEC §11.4-§11.7): sequences, pipes, fan-out, parallel groups, failures,
branches, the up-front input check, attempts, stopping, scale, map/imap, threads and records."""

from __future__ import annotations

import os
import pickle
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flow_events
import flow_run_events as ev
from event_pipeline import (
    EventExecutionEvaluationState,
    EventRun,
    Flow,
    FlowRun,
    ImproperlyConfigured,
    Runner,
    StepRun,
    StepStatus,
    StopProcessingError,
)
from event_pipeline._event import settings_of
from event_pipeline.flow import each, parallel, pipe, step
from leaks import leftovers

SUCCEEDED, FAILED, SKIPPED = StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED
NOT_TAKEN, CANCELLED = StepStatus.NOT_TAKEN, StepStatus.CANCELLED
ANY = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS


@pytest.fixture(scope="module")
def shared() -> Iterator[Runner]:
    """One runner for the module, so its thread and process pools start once."""
    runner = Runner()
    yield runner
    runner.shutdown()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key for this test's traces in flow_run_events, cleared afterwards."""
    name = f"{request.node.name}:{time.monotonic_ns()}"
    ev.CALLS.pop("record", None)
    ev.CALLS.pop("route", None)
    yield name
    for table in (ev.ATTEMPTS, ev.CALLS):
        for k in [k for k in table if str(k).startswith(name)]:
            del table[k]
    for k in [k for k in ev.SIGNALS if k.startswith(name)]:
        ev.SIGNALS[k].set()  # nothing stays blocked on a signal of a failed test
    ev.BARRIERS.pop(name, None)


def check(run: FlowRun, flow: Flow) -> FlowRun:
    """Every step of ``run`` has exactly one status and its record is consistent."""
    assert isinstance(run, FlowRun)
    assert len(run.steps) == flow.step_count
    assert len({s.name for s in run.steps}) == len(run.steps)
    task_ids: list[str] = []
    for s in run.steps:
        assert isinstance(s, StepRun)
        assert isinstance(s.status, StepStatus)
        if s.status in (SKIPPED, NOT_TAKEN):
            assert (s.run, s.value, s.attempts, s.started, s.duration) == (None, None, 0, None, 0.0)
            assert s.reason
        if s.status is SUCCEEDED:
            assert s.run is not None and s.run.success and s.reason is None
        if s.status is FAILED:
            assert s.reason
        if s.run is not None:
            assert s.status in (SUCCEEDED, FAILED)
            assert s.attempts == sum(r.attempts for r in s.run.results)
            assert s.started is not None and s.started >= 0
            task_ids.extend(r.task_id for r in s.run.results)
    assert len(task_ids) == len(set(task_ids)), "a task result appears twice"
    assert run.failed == [s for s in run.steps if s.status is FAILED and not s.handled]
    if run.failed:
        assert not run.success
    return run


def statuses(run: FlowRun) -> dict[str, StepStatus]:
    return {s.name: s.status for s in run.steps}


def overlap(*intervals: tuple[float, float, Any]) -> bool:
    """Whether every interval (start, end, _) shares some instant with every other."""
    return max(i[0] for i in intervals) < min(i[1] for i in intervals)


# -- §11.4 sequences, pipes and fan-out --------------------------------------------------------


def test_sequence_runs_in_order_and_then_passes_nothing(shared: Runner) -> None:
    """`A -> B` runs B after A finished and gives B no argument."""
    flow = step(ev.Value).then(ev.After)
    run = check(shared.run(flow, 5), flow)
    assert statuses(run) == {"Value": SUCCEEDED, "After": SUCCEEDED}
    assert run.success and run.output == "after"
    assert run["Value"].value == 5
    first, then = run["Value"], run["After"]
    assert first.started is not None and then.started is not None
    assert then.started >= first.started + first.duration - 1e-6


def test_step_results_on_a_pool_have_task_ids_unique_to_their_call(shared: Runner) -> None:
    """A step that ran on a pool and succeeded has the same kind of task id as one that
    failed or ran inline: the call's prefix, then the step's own part."""
    flow = Flow.parse("Quick |-> Quick", ev)
    ids = []
    for key in ("a", "b"):
        run = check(shared.run(flow, key), flow)
        for record in run.steps:
            assert record.run is not None
            (result,) = record.run.results
            ids.append(result.task_id)
    assert len(set(ids)) == len(ids), ids
    assert all(":" in task_id for task_id in ids)


def test_pipe_gives_the_value_as_first_argument(shared: Runner) -> None:
    """`A |-> B` gives A's value to B as its first positional argument."""
    flow = Flow.parse("Value |-> Sink |-> Sink", ev)
    run = check(shared.run(flow, 5), flow)
    assert run.output == ("sink", ("sink", 5))
    assert [s.value for s in run.steps] == [5, ("sink", 5), ("sink", ("sink", 5))]


def test_each_fans_out_with_results_in_input_order(shared: Runner) -> None:
    """`A |=> B` runs B once per item; its value is the list of contents in input order."""
    flow = Flow.parse("Items |=> SlowSquare", ev)
    run = check(shared.run(flow, 8), flow)
    fanned = run["SlowSquare"]
    assert fanned.status is SUCCEEDED
    assert fanned.value == [x * x for x in range(8)]
    assert fanned.run is not None and len(fanned.run.results) == 8
    assert [r.content for r in fanned.run.results] == fanned.value
    assert fanned.attempts == 8
    assert run.output == fanned.value


@pytest.mark.parametrize(
    ("event", "status"), [(ev.SlowSquare, FAILED), (ev.LenientSquare, SUCCEEDED)]
)
def test_each_is_decided_by_the_events_evaluation_state(
    shared: Runner, event: type[ev.SlowSquare], status: StepStatus
) -> None:
    """A fan-out with one failed item is judged by the event's own evaluation state."""
    flow = step(ev.Items).then(each(event), ev.After)
    run = check(shared.run(flow, [1, -2, 3]), flow)
    fanned = run[event.__name__]
    assert fanned.status is status
    assert fanned.value == [1, "negative -2", 9]
    assert run["After"].status is (SUCCEEDED if status is SUCCEEDED else SKIPPED)
    assert run.success is (status is SUCCEEDED)


def test_each_over_a_non_iterable_fails_the_step_with_a_type_error(shared: Runner) -> None:
    """`|=>` over a value that is not iterable fails that step with a TypeError naming it,
    and its arms are chosen by code 0."""
    flow = Flow.parse("Items |=> SlowSquare (0 |-> Sink, 1 -> After)", ev)
    run = check(shared.run(flow, 2.5), flow)
    fanned = run["SlowSquare"]
    assert fanned.status is FAILED and fanned.run is None
    assert isinstance(fanned.value, TypeError)
    assert "SlowSquare" in str(fanned.value) and "SlowSquare" in (fanned.reason or "")
    assert run["Sink"].status is SUCCEEDED and run["Sink"].value == ("sink", fanned.value)
    assert run["After"].status is NOT_TAKEN
    assert not run.success


def test_fan_out_over_a_group_and_pipes_into_a_block(shared: Runner) -> None:
    """`|=>` before a group fans out each member; `|->` before a block feeds its first step;
    a fanned-out list pipes on as one value."""
    group = Flow.parse("Items |=> {SlowSquare || TwiceThread}", ev)
    assert check(shared.run(group, 3), group).output == ([0, 1, 4], [0, 2, 4])
    block = Flow.parse("Value |-> {Sink -> After}", ev)
    run = check(shared.run(block, 3), block)
    assert run["Sink"].value == ("sink", 3) and run.output == "after"
    onward = Flow.parse("Items |=> SlowSquare |-> Sink", ev)
    assert check(shared.run(onward, 3), onward).output == ("sink", [0, 1, 4])


# -- §11.5 values ------------------------------------------------------------------------------


def test_group_value_is_a_tuple_in_declaration_order(shared: Runner) -> None:
    """A group's value is a tuple of its members' values in declaration order, even when
    the later member finishes first, for two members as for three."""
    three = Flow.parse("Value |-> {SlowSquare || TwiceThread || tagged}", ev)
    run = check(shared.run(three, 3), three)
    assert run.output == (9, 6, ("untagged", 3))
    two = Flow.parse("Value |-> {SlowSquare || TwiceThread} |-> Sink", ev)
    run = check(shared.run(two, 3), two)
    assert run["Sink"].value == ("sink", (9, 6))


def test_a_branch_has_the_value_of_its_last_node_that_ran(shared: Runner) -> None:
    """A branch's value is its arm's when one ran, else its subject's."""
    taken = Flow.parse("Value (1 |-> Sink)", ev)
    assert check(shared.run(taken, 5), taken).output == ("sink", 5)
    not_taken = Flow.parse("Value (0 |-> Sink)", ev)
    run = check(shared.run(not_taken, 5), not_taken)
    assert run.output == 5 and run.success
    assert run["Sink"].status is NOT_TAKEN


# -- §11.4 parallel members run concurrently ---------------------------------------------------


def test_parallel_members_at_the_head_overlap(shared: Runner, key: str) -> None:
    """Thread-pool members at the head of a flow run at the same time (they meet at a barrier)."""
    ev.BARRIERS[key] = threading.Barrier(2, timeout=ev.WAIT)
    flow = parallel(ev.MeetA, ev.MeetB)
    run = check(shared.run(flow, key), flow)
    assert run.success, run.summary()
    a, b = run.output
    assert overlap(a, b) and a[2] != b[2]


def test_parallel_members_after_a_step_overlap(shared: Runner, key: str) -> None:
    """Members piped from a step both receive its value and run at the same time."""
    ev.BARRIERS[key] = threading.Barrier(2, timeout=ev.WAIT)
    flow = Flow.parse("Value |-> MeetA || MeetB", ev)
    run = check(shared.run(flow, key), flow)
    assert run.success, run.summary()
    a, b = run.output
    assert overlap(a, b) and a[2] != b[2]


def test_parallel_members_of_different_executor_classes_overlap(
    shared: Runner, tmp_path: Path
) -> None:
    """A thread-pool member and a process-pool member run at the same time."""
    flow = Flow.parse("Value |-> {MeetInThread || MeetInProcess}", ev)
    run = check(shared.run(flow, str(tmp_path)), flow)
    assert run.success, run.summary()
    in_thread, in_process = run.output
    assert overlap(in_thread, in_process)
    assert in_thread[2] == os.getpid() != in_process[2]


def test_inline_members_run_in_the_calling_thread_one_after_another(shared: Runner) -> None:
    """DefaultExecutor members run inline, in the calling thread, one after another."""
    flow = parallel(ev.Interval, ev.Interval2)
    run = check(shared.run(flow, "k"), flow)
    first, second = run.output
    assert first[2] == second[2] == threading.get_ident()
    assert first[1] <= second[0]


def test_a_pool_member_declared_before_an_inline_member_is_running_with_it(
    shared: Runner, tmp_path: Path
) -> None:
    """Members are submitted in declaration order: a thread member declared before an inline
    one has started while the inline one runs."""
    flow = parallel(ev.MeetInThread, ev.InlineWaitsForThread)
    run = check(shared.run(flow, str(tmp_path)), flow)
    assert run.success, run.summary()


@pytest.mark.parametrize(
    "text",
    [
        "BacksOff || {Quick |-> Quick |-> Quick}",
        "BacksOffInline || {QuickInline |-> QuickInline}",
    ],
)
def test_a_step_backing_off_does_not_delay_an_independent_branch(
    shared: Runner, key: str, text: str
) -> None:
    """A step waiting 1 s for its retry (on a one-worker pool, or inline) holds nothing: the
    other branch finishes long before the retry starts."""
    flow = Flow.parse(text, ev)
    run = check(shared.run(flow, key), flow)
    assert run.success, run.summary()
    first, retry = ev.ATTEMPTS[key]
    assert retry - first >= 0.95
    quick_ends = ev.CALLS[key]
    assert len(quick_ends) == text.count("Quick")
    assert max(quick_ends) < first + 0.5, "the independent branch waited for the backoff"
    last = run.steps[-1]
    assert last.started is not None and last.started + last.duration < 0.5
    assert run.steps[0].attempts == 2 and run.steps[0].duration >= 0.95


# -- §11.5 failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("failing", [ev.Boom, ev.Refuse])
def test_a_failure_skips_what_depends_on_it(shared: Runner, failing: type[Any]) -> None:
    """A raised exception and a (False, v) return alike end the sequence: later steps are
    SKIPPED naming the failed step, and the flow fails."""
    flow = step(ev.Value).then(failing, ev.After, ev.Nothing)
    run = check(shared.run(flow, 1), flow)
    name = failing.__name__
    assert statuses(run) == {"Value": SUCCEEDED, name: FAILED, "After": SKIPPED, "Nothing": SKIPPED}
    assert run["After"].reason == f"upstream '{name}' failed"
    assert run["Nothing"].reason == f"upstream '{name}' failed"
    assert run.failed == [run[name]] and not run.success
    assert run[name].run is not None and not run[name].run.success
    assert run[name].reason and name in run[name].reason
    assert run.output is run[name].value  # the value of the last node that ran


def test_running_siblings_of_a_failed_member_finish_and_are_recorded(shared: Runner) -> None:
    """When one member of a group fails, a running sibling still finishes and is recorded,
    and what follows the group is skipped."""
    flow = Flow.parse("{Boom || SlowSquare} -> After", ev)
    run = check(shared.run(flow, 3), flow)
    assert statuses(run) == {"Boom": FAILED, "SlowSquare": SUCCEEDED, "After": SKIPPED}
    assert run["SlowSquare"].value == 9
    assert run["After"].reason == "upstream 'Boom' failed"


def test_a_failure_inside_a_block_skips_the_rest_of_it_and_what_follows(shared: Runner) -> None:
    """A failure inside a `{...}` block skips the rest of the block and what follows it, each
    naming the failed step."""
    flow = Flow.parse("{Value -> Boom -> Nothing} -> After", ev)
    run = check(shared.run(flow, 1), flow)
    assert statuses(run) == {
        "Value": SUCCEEDED,
        "Boom": FAILED,
        "Nothing": SKIPPED,
        "After": SKIPPED,
    }
    assert run["Nothing"].reason == run["After"].reason == "upstream 'Boom' failed"


def test_an_optional_block_tolerates_its_failure(shared: Runner) -> None:
    """`{A -> B}?`: A fails handled, B is skipped, and what follows the block runs."""
    flow = Flow.parse("{Boom -> After}? -> Nothing", ev)
    run = check(shared.run(flow, 1), flow)
    assert statuses(run) == {"Boom": FAILED, "After": SKIPPED, "Nothing": SUCCEEDED}
    assert run["Boom"].handled and run.success and run.output == "nothing"


@pytest.mark.parametrize(
    "flow",
    [Flow.parse("Boom? -> After", ev), step(ev.Refuse).optional().then(ev.After)],
    ids=["text", "python"],
)
def test_an_optional_failure_is_tolerated(shared: Runner, flow: Flow) -> None:
    """`A?`/`.optional()`: A stays FAILED with handled=True, the flow goes on and succeeds."""
    run = check(shared.run(flow, 1), flow)
    failed = run.steps[0]
    assert failed.status is FAILED and failed.handled
    assert run["After"].status is SUCCEEDED
    assert run.success and run.failed == []


def test_an_any_group_tolerates_a_failed_member(shared: Runner) -> None:
    """In a `[any]` group that succeeds, a failed member is handled and the flow succeeds."""
    flow = Flow.parse("{Boom || Value}[any] -> After", ev)
    run = check(shared.run(flow, 1), flow)
    assert run["Boom"].status is FAILED and run["Boom"].handled
    assert run["After"].status is SUCCEEDED and run.success
    strict = Flow.parse("{Boom || Value}[all] -> After", ev)
    run = check(shared.run(strict, 1), strict)
    assert not run["Boom"].handled and run["After"].status is SKIPPED and not run.success


def test_a_group_of_failures_fails_even_with_any(shared: Runner) -> None:
    """A `[any]` group whose members all failed fails, and its members are not handled."""
    flow = Flow.parse("{Boom || Refuse}[any] -> After", ev)
    run = check(shared.run(flow, 1), flow)
    assert not run["Boom"].handled and not run["Refuse"].handled
    assert run["After"].status is SKIPPED and not run.success


# -- §11.5 branches ----------------------------------------------------------------------------


def test_the_default_route_takes_arm_1_on_success(shared: Runner) -> None:
    """By default a succeeded step routes to 1; arm 0's steps are NOT_TAKEN."""
    flow = Flow.parse("Value (0 -> After, 1 -> Nothing) -> Nothing", ev)
    run = check(shared.run(flow, 1), flow)
    assert statuses(run) == {
        "Value": SUCCEEDED,
        "After": NOT_TAKEN,
        "Nothing": SUCCEEDED,
        "Nothing#2": SUCCEEDED,
    }
    assert run["Value"].route == 1 and run.success


@pytest.mark.parametrize("failing", [ev.Boom, ev.Refuse])
def test_arm_0_handles_a_failure_but_the_flow_still_fails(
    shared: Runner, failing: type[Any]
) -> None:
    """A failure routed to arm 0 runs it and what follows the branch, yet success stays False
    and the step stays unhandled in `failed`."""
    flow = step(failing).branch({0: ev.After, 1: ev.Nothing}).then(ev.Nothing)
    run = check(shared.run(flow), flow)
    name = failing.__name__
    assert statuses(run) == {
        name: FAILED,
        "After": SUCCEEDED,
        "Nothing": NOT_TAKEN,
        "Nothing#2": SUCCEEDED,
    }
    assert run[name].route == 0 and not run[name].handled
    assert run.failed == [run[name]] and not run.success


def test_arm_0_with_an_optional_step_lets_the_flow_succeed(shared: Runner) -> None:
    """A failure routed to arm 0 of an optional step leaves the flow successful."""
    flow = Flow.parse("Boom? (0 -> After)", ev)
    run = check(shared.run(flow), flow)
    assert run["Boom"].handled and run["After"].status is SUCCEEDED and run.success


@pytest.mark.parametrize(
    ("failing", "expected"),
    [(ev.Boom, ValueError), (ev.Refuse, "refused")],
)
def test_arm_0_piped_receives_the_exception_or_the_failed_value(
    shared: Runner, failing: type[Any], expected: Any
) -> None:
    """In `A (0 |-> H)`, H receives A's exception, or v when A returned (False, v)."""
    flow = step(failing).branch({0: pipe(ev.Sink)})
    run = check(shared.run(flow), flow)
    _, received = run["Sink"].value
    if isinstance(expected, type):
        assert isinstance(received, expected) and str(received) == "boom"
        assert received is run[failing.__name__].run.results[0].exception  # type: ignore[union-attr]
    else:
        assert received == expected


def test_a_failure_with_a_route_1_arm_only_stops(shared: Runner) -> None:
    """A failed step whose branch list has no arm 0 stops there (route 0, no arm)."""
    flow = Flow.parse("Boom (1 -> After) -> Nothing", ev)
    run = check(shared.run(flow), flow)
    assert statuses(run) == {"Boom": FAILED, "After": NOT_TAKEN, "Nothing": SKIPPED}
    assert run["Nothing"].reason == "upstream 'Boom' failed"


@pytest.mark.parametrize("code", range(2, 10))
def test_a_custom_route_takes_its_arm(shared: Runner, key: str, code: int) -> None:
    """A `route` classmethod returning 2-9 runs that arm; the others are NOT_TAKEN; it is
    called once, in the calling thread."""
    flow = step(ev.Router).branch({0: ev.After, code: pipe(ev.Sink), 1: ev.Nothing})
    run = check(shared.run(flow, code), flow)
    assert statuses(run) == {
        "Router": SUCCEEDED,
        "After": NOT_TAKEN,
        "Sink": SUCCEEDED,
        "Nothing": NOT_TAKEN,
    }
    assert run["Router"].route == code and run["Sink"].value == ("sink", code)
    assert run["After"].reason and run.success
    assert ev.CALLS["route"] == [(os.getpid(), threading.get_ident(), code)]


def test_route_is_called_in_the_calling_process(shared: Runner, key: str) -> None:
    """The route of a process-pool step runs once, in the calling process."""
    flow = step(ev.RouterInProcess).branch({3: pipe(ev.Sink)})
    run = check(shared.run(flow, 3), flow)
    assert run["Sink"].value == ("sink", 3)
    assert ev.CALLS["route"] == [(os.getpid(), threading.get_ident(), 3)]


@pytest.mark.parametrize("code", range(2, 10))
def test_a_route_with_no_arm_fails_the_step(shared: Runner, key: str, code: int) -> None:
    """A route of 2-9 with no arm fails the step with a reason naming the event and code;
    a failed step's arm is then code 0's, which handles the failure (the flow goes on
    through it and still fails)."""
    flow = step(ev.Router).branch({0: ev.After, 1: ev.Nothing}).then(ev.Nothing)
    run = check(shared.run(flow, code), flow)
    routed = run["Router"]
    assert routed.status is FAILED and not routed.handled
    assert routed.reason and "Router" in routed.reason and str(code) in routed.reason
    assert run["After"].status is SUCCEEDED and run["Nothing"].status is NOT_TAKEN
    assert run["Nothing#2"].status is SUCCEEDED
    assert run.failed == [routed] and not run.success


def test_a_route_with_no_arm_and_no_arm_0_stops_what_follows(shared: Runner, key: str) -> None:
    """With no arm for the code nor for 0, the failed step stops what follows."""
    flow = step(ev.Router).branch({1: ev.Nothing}).then(ev.After)
    run = check(shared.run(flow, 4), flow)
    assert run["Router"].status is FAILED and run["Nothing"].status is NOT_TAKEN
    assert run["After"].status is SKIPPED and not run.success


@pytest.mark.parametrize("code", [True, False, "2", 10, -1, 2.0, None, "raise"])
def test_a_bad_route_fails_the_step_naming_the_event(shared: Runner, key: str, code: Any) -> None:
    """A route that is not an int in 0-9 (a bool, a str, 10...) or that raises fails the
    step with a reason naming the event; what follows does not run."""
    flow = step(ev.Router).branch({1: ev.Nothing}).then(ev.After)
    run = check(shared.run(flow, code), flow)
    routed = run["Router"]
    assert routed.status is FAILED and routed.route is None
    assert routed.reason and "Router" in routed.reason
    if code == "raise":
        assert "LookupError" in routed.reason
    assert run["After"].status is SKIPPED and not run.success
    assert run["After"].reason == "upstream 'Router' failed"
    assert len(ev.CALLS["route"]) == 1


def test_a_block_and_a_group_route_by_their_outcome(shared: Runner) -> None:
    """A branch list on a `{...}` block or a group routes 1 or 0 by its outcome."""
    block = Flow.parse("{Value -> Boom} (0 -> After, 1 -> Nothing)", ev)
    run = check(shared.run(block, 1), block)
    assert run["After"].status is SUCCEEDED and run["Nothing"].status is NOT_TAKEN
    group = Flow.parse("{Value || Boom}[any] (0 -> After, 1 -> Nothing)", ev)
    run = check(shared.run(group, 1), group)
    assert run["After"].status is NOT_TAKEN and run["Nothing"].status is SUCCEEDED
    assert run.success


# -- §11.4 arguments and the up-front check ----------------------------------------------------


def test_a_missing_input_is_reported_before_any_step_runs(shared: Runner, key: str) -> None:
    """A required parameter nothing supplies raises ImproperlyConfigured naming the step, the
    parameter and the inputs given, and no step runs."""
    flow = Flow.parse("Record |-> NeedsTable", ev)
    with pytest.raises(ImproperlyConfigured) as caught:
        shared.run(flow, 1, colour="red")
    message = str(caught.value)
    assert "NeedsTable" in message and "'table'" in message and "'colour'" in message
    with pytest.raises(ImproperlyConfigured, match="inputs given: none"):
        shared.run(flow, 1)
    with pytest.raises(ImproperlyConfigured, match="NeedsTable"):
        shared.map(flow, [1, 2, 3])
    assert ev.CALLS["record"] == []
    assert shared.run(flow, 1, table="t").output == ((1,), "t")
    assert ev.CALLS["record"] == [((1,), {"table": "t"})]  # **kwargs: every input


def test_steps_of_an_arm_not_taken_are_checked_too(shared: Runner, key: str) -> None:
    """The check covers every step, whether its arm will be taken or not."""
    flow = Flow.parse("Record (0 |-> NeedsTable)", ev)
    with pytest.raises(ImproperlyConfigured, match="table"):
        shared.run(flow, 1)
    assert ev.CALLS["record"] == []


@pytest.mark.parametrize(
    ("flow", "args", "words"),
    [
        (step(ev.Nothing), (1,), ["Nothing", "positional"]),
        (Flow.parse("Value |-> Nothing", ev), (1,), ["Nothing", "positional"]),
        (Flow.parse("Record -> Sink", ev), (1,), ["Sink", "'received'"]),
        (step(ev.Value), (), ["Value", "'value'"]),
    ],
    ids=["too-many-args", "pipe-into-nothing", "nothing-piped", "no-args"],
)
def test_binding_mistakes_raise_before_anything_runs(
    shared: Runner, key: str, flow: Flow, args: tuple[Any, ...], words: list[str]
) -> None:
    """Too many positional arguments, a pipe into a step with no positional parameter, or a
    missing argument raise ImproperlyConfigured and nothing runs."""
    with pytest.raises(ImproperlyConfigured) as caught:
        shared.run(flow, *args)
    for word in words:
        assert word in str(caught.value)
    assert ev.CALLS["record"] == []


def test_named_inputs_reach_the_steps_that_declare_them(shared: Runner) -> None:
    """Named inputs go to steps declaring them and all to `**kwargs` steps, never to the piped
    parameter nor to steps that do not declare them."""
    flow = Flow.parse("Value |-> {Piped || tagged} -> {TakesAll || Nothing}", ev)
    inputs = {"record": "named", "table": "t", "tag": "x"}
    run = check(shared.run(flow, 5, **inputs), flow)
    assert run["Value"].value == 5
    assert run["Piped"].value == (5, "t")
    assert run["tagged"].value == ("x", 5)
    assert run["TakesAll"].value == inputs
    assert run["Nothing"].value == "nothing"
    assert run.success


# -- §11.2 attempts ----------------------------------------------------------------------------


def test_attempts_retries_an_event_without_a_policy_and_leaves_it_untouched(
    shared: Runner, key: str
) -> None:
    """`step(E, attempts=3)` retries an event that has no policy, and E is not modified."""
    def snapshot() -> tuple[dict[str, Any], Any]:
        # Another test reassigning a setting anywhere bumps the validation generation.
        own = {k: v for k, v in vars(ev.Flappy).items() if k != "_event_pipeline_settings"}
        return own, settings_of(ev.Flappy)._replace(generation=0)

    before = snapshot()
    flow = step(ev.Flappy, attempts=3)
    run = check(shared.run(flow, key, 3), flow)
    assert run.success and run["Flappy"].attempts == 3 and run.output == 3
    assert snapshot() == before
    assert ev.Flappy.retry_policy is None
    alone = shared.run(ev.Flappy, key + ":alone", 2)  # the event itself still tries once
    assert not alone.success and alone.results[0].attempts == 1


def test_attempts_in_the_text_form_override_the_events_own_policy(shared: Runner, key: str) -> None:
    """`E * 4` gives four attempts to an event whose own policy allows two, for that step only."""
    policy = ev.Stubborn.retry_policy
    flow = Flow.parse("Stubborn * 4 -> After", ev)
    run = check(shared.run(flow, key, 4), flow)
    assert run["Stubborn"].status is SUCCEEDED and run["Stubborn"].attempts == 4
    assert ev.Stubborn.retry_policy is policy and policy.max_attempts == 2
    alone = shared.run(ev.Stubborn, key + ":alone", 4)
    assert not alone.success and alone.results[0].attempts == 2


# -- §11.7 a flow cannot begin with pipe or each -----------------------------------------------


@pytest.mark.parametrize("flow", [pipe(ev.Value), each(ev.Value), pipe(ev.Value).then(ev.After)])
def test_a_flow_cannot_begin_with_pipe_or_each(shared: Runner, flow: Flow) -> None:
    """Running a flow that begins with pipe/each raises ValueError."""
    with pytest.raises(ValueError, match=r"pipe|each"):
        shared.run(flow, 1)


# -- §11.5 / §11.7 stopping --------------------------------------------------------------------


def test_stop_on_exception_raises_with_a_partial_flow_run(shared: Runner, key: str) -> None:
    """A stop_on_exception step raises StopProcessingError without waiting: the stopping step
    is FAILED with its partial EventRun, a running one CANCELLED, the rest SKIPPED."""
    ev.SIGNALS[key + ":started"] = threading.Event()
    ev.SIGNALS[key + ":release"] = threading.Event()
    flow = Flow.parse("{Stopper || Hold} -> After", ev)
    try:
        with pytest.raises(StopProcessingError) as caught:
            shared.run(flow, key)
        assert not ev.SIGNALS[key + ":release"].is_set()  # Hold was not waited for
    finally:
        ev.SIGNALS[key + ":release"].set()
    run = caught.value.run
    assert isinstance(run, FlowRun) and not run.success and run.output is None
    assert statuses(run) == {"Stopper": FAILED, "Hold": CANCELLED, "After": SKIPPED}
    stopper = run["Stopper"]
    assert isinstance(stopper.run, EventRun) and not stopper.run.success
    assert isinstance(caught.value.__cause__, RuntimeError)
    assert str(caught.value.__cause__) == "stop here"
    assert run["Hold"].run is None and run["After"].run is None


def test_stop_on_exception_inline(shared: Runner) -> None:
    """An inline stop_on_exception step stops the flow; steps before it keep their record."""
    flow = step(ev.Value).then(ev.StopperInline, ev.After)
    with pytest.raises(StopProcessingError) as caught:
        shared.run(flow, 1)
    run = caught.value.run
    assert statuses(run) == {"Value": SUCCEEDED, "StopperInline": FAILED, "After": SKIPPED}
    assert run["StopperInline"].run is not None and run.output is None
    assert isinstance(caught.value.__cause__, RuntimeError)


@pytest.mark.parametrize("event", [ev.Interrupt, ev.InterruptInThread])
def test_keyboard_interrupt_propagates_as_itself(shared: Runner, event: type[Any]) -> None:
    """A KeyboardInterrupt in a step propagates out of the run as itself."""
    flow = step(ev.Value).then(event, ev.After)
    with pytest.raises(KeyboardInterrupt):
        shared.run(flow, 1)
    assert shared.run(flow.items[0], 2).output == 2  # the runner still works


# -- scale -------------------------------------------------------------------------------------


def test_a_5000_step_chain_parses_and_runs() -> None:
    """A 5,000-step text chain parses and runs in a few seconds."""
    text = " |-> ".join(["IncInline"] * 5000)
    started = time.monotonic()
    flow = Flow.parse(text, ev)
    with Runner() as runner:
        run = runner.run(flow, 0)
    elapsed = time.monotonic() - started
    assert run.success and run.output == 5000
    assert len(run.steps) == 5000 and run.steps[-1].name == "IncInline#5000"
    assert elapsed < 10, elapsed


def test_map_runs_many_inputs_in_input_order(shared: Runner) -> None:
    """`runner.map(flow, ...)` returns one FlowRun per input, in input order."""
    flow = Flow.parse("IncThread |-> SlowSquare", ev)
    runs = shared.map(flow, range(60))
    assert isinstance(runs, list) and all(isinstance(r, FlowRun) for r in runs)
    assert [r.output for r in runs] == [(x + 1) * (x + 1) for x in range(60)]


def test_map_zips_iterables_and_gives_inputs_to_every_run(shared: Runner) -> None:
    """Positional iterables are zipped and named inputs go to every flow run."""
    flow = Flow.parse("Piped", ev)
    runs = shared.map(flow, ["a", "b", "c"], [1, 2], tag="ignored")
    assert [r.output for r in runs] == [("a", 1), ("b", 2)]


def test_imap_streams_in_order_with_a_bounded_window() -> None:
    """`runner.imap(flow, ...)` yields in input order and reads at most a window ahead."""
    window = 4
    read = 0

    def numbers() -> Iterator[int]:
        nonlocal read
        for x in range(200):
            read += 1
            yield x

    flow = Flow.parse("IncThread |-> SlowSquare", ev)
    leads = []
    with Runner(window=window) as runner:
        outputs = []
        for got, run in enumerate(runner.imap(flow, numbers()), start=1):
            leads.append(read - got)
            outputs.append(run.output)
    assert outputs == [(x + 1) * (x + 1) for x in range(200)]
    assert max(leads) <= window, max(leads)


def test_imap_closed_early_leaves_the_runner_usable(shared: Runner) -> None:
    """Closing an imap over a flow early stops reading its input and the runner goes on."""
    read = 0

    def numbers() -> Iterator[int]:
        nonlocal read
        for x in range(100_000):
            read += 1
            yield x

    flow = Flow.parse("IncThread |-> SlowSquare", ev)
    stream = shared.imap(flow, numbers())
    assert [next(stream).output for _ in range(3)] == [1, 4, 9]
    stream.close()
    assert read < 100_000
    assert shared.run(flow, 1).output == 4


def test_map_and_imap_of_a_flow_need_an_iterable(shared: Runner) -> None:
    """`map`/`imap` of a flow without an iterable is a TypeError."""
    flow = step(ev.Value)
    with pytest.raises(TypeError):
        shared.map(flow)
    with pytest.raises(TypeError):
        list(shared.imap(flow))


def test_stop_on_exception_in_map_raises_with_a_partial_flow_run(shared: Runner) -> None:
    """A stopping step in `map` over a flow raises StopProcessingError carrying a FlowRun."""
    flow = step(ev.Value).then(ev.StopperInline, ev.After)
    with pytest.raises(StopProcessingError) as caught:
        shared.map(flow, [1, 2, 3])
    run = caught.value.run
    assert isinstance(run, FlowRun) and run.output is None
    assert statuses(run) == {"Value": SUCCEEDED, "StopperInline": FAILED, "After": SKIPPED}
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_keyboard_interrupt_in_map_propagates_as_itself(shared: Runner) -> None:
    """A KeyboardInterrupt in a step of `map` over a flow propagates as itself."""
    flow = step(ev.Value).then(ev.Interrupt)
    with pytest.raises(KeyboardInterrupt):
        shared.map(flow, [1, 2, 3])


def test_four_threads_share_a_runner_without_crossing_values(shared: Runner) -> None:
    """Four threads running 50 flows each on one runner each get their own values."""
    flow = Flow.parse("IncThread |-> {TwiceThread || SquareInline} |-> SumThread", ev)
    errors: list[BaseException] = []
    outputs: dict[int, list[Any]] = {}

    def work(number: int) -> None:
        try:
            outputs[number] = [shared.run(flow, number * 1000 + i).output for i in range(50)]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    for number in range(4):
        xs = [number * 1000 + i + 1 for i in range(50)]
        assert outputs[number] == [2 * x + x * x for x in xs]


# -- §11.6 results -----------------------------------------------------------------------------


def test_flow_run_and_step_run_pickle(shared: Runner) -> None:
    """A FlowRun (with failed, skipped and not-taken steps) and a StepRun survive pickling."""
    flow = Flow.parse("Value |-> Boom (0 |-> Sink, 1 -> After) -> Nothing", ev)
    run = check(shared.run(flow, 1), flow)
    copy = pickle.loads(pickle.dumps(run))
    assert isinstance(copy, FlowRun)
    assert (copy.success, copy.output, copy.duration) == (run.success, run.output, run.duration)
    assert [(s.name, s.status, s.reason, s.attempts) for s in copy.steps] == [
        (s.name, s.status, s.reason, s.attempts) for s in run.steps
    ]
    assert isinstance(copy["Boom"].value, ValueError)
    assert copy["Boom"].run is not None and copy["Boom"].run.results[0].error
    one = pickle.loads(pickle.dumps(run["Sink"]))
    assert isinstance(one, StepRun) and one.value[0] == "sink" and one.status is SUCCEEDED


def test_lookup_by_step_name(shared: Runner) -> None:
    """`run["Sink#2"]` finds a repeated step; an unknown name is a KeyError listing the names."""
    flow = Flow.parse("Value |-> Sink |-> Sink", ev)
    run = check(shared.run(flow, 1), flow)
    assert [s.name for s in run.steps] == ["Value", "Sink", "Sink#2"]
    assert run["Sink#2"].value == ("sink", ("sink", 1))
    with pytest.raises(KeyError) as caught:
        run["Sink#3"]
    assert "Value, Sink, Sink#2" in str(caught.value)


def test_summary_has_one_line_per_step(shared: Runner) -> None:
    """`summary()` is a str of one line per step, each naming it and its status."""
    flow = Flow.parse("Value |-> Boom? (0 -> After, 1 -> Nothing) -> Nothing", ev)
    run = check(shared.run(flow, 1), flow)
    summary = run.summary()
    assert isinstance(summary, str)
    lines = summary.splitlines()
    assert len(lines) == len(run.steps)
    for line, s in zip(lines, run.steps, strict=True):
        assert line.startswith(s.name) and s.status.name in line


def test_every_task_result_is_reachable_from_its_step(shared: Runner) -> None:
    """Every result a hook sees belongs to exactly one StepRun of the flow run."""
    seen: list[Any] = []

    class Collect:
        def on_result(self, result: Any) -> None:
            seen.append(result)

    flow = Flow.parse(
        "IncThread |-> {{RangeThread |=> SlowSquare} || Boom}[any] -> After? (0 -> Nothing)", ev
    )
    with Runner(hooks=[Collect()]) as runner:  # type: ignore[call-arg]
        run = check(runner.run(flow, 4), flow)
    reachable = [r for s in run.steps if s.run is not None for r in s.run.results]
    assert sorted(r.task_id for r in seen) == sorted(r.task_id for r in reachable)
    assert len(reachable) == 1 + 1 + 5 + 1 + 1


def test_random_flows_end_with_one_status_per_step_and_every_result_reachable() -> None:
    """Over 300 seeded random flows, each run that binds has one status per step, and every
    task result a hook sees is in exactly one StepRun."""
    seen: list[Any] = []

    class Collect:
        def on_result(self, result: Any) -> None:
            seen.append(result)

    ran = 0
    with Runner(hooks=[Collect()]) as runner:  # type: ignore[call-arg]
        for seed in range(300):
            flow = flow_events.random_flow(random.Random(seed))
            for args in [(), ("u",), (1, 2)]:
                seen.clear()
                try:
                    run = check(runner.run(flow, *args, table="t"), flow)
                except ImproperlyConfigured:
                    continue
                except ValueError as exc:  # begins with pipe/each
                    assert "pipe" in str(exc)
                    break
                ran += 1
                reachable = [r for s in run.steps if s.run is not None for r in s.run.results]
                assert sorted(r.task_id for r in seen) == sorted(r.task_id for r in reachable)
                break
    # Random flows put timeouts on inline events too, which is refused before anything
    # runs: a good share still binds and runs.
    assert ran > 20


# -- executors ---------------------------------------------------------------------------------


def arithmetic(kind: str) -> tuple[Flow, Flow]:
    """The flow `Inc |-> {Twice || Square} |-> Sum -> ...` and a failing one, for ``kind``."""
    inc, twice, square, total, numbers, fail, pid = ev.KINDS[kind]
    good = (
        step(inc)
        .then(pipe(parallel(twice, square)), pipe(total), pipe(numbers), each(inc))
        .then(pipe(parallel(pid, pid)))
    )
    bad = step(inc).then(pipe(fail), pipe(inc))
    return good, bad


def assert_arithmetic(runner: Runner, kind: str) -> None:
    good, bad = arithmetic(kind)
    run = check(runner.run(good, 2), good)
    assert run.success, run.summary()
    # 3 -> (6, 9) -> 15 -> [0..14] -> [1..15]
    assert [s.value for s in run.steps[:5]] == [3, 6, 9, 15, list(range(15))]
    assert run.steps[5].value == list(range(1, 16))
    pids = run.output
    if kind == "inline":
        assert pids == ((os.getpid(), threading.get_ident()),) * 2
    elif kind == "thread":
        assert {p[0] for p in pids} == {os.getpid()}
        assert threading.get_ident() not in {p[1] for p in pids}
    else:
        assert os.getpid() not in {p[0] for p in pids}
    runs = runner.map(good, [0, 1, 2, 3])
    assert [r.steps[3].value for r in runs] == [(x + 1) * 2 + (x + 1) ** 2 for x in range(4)]
    failed = check(runner.run(bad, 1), bad)
    names = [s.name for s in failed.steps]
    assert [s.status for s in failed.steps] == [SUCCEEDED, FAILED, SKIPPED]
    assert failed.steps[2].reason == f"upstream {names[1]!r} failed"
    assert isinstance(failed.steps[1].value, ValueError)


@pytest.mark.parametrize("kind", ["inline", "thread", "process"])
def test_flows_over_each_executor_kind(shared: Runner, kind: str) -> None:
    """Pipes, groups, fan-out, map and failures behave alike on inline, thread and process
    executors, and steps run where their executor runs them."""
    assert_arithmetic(shared, kind)


def test_flows_on_a_dask_local_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same flow runs on DaskExecutor's local cluster."""
    pytest.importorskip("distributed")
    from event_pipeline.executors.dask import ADDRESS_ENV_VAR

    monkeypatch.delenv(ADDRESS_ENV_VAR, raising=False)
    with Runner() as runner:
        assert_arithmetic(runner, "dask")


def test_flow_run_uses_the_default_runner() -> None:
    """`flow.run(...)` runs the flow on the default runner and returns a FlowRun."""
    flow = Flow.parse("Value |-> Sink", ev)
    run = flow.run(7)
    assert isinstance(run, FlowRun) and run.output == ("sink", 7)


def test_run_returns_a_flow_run_for_a_flow_and_an_event_run_for_an_event(
    shared: Runner,
) -> None:
    """At run time `runner.run(flow)` is a FlowRun and `runner.run(Event)` an EventRun."""
    flow = step(ev.Value)
    assert isinstance(shared.run(flow, 1), FlowRun)
    assert isinstance(shared.run(ev.Value, 1), EventRun)
    assert isinstance(shared.imap(flow, [1]), Iterator)


TYPING_SNIPPET = """
from event_pipeline import EventBase, Runner
from event_pipeline.flow import step


class E(EventBase):
    def process(self, x: int) -> tuple[bool, int]:
        return True, x


runner = Runner()
reveal_type(runner.run(step(E), 1))
reveal_type(runner.run(E, 1))
reveal_type(runner.map(step(E), [1]))
reveal_type(runner.imap(step(E), [1]))
reveal_type(step(E).run(1))
"""


@pytest.fixture(scope="module")
def revealed(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The types mypy reveals in TYPING_SNIPPET, in order."""
    pytest.importorskip("mypy", reason="mypy is installed by the test extra")
    folder = tmp_path_factory.mktemp("flow_typing")
    snippet = folder / "flow_typing_snippet.py"
    snippet.write_text(TYPING_SNIPPET)
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(folder / "cache"),
            str(snippet),
        ],
        cwd=root,  # pyproject.toml's [tool.mypy]: mypy_path = src
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "error" not in done.stdout, done.stdout + done.stderr
    return [
        line.split("Revealed type is ", 1)[1]
        for line in done.stdout.splitlines()
        if "Revealed type is " in line
    ]


def test_runner_calls_on_a_flow_are_typed_as_flow_runs(revealed: list[str]) -> None:
    """To a type checker `runner.run(flow)` is a FlowRun, `map` a list and `imap` an iterator
    of them, and `runner.run(Event)` stays an EventRun."""
    assert revealed[:4] == [
        '"event_pipeline._flowrun.FlowRun"',
        '"event_pipeline._results.EventRun"',
        '"list[event_pipeline._flowrun.FlowRun]"',
        '"typing.Iterator[event_pipeline._flowrun.FlowRun]"',
    ]


def test_flow_run_is_typed_as_a_flow_run(revealed: list[str]) -> None:
    """To a type checker `flow.run(...)` is a FlowRun."""
    assert revealed[4] == '"event_pipeline._flowrun.FlowRun"'


def test_a_runner_leaves_no_thread_or_process_behind(tmp_path: Path) -> None:
    """After shutdown, a runner that ran thread and process flows leaves nothing running."""
    import multiprocessing

    threads = set(threading.enumerate())
    children = set(multiprocessing.active_children())
    runner = Runner()
    try:
        assert_arithmetic(runner, "thread")
        flow = Flow.parse("Value |-> {MeetInThread || MeetInProcess}", ev)
        assert runner.run(flow, str(tmp_path)).success
    finally:
        runner.shutdown()
    assert leftovers(threads, children) == ([], [])
