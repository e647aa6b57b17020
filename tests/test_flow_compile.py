"""Flow → FlowPlan (SPEC §11.4, §11.7): numbering, effective settings, structure and the
up-front argument check — all without running anything."""

from __future__ import annotations

import inspect
import sys

import pytest

import flow_events
from event_pipeline import EventExecutionEvaluationState, ImproperlyConfigured, RetryPolicy
from event_pipeline._event import settings_of
from event_pipeline.flow import Flow, each, parallel, pipe, step
from event_pipeline.flow._compile import Feed, FlowPlan, NodeKind, check_inputs, compile_flow
from flow_events import (
    Fetch,
    Flaky,
    Pack,
    Parse,
    Slow,
    Tick,
    double,
)

ANY = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS


def plan_of(text: str) -> FlowPlan:
    return compile_flow(Flow.parse(text, flow_events))


def test_steps_numbered_and_named_in_text_order() -> None:
    """Steps are numbered in the order of the text; repeats are Pack, Pack#2, Pack#3."""
    plan = plan_of("Pack -> {Pack || Fetch}[any] (0 -> Pack, 1 -> Tick) -> Pack?")
    assert [s.name for s in plan.steps] == ["Pack", "Pack#2", "Fetch", "Pack#3", "Tick", "Pack#4"]
    assert [s.index for s in plan.steps] == list(range(6))
    assert plan.names["Pack#3"] == 3
    assert all(plan.nodes[s.node].step == s.index for s in plan.steps)


def test_attempts_override_keeps_the_events_policy_otherwise() -> None:
    """``attempts`` replaces max_attempts only; the event class is not modified."""
    before = settings_of(Flaky)
    plan = compile_flow(step(Flaky, attempts=7))
    policy = plan.steps[0].retry_policy
    assert policy == RetryPolicy(
        max_attempts=7, backoff_factor=0.5, max_backoff=4.0, retry_on_exceptions=[ConnectionError]
    )
    assert plan.steps[0].settings.retry_on == (ConnectionError,)
    assert settings_of(Flaky) is before and Flaky.retry_policy.max_attempts == 3


def test_attempts_on_an_event_without_policy_retries_any_exception() -> None:
    """Without a policy of its own, ``A * n`` uses RetryPolicy()'s backoff for any Exception."""
    plan = plan_of("Tick * 4 -> Tick * 1 -> Tick")
    first, once, plain = plan.steps
    assert first.retry_policy == RetryPolicy(max_attempts=4)
    assert first.settings.retry_on == ()
    assert once.retry_policy == RetryPolicy(max_attempts=1) and once.settings.retry_on is None
    assert plain.retry_policy is None and plain.attempts is None
    assert Tick.retry_policy is None


def test_timeout_override_and_the_events_own() -> None:
    """A step's timeout is its override, else the event's ``timeout``, else None."""
    plan = plan_of("Slow ~ 0.5 -> Slow -> Tick ~ 3")
    assert [s.timeout for s in plan.steps] == [0.5, 5, 3]
    assert Slow.timeout == 5


def test_structure_collapses_wrappers() -> None:
    """pipe/each/optional become the feed and optional flag of the node they wrap."""
    plan = plan_of("Fetch |-> {Pack || Parse}[any]? |=> double (0 |-> Notify, 3 -> Tick)")
    root = plan.root
    assert root.kind is NodeKind.SEQUENCE and root.parent == -1
    fetch, group, branch = (plan.nodes[i] for i in root.children)
    assert group.kind is NodeKind.PARALLEL and group.evaluation is ANY
    assert (group.feed, group.optional, group.slot) == (Feed.PIPE, True, 1)
    assert branch.kind is NodeKind.BRANCH and branch.feed is Feed.EACH
    assert branch.codes == (0, 3)
    assert plan.nodes[branch.arm(0)].feed is Feed.PIPE
    assert plan.nodes[branch.arm(3)].step == plan.names["Tick"]
    assert branch.arm(1) == -1
    assert list(branch.steps) == [3, 4, 5] and list(root.steps) == list(range(6))
    assert plan.entry_steps == (0,)
    assert fetch.upstream == -1 and group.upstream == fetch.index


def test_feed_reaches_the_steps_a_group_begins_with() -> None:
    """``A |-> B || C`` pipes A's value to both B and C; a block's leading pipe too."""
    plan = plan_of("Fetch |-> Parse || {Pack -> Store}")
    fetch = plan.steps[0]
    parse, pack, store = plan.steps[1:]
    assert (parse.feed, parse.source) == (Feed.PIPE, fetch.node)
    assert (pack.feed, pack.source) == (Feed.PIPE, fetch.node)
    assert (store.feed, store.source) == (Feed.NONE, -1)
    plan = plan_of("Fetch -> {|-> Parse} || Tick")
    assert plan.steps[1].source == plan.steps[0].node and plan.steps[2].feed is Feed.NONE


def test_arm_receives_the_subjects_value() -> None:
    """In ``A (0 |-> H)`` H receives A's value; steps after the arm chain on from it."""
    plan = plan_of("Fetch (0 |-> Notify -> Tick, 1 -> Tick)")
    fetch, notify, tick, _ = plan.steps
    assert notify.source == fetch.node and notify.feed is Feed.PIPE
    assert plan.nodes[tick.node].upstream == notify.node
    assert not notify.entry


def test_entry_steps() -> None:
    """Entry steps are those with nothing before them, inside leading groups too."""
    plan = plan_of("{Fetch -> Parse} || Total -> Pack")
    assert [plan.steps[i].name for i in plan.entry_steps] == ["Fetch", "Total"]


def test_flow_cannot_begin_with_pipe() -> None:
    """A flow that begins with pipe()/each() has nothing to receive: ValueError."""
    for flow in (pipe(Parse), each(Parse).then(Tick), parallel(pipe(Parse), Tick)):
        with pytest.raises(ValueError, match="'Parse' receives the previous value"):
            compile_flow(flow)


def test_compile_takes_a_flow() -> None:
    """Anything but a Flow is a TypeError."""
    with pytest.raises(TypeError, match="Fetch"):
        compile_flow(Fetch)  # type: ignore[arg-type]


def test_long_chain_compiles_without_recursion() -> None:
    """A 5,000-step chain compiles within a shallow stack."""
    flow = step(Fetch).then(*([pipe(Parse), step(Pack)] * 2499 + [Tick]))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + 120)
    try:
        plan = compile_flow(flow)
    finally:
        sys.setrecursionlimit(old)
    assert len(plan.steps) == 5000 and plan.steps[-1].name == "Tick"
    assert plan.steps[4999 - 1].name == "Pack#2499"


# -- check_inputs --------------------------------------------------------------------------------
def test_entry_steps_take_the_positional_arguments() -> None:
    """Arguments bind positionally to entry steps; missing or extra ones are named."""
    plan = plan_of("Fetch |-> Parse")
    assert check_inputs(plan, ["u"], {}) == ((), ())
    with pytest.raises(ImproperlyConfigured) as info:
        check_inputs(plan, [], {"mode": 1})
    message = str(info.value)
    assert "'Fetch'" in message and "'url'" in message and "inputs given: 'mode'" in message
    with pytest.raises(ImproperlyConfigured, match=r"takes 1 positional parameter.*would get 2"):
        check_inputs(plan, ["a", "b"], {})


def test_named_inputs_go_where_declared_or_to_kwargs() -> None:
    """An input goes to steps declaring its name and to steps taking ``**kwargs``."""
    plan = plan_of("Fetch |-> Store -> Notify |-> Pack * 2")
    received = check_inputs(plan, ["u"], {"table": "orders", "size": 3})
    assert received == ((), ("table",), ("table", "size"), ("size",))
    with pytest.raises(ImproperlyConfigured) as info:
        check_inputs(plan, ["u"], {"size": 3})
    assert "'Store'" in str(info.value) and "'table'" in str(info.value)


def test_named_inputs_never_fill_the_piped_parameter() -> None:
    """A piped value fills the first positional parameter; an input of that name skips it."""
    plan = plan_of("Fetch |-> Parse -> Pack")
    assert check_inputs(plan, ["u"], {"text": "x", "item": 1})[1:] == ((), ("item",))


def test_pipe_into_a_step_without_positional_parameter() -> None:
    """Piping into a step with nothing positional is an error naming the step."""
    for text, name in [("Fetch |-> Ping", "'Ping'"), ("Fetch |=> Tick", "'Tick'")]:
        with pytest.raises(ImproperlyConfigured, match=rf"{name}.*no positional parameter"):
            check_inputs(plan_of(text), ["u"], {})
    assert check_inputs(plan_of("Fetch |=> Pack -> Ping"), ["u"], {"host": "h"})[2] == ("host",)


def test_every_step_is_checked_taken_or_not() -> None:
    """An arm that may never run is checked too."""
    plan = plan_of("Fetch (0 -> Store, 1 -> Tick)")
    with pytest.raises(ImproperlyConfigured, match=r"'Store'.*'record'"):
        check_inputs(plan, ["u"], {"table": "t"})


def test_function_events_bind_against_the_function() -> None:
    """``@event`` classes are checked against the decorated function's signature."""
    plan = compile_flow(step(Fetch).then(pipe(double), double))
    with pytest.raises(ImproperlyConfigured, match=r"'double#2'.*'x'"):
        check_inputs(plan, ["u"], {"factor": 3})
    assert check_inputs(compile_flow(step(double)), [2], {"factor": 3}) == (("factor",),)


def test_var_positional_takes_any_count() -> None:
    """A step taking ``*args`` accepts any number of positional arguments."""
    plan = plan_of("Total -> Tick")
    assert check_inputs(plan, [1, 2, 3], {}) == ((), ())
    assert check_inputs(plan, [], {}) == ((), ())
