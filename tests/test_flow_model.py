"""Flow values (SPEC §11.2): building, validation, canonical shape, equality, pickling."""

from __future__ import annotations

import copy
import inspect
import math
import pickle
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from event_pipeline import EventBase, EventExecutionEvaluationState
from event_pipeline.flow import Flow, each, parallel, pipe, step
from flow_events import Fetch, Flaky, Notify, Pack, Parse, Store, Tick, random_flow

ANY = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS


@contextmanager
def shallow_stack(frames: int = 120) -> Iterator[None]:
    """Allow only ``frames`` more frames than the caller has: a walk that recursed per
    chain link would hit the limit."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack(0)) + frames)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def nesting(text: str) -> int:
    """The most '{' and '(' open at once in ``text``."""
    depth = deepest = 0
    for char in text:
        depth += char in "{("
        depth -= char in "})"
        deepest = max(deepest, depth)
    return deepest


def test_event_class_means_step() -> None:
    """An event class wherever a flow is expected means ``step(Event)``."""
    assert step(Fetch).then(Parse) == step(Fetch).then(step(Parse))
    assert parallel(Fetch, Parse) == parallel(step(Fetch), step(Parse))
    assert pipe(Parse) == pipe(step(Parse))
    assert step(Fetch).branch({0: Tick}) == step(Fetch).branch({0: step(Tick)})


def test_spec_example_structure() -> None:
    """``A -> B || C |-> D`` is ``step(A).then(parallel(B, C), pipe(D))``."""
    flow = step(Fetch).then(parallel(Parse, Pack), pipe(Store))
    assert str(flow) == "Fetch -> Parse || Pack |-> Store"
    assert flow.kind == "sequence"
    assert [item.kind for item in flow.items] == ["step", "parallel", "pipe"]


@pytest.mark.parametrize(
    ("call", "error", "fragment"),
    [
        (lambda: step(object), TypeError, "<class 'object'>"),
        (lambda: step("Fetch"), TypeError, "'Fetch'"),
        (lambda: step(EventBase), TypeError, "EventBase itself"),
        (lambda: step(Fetch, attempts=0), ValueError, "attempts must be at least 1, got 0"),
        (lambda: step(Fetch, attempts=True), TypeError, "attempts must be an int, got True"),
        (lambda: step(Fetch, attempts=2.0), TypeError, "got 2.0"),
        (lambda: step(Fetch, timeout=0), ValueError, "timeout must be positive, got 0"),
        (lambda: step(Fetch, timeout=-1.5), ValueError, "got -1.5"),
        (lambda: step(Fetch, timeout=math.inf), ValueError, "finite"),
        (lambda: step(Fetch, timeout=math.nan), ValueError, "nan"),
        (lambda: step(Fetch, timeout=True), TypeError, "got True"),
        (lambda: step(Fetch, timeout="5"), TypeError, "got '5'"),
        (lambda: parallel(Fetch), ValueError, "at least two members, got 1"),
        (lambda: parallel(Fetch, 42), TypeError, "parallel() member 2: expected a Flow"),
        (lambda: parallel(Fetch, Parse, evaluation="any"), TypeError, "got 'any'"),
        (lambda: step(Fetch).then(), TypeError, "at least one"),
        (lambda: step(Fetch).then(Parse, len), TypeError, "then() argument 2"),
        (lambda: step(Fetch).branch({}), ValueError, "at least one arm"),
        (lambda: step(Fetch).branch({10: Parse}), ValueError, "from 0 to 9, got 10"),
        (lambda: step(Fetch).branch({-1: Parse}), ValueError, "got -1"),
        (lambda: step(Fetch).branch({True: Parse}), TypeError, "got True"),
        (lambda: step(Fetch).branch({"0": Parse}), TypeError, "got '0'"),
        (lambda: step(Fetch).branch([(0, Parse)]), TypeError, "mapping"),
        (lambda: step(Fetch).branch({0: "Parse"}), TypeError, "branch() arm 0"),
        (lambda: pipe(pipe(Parse)), ValueError, "already receives"),
        (lambda: each(step(Fetch).then(pipe(Parse)).items[1]), ValueError, "already receives"),
        (lambda: pipe(None), TypeError, "None"),
    ],
)
def test_validated_on_construction(call: object, error: type[Exception], fragment: str) -> None:
    """A bad member, override, route code or evaluation fails at once, naming the value."""
    with pytest.raises(error) as info:
        call()  # type: ignore[operator]
    assert fragment in str(info.value)


def test_flow_is_not_built_directly() -> None:
    """``Flow()`` points at the constructors instead."""
    with pytest.raises(TypeError, match="step\\(\\)"):
        Flow()


def test_immutable() -> None:
    """Attributes of a flow cannot be set or deleted."""
    flow = step(Fetch)
    with pytest.raises(AttributeError, match="immutable"):
        flow._event = Parse  # type: ignore[misc]
    with pytest.raises(AttributeError, match="immutable"):
        del flow._event
    assert flow.event is Fetch


def test_sequences_are_flat() -> None:
    """However a chain is built, it is one flat sequence."""
    a = step(Fetch).then(Parse).then(Pack)
    b = step(Fetch).then(step(Parse).then(Pack))
    c = step(Fetch).then(Parse, Pack)
    assert a == b == c and hash(a) == hash(b) == hash(c)
    assert [item.event for item in a.items] == [Fetch, Parse, Pack]


def test_canonical_shape() -> None:
    """pipe/each sit outside optional and branch, optional() is idempotent, and a pipe into
    a sequence pipes into its first item."""
    assert pipe(Parse).optional() == pipe(step(Parse).optional())
    assert each(Parse).branch({0: Tick}) == each(step(Parse).branch({0: Tick}))
    assert step(Parse).optional().optional() == step(Parse).optional()
    assert pipe(step(Parse).then(Pack)) == pipe(Parse).then(Pack)
    assert str(step(Fetch).then(pipe(step(Parse).then(Pack)))) == "Fetch |-> Parse -> Pack"


def test_optional_branch_order_is_kept() -> None:
    """A tolerated step with a branch differs from a tolerated branch as a whole."""
    on_step = step(Fetch).optional().branch({0: Tick})
    on_block = step(Fetch).branch({0: Tick}).optional()
    assert on_step != on_block
    assert str(on_step) == "Fetch? (0 -> Tick)"
    assert str(on_block) == "{Fetch (0 -> Tick)}?"


def test_structural_equality_and_hash() -> None:
    """Equal structure compares and hashes equal; any difference compares unequal."""
    a = step(Fetch, attempts=3).then(parallel(Parse, Pack, evaluation=ANY))
    b = step(Fetch, attempts=3).then(parallel(Parse, Pack, evaluation=ANY))
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != step(Fetch, attempts=2).then(parallel(Parse, Pack, evaluation=ANY))
    assert a != step(Fetch, attempts=3).then(parallel(Parse, Pack))
    assert a != step(Fetch, attempts=3).then(parallel(Pack, Parse, evaluation=ANY))
    assert step(Fetch, timeout=2) == step(Fetch, timeout=2.0)
    assert step(Fetch) != "Fetch"
    assert step(Fetch).branch({0: Tick, 1: Pack}) == step(Fetch).branch({1: Pack, 0: Tick})


def test_introspection() -> None:
    """Kind, event, overrides, items, arms and step count are readable."""
    flow = step(Flaky, attempts=4, timeout=1.5).branch({2: Tick, 0: parallel(Pack, Parse)})
    assert flow.kind == "branch"
    (subject,) = flow.items
    assert (subject.event, subject.attempts, subject.timeout) == (Flaky, 4, 1.5)
    assert list(flow.arms) == [0, 2]
    assert flow.arms[0].evaluation is EventExecutionEvaluationState.SUCCESS_ON_ALL_EVENTS_SUCCESS
    assert flow.step_count == 4
    assert step(Tick).arms == {} and step(Tick).items == ()


def test_pickle_and_copy() -> None:
    """Random flows survive pickling (event classes by reference); copies are the flow."""
    rng = random.Random(11)
    for _ in range(200):
        flow = random_flow(rng)
        again = pickle.loads(pickle.dumps(flow))
        assert again == flow and hash(again) == hash(flow) and str(again) == str(flow)
    assert copy.copy(flow) is flow and copy.deepcopy(flow) is flow


def test_long_chain_needs_no_recursion() -> None:
    """A 5,000-step chain builds, prints, compares, hashes, pickles and draws with no more
    stack than a short one."""
    chain = step(Fetch)
    for index in range(4999):
        chain = chain.then(pipe(Parse) if index % 2 else Pack)
    with shallow_stack():
        text = str(chain)
        other = step(Fetch).then(*chain.items[1:])
        assert other == chain and hash(other) == hash(chain)
        assert pickle.loads(pickle.dumps(chain)) == chain
        assert chain.to_dot().count(" -> s") == 4999
    assert text.count("|->") == 2499 and chain.step_count == 5000


def test_deep_nesting_needs_no_recursion() -> None:
    """100 nested branch lists print, compare and pickle within a shallow stack."""
    flow = step(Tick)
    for _ in range(100):
        flow = step(Fetch).optional().branch({0: pipe(flow)})
    with shallow_stack():
        assert nesting(str(flow)) == 100
        assert pickle.loads(pickle.dumps(flow)) == flow


def test_nesting_limit() -> None:
    """A flow whose text would nest more than 100 levels of '{' and '(' is refused."""
    flow = step(Tick)
    for _ in range(99):
        flow = parallel(flow.then(Tick), Tick)
    assert nesting(str(flow)) == 99
    flow = parallel(flow, Tick)
    assert nesting(str(flow)) == 100
    with pytest.raises(ValueError, match="101 levels"):
        parallel(flow, Tick)
    with pytest.raises(ValueError, match="101 levels"):
        flow.optional()


def test_repr_shows_the_text() -> None:
    """The repr is the canonical text, quoted."""
    flow = step(Store).optional().then(Notify)
    assert repr(flow) == "Flow('Store? -> Notify')"
