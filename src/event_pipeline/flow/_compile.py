"""Flow → FlowPlan: what a runtime needs to run a flow, worked out once and without running.

``compile_flow(flow)`` numbers the steps in text order (the order of ``str(flow)``) and
names them as ``StepRun.name`` does (``Pack``, ``Pack#2``), settles each step's effective
run settings, and lays the flow out as a flat array of nodes. ``check_inputs(plan, args,
inputs)`` is the up-front argument check of SPEC §11.4, done before anything runs.

The plan's shape (for the runtime's author)::

    FlowPlan
      nodes[i]   PlanNode, in pre-order (a parent before its children, children in order);
                 nodes[0] is the root. pipe/each/optional are not nodes: they are the
                 ``feed`` and ``optional`` of the node they wrap.
        kind       STEP | SEQUENCE | PARALLEL | BRANCH
        parent     index of the parent node (-1 for the root); ``slot``: place among its
                   children (for a BRANCH: 0 is the subject, 1.. are arms)
        children   node indices: SEQUENCE items in order; PARALLEL members in declaration
                   order; BRANCH (subject, arm, arm, ...), arms in code order
        codes      BRANCH only: the route code of each arm (``codes[k]`` is children[k+1]);
                   ``arm(code)`` gives the arm's node or -1
        evaluation PARALLEL only: how members' outcomes decide the group
        optional   a failure of this node is tolerated (``?``)
        feed       NONE | PIPE | EACH as written on this node (``|->``/``|=>`` before it)
        upstream   the node whose value arrives here, -1 at the flow's start: for the
                   k-th item of a sequence the (k-1)-th; for the first item, a member or a
                   subject, the parent's upstream; for an arm, the branch's subject
        step       STEP only: index into ``steps``; else -1
        steps      range of the step indices inside this node (contiguous: text order)
      steps[j]   PlanStep: index, name, event, node, the effective settings (retry policy
                 with any ``attempts`` override, timeout, ``settings`` as an EventSettings),
                 ``feed``/``source`` (how and from which node it receives a value, with a
                 pipe/each on an enclosing group or block passed down to the steps it
                 starts with), ``entry`` (gets the call's positional args), ``signature``
      entry_steps  the steps with nothing before them

A runtime walks this with two loops and no recursion per link: *entering* node i goes
down (STEP: submit; SEQUENCE: enter children[0]; PARALLEL: enter every child in order;
BRANCH: enter children[0]); when a node *finishes*, look at ``parent`` and ``slot``: a
sequence enters the next item (or finishes, or on an untolerated failure marks
``nodes[next].steps`` onwards SKIPPED and finishes failed), a group counts its members
down and applies ``evaluation``, a branch whose subject finished picks ``arm(code)``
(marking the other arms' ``steps`` NOT_TAKEN) and finishes when the arm does. Queue
"finished" events and handle them in one loop, so a 5,000-step chain never nests calls.
A node's value is kept by index: a step's content, a group's tuple of member values, a
sequence's/branch's last value; ``source`` says which node's value a step receives.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from .._config import RetryPolicy
from .._evaluation import EventExecutionEvaluationState
from .._event import EventBase, EventSettings, settings_of
from ..exceptions import ImproperlyConfigured
from ._model import Flow, step_names

__all__ = [
    "Feed",
    "FlowPlan",
    "NodeKind",
    "PlanNode",
    "PlanStep",
    "StepSignature",
    "check_inputs",
    "compile_flow",
]


class NodeKind(enum.Enum):
    """What a plan node is."""

    #: One event run.
    STEP = "step"
    #: Items run one after another.
    SEQUENCE = "sequence"
    #: Members started together, judged by the group's evaluation.
    PARALLEL = "parallel"
    #: A subject, then the arm of the code it routed to.
    BRANCH = "branch"


class Feed(enum.Enum):
    """How a node receives the value of the node before it."""

    #: It does not (``->``, or nothing before it).
    NONE = "->"
    #: As its first positional argument (``|->``).
    PIPE = "|->"
    #: One task per item of that value (``|=>``).
    EACH = "|=>"


_FEEDS = {"pipe": Feed.PIPE, "each": Feed.EACH}
_KINDS = {
    "step": NodeKind.STEP,
    "sequence": NodeKind.SEQUENCE,
    "parallel": NodeKind.PARALLEL,
    "branch": NodeKind.BRANCH,
}


class StepSignature(NamedTuple):
    """What a step's ``process`` (or ``@event`` function) accepts."""

    #: Parameters that take positional arguments, in order.
    positional: tuple[str, ...]
    #: It takes ``*args``.
    var_positional: bool
    #: Parameters that may be passed by name.
    keywords: frozenset[str]
    #: It takes ``**kwargs``.
    var_keyword: bool
    #: Parameters without a default (``*args``/``**kwargs`` aside), in order.
    required: tuple[str, ...]


_ANYTHING = StepSignature((), True, frozenset(), True, ())


def signature_of(event: type[EventBase]) -> StepSignature:
    """The signature a step of ``event`` is called with: ``process`` without ``self``, or
    for ``@event`` classes the decorated function."""
    function = getattr(event, "func", None)
    made_by_decorator = getattr(event, "_event_pipeline_function", False)
    target = function if made_by_decorator and callable(function) else event.process
    try:
        parameters = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):  # a callable whose signature cannot be read
        return _ANYTHING
    kinds = inspect.Parameter
    # ``process`` looked up on the class is a plain function: its first parameter is self.
    takes_self = target is event.process and not isinstance(
        inspect.getattr_static(event, "process", None), (staticmethod, classmethod)
    )
    if (
        takes_self
        and parameters
        and parameters[0].kind
        in (
            kinds.POSITIONAL_ONLY,
            kinds.POSITIONAL_OR_KEYWORD,
        )
    ):
        parameters = parameters[1:]
    return StepSignature(
        positional=tuple(
            p.name
            for p in parameters
            if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
        ),
        var_positional=any(p.kind is kinds.VAR_POSITIONAL for p in parameters),
        keywords=frozenset(
            p.name
            for p in parameters
            if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
        ),
        var_keyword=any(p.kind is kinds.VAR_KEYWORD for p in parameters),
        required=tuple(
            p.name
            for p in parameters
            if p.default is kinds.empty and p.kind not in (kinds.VAR_POSITIONAL, kinds.VAR_KEYWORD)
        ),
    )


class PlanNode:
    """One node of a :class:`FlowPlan` (see the module docstring for the shape)."""

    __slots__ = (
        "children",
        "codes",
        "evaluation",
        "feed",
        "index",
        "kind",
        "optional",
        "parent",
        "slot",
        "step",
        "steps",
        "upstream",
    )

    def __init__(
        self,
        index: int,
        kind: NodeKind,
        parent: int,
        slot: int,
        feed: Feed,
        optional: bool,
        upstream: int,
        evaluation: EventExecutionEvaluationState | None,
        codes: tuple[int, ...],
    ) -> None:
        self.index = index
        self.kind = kind
        self.parent = parent
        self.slot = slot
        self.feed = feed
        self.optional = optional
        self.upstream = upstream
        self.evaluation = evaluation
        self.codes = codes
        self.children: tuple[int, ...] = ()
        self.step = -1
        self.steps = range(0)

    def arm(self, code: int) -> int:
        """The node of the arm for route ``code``, or -1 when there is none."""
        try:
            return self.children[1 + self.codes.index(code)]
        except ValueError:
            return -1

    def __repr__(self) -> str:
        extra = (
            f" step={self.step}"
            if self.kind is NodeKind.STEP
            else f" children={list(self.children)}"
        )
        return (
            f"<PlanNode {self.index} {self.kind.name}{extra} parent={self.parent} "
            f"feed={self.feed.value} optional={self.optional}>"
        )


class PlanStep:
    """One step of a :class:`FlowPlan`, with its effective settings.

    Attributes:
        index: its number in text order, from 0.
        name: as ``StepRun.name``: the event's name, ``Name#2`` for its second use...
        event: the event class (never modified).
        node: its node's index.
        attempts: the step's ``attempts`` override, or None.
        retry_policy: the effective policy: the event's, with ``max_attempts`` replaced
            when ``attempts`` is set (``RetryPolicy()``'s backoff, retrying any
            ``Exception``, when the event has none); None for no retry.
        timeout: seconds allowed to one attempt (the override, else the event's), or None.
        settings: the event's settings with the above applied.
        feed: how the step receives a value (its own ``|->``/``|=>``, or an enclosing
            group's or block's it begins).
        source: the node whose value it receives, or -1 when ``feed`` is NONE.
        entry: nothing comes before it: it receives the call's positional arguments.
        optional: the step itself is tolerated (``A?``).
        signature: what its ``process`` accepts.
    """

    __slots__ = (
        "attempts",
        "entry",
        "event",
        "feed",
        "index",
        "name",
        "node",
        "optional",
        "retry_policy",
        "settings",
        "signature",
        "source",
        "timeout",
    )

    def __init__(
        self,
        index: int,
        name: str,
        event: type[EventBase],
        node: int,
        attempts: int | None,
        timeout: float | None,
        settings: EventSettings,
        feed: Feed,
        source: int,
        entry: bool,
        optional: bool,
        signature: StepSignature,
    ) -> None:
        self.index = index
        self.name = name
        self.event = event
        self.node = node
        self.attempts = attempts
        self.timeout = timeout
        self.settings = settings
        self.retry_policy = settings.retry_policy
        self.feed = feed
        self.source = source
        self.entry = entry
        self.optional = optional
        self.signature = signature

    def __repr__(self) -> str:
        return f"<PlanStep {self.index} {self.name!r} feed={self.feed.value} entry={self.entry}>"


class FlowPlan:
    """A flow laid out for running (see the module docstring for the shape).

    Attributes:
        flow: the flow it was compiled from.
        nodes: every node, in pre-order; ``nodes[0]`` is the root.
        steps: every step, in text order.
        entry_steps: indices of the steps with nothing before them.
        names: step name to step index.
    """

    __slots__ = ("entry_steps", "flow", "names", "nodes", "steps")

    def __init__(
        self,
        flow: Flow,
        nodes: tuple[PlanNode, ...],
        steps: tuple[PlanStep, ...],
    ) -> None:
        self.flow = flow
        self.nodes = nodes
        self.steps = steps
        self.entry_steps = tuple(s.index for s in steps if s.entry)
        self.names = {s.name: s.index for s in steps}

    @property
    def root(self) -> PlanNode:
        """The node the flow starts at."""
        return self.nodes[0]

    def __repr__(self) -> str:
        return f"<FlowPlan {len(self.steps)} steps, {len(self.nodes)} nodes: {self.flow}>"


def _effective_settings(
    event: type[EventBase], attempts: int | None, timeout: float | None
) -> tuple[EventSettings, float | None]:
    settings = settings_of(event)
    if attempts is not None:
        policy = settings.retry_policy
        policy = (
            RetryPolicy(max_attempts=attempts)
            if policy is None
            else dataclasses.replace(policy, max_attempts=attempts)
        )
        # The same rule as for the event's own policy: one attempt retries nothing.
        retry_on = tuple(policy.retry_on_exceptions) if attempts > 1 else None
        settings = settings._replace(retry_policy=policy, retry_on=retry_on)
    own = getattr(settings, "timeout", getattr(event, "timeout", None))
    if timeout is None and isinstance(own, (int, float)) and not isinstance(own, bool):
        timeout = own
    if timeout is not None and "timeout" in type(settings)._fields:
        # EventSettings gains a timeout field with SPEC §14.2; until then there is none.
        replace: Any = settings._replace
        settings = replace(timeout=timeout)
    return settings, timeout


def compile_flow(flow: Flow) -> FlowPlan:
    """Lay ``flow`` out for running. Pure: nothing runs, no event class is modified.

    Raises:
        TypeError: ``flow`` is not a Flow.
        ValueError: a step receives the previous value (``pipe``/``each``) but nothing
            comes before it.
        ImproperlyConfigured: an event's settings, reassigned since its class was made,
            are invalid.
    """
    if not isinstance(flow, Flow):
        raise TypeError(f"compile_flow() takes a Flow, got {flow!r}")
    nodes: list[PlanNode] = []
    children: list[list[int]] = []
    # The feed a node passes on to what it begins with (its own, or its parent's).
    passed_feed: list[Feed] = []
    pending_steps: list[tuple[Flow, int, Feed, int]] = []
    # (flow, parent, slot) to visit, or (None, node, -1) to close a node's step range.
    stack: list[tuple[Flow | None, int, int]] = [(flow, -1, 0)]
    while stack:
        current, parent, slot = stack.pop()
        if current is None:
            nodes[parent].steps = range(nodes[parent].steps.start, len(pending_steps))
            continue
        feed, optional = Feed.NONE, False
        while current.kind in ("pipe", "each", "optional"):
            if current.kind == "optional":
                optional = True
            else:
                feed = _FEEDS[current.kind]
            (current,) = current.items
        index = len(nodes)
        upstream, inherited = -1, Feed.NONE
        if parent >= 0:
            above = nodes[parent]
            children[parent].append(index)
            begins_parent = slot == 0 or above.kind is NodeKind.PARALLEL
            if begins_parent:
                upstream, inherited = above.upstream, passed_feed[parent]
            elif above.kind is NodeKind.SEQUENCE:
                upstream = children[parent][slot - 1]
            else:  # an arm: it receives its branch's subject's value
                upstream = children[parent][0]
        node = PlanNode(
            index,
            _KINDS[current.kind],
            parent,
            slot,
            feed,
            optional,
            upstream,
            current.evaluation,
            tuple(current.arms) if current.kind == "branch" else (),
        )
        nodes.append(node)
        children.append([])
        passed_feed.append(feed if feed is not Feed.NONE else inherited)
        node.steps = range(len(pending_steps), len(pending_steps))
        if node.kind is NodeKind.STEP:
            node.step = len(pending_steps)
            pending_steps.append((current, index, passed_feed[index], upstream))
            node.steps = range(node.step, node.step + 1)
            continue
        parts = (
            (*current.items, *current.arms.values()) if current.kind == "branch" else current.items
        )
        stack.append((None, index, -1))
        stack.extend((part, index, position) for position, part in reversed(list(enumerate(parts))))
    for node, kids in zip(nodes, children, strict=True):
        node.children = tuple(kids)
    names = step_names([f.event for f, _, _, _ in pending_steps if f.event is not None])
    steps = []
    for number, ((current, node_index, feed, upstream), name) in enumerate(
        zip(pending_steps, names, strict=True)
    ):
        event = current.event
        assert event is not None
        if feed is not Feed.NONE and upstream < 0:
            raise ValueError(
                f"step {name!r} receives the previous value ({feed.value}) but nothing comes "
                f"before it: a flow cannot begin with pipe() or each()"
            )
        settings, timeout = _effective_settings(event, current.attempts, current.timeout)
        steps.append(
            PlanStep(
                index=number,
                name=name,
                event=event,
                node=node_index,
                attempts=current.attempts,
                timeout=timeout,
                settings=settings,
                feed=feed,
                source=upstream if feed is not Feed.NONE else -1,
                entry=upstream < 0,
                optional=nodes[node_index].optional,
                signature=signature_of(event),
            )
        )
    return FlowPlan(flow, tuple(nodes), tuple(steps))


def _names(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names) if names else "none"


def check_inputs(
    plan: FlowPlan, args: Sequence[Any], inputs: Mapping[str, Any]
) -> tuple[tuple[str, ...], ...]:
    """Check that every step of ``plan`` can be called, before anything runs (§11.4).

    Every step is checked, whether or not its branch arm will be taken. An entry step gets
    ``args`` positionally; a step fed by ``|->``/``|=>`` gets one positional value; named
    inputs go to each step that declares a parameter of that name (one not already filled
    positionally) and all of them to a step taking ``**kwargs``.

    Returns:
        For each step, in text order, the names of the inputs it receives.

    Raises:
        ImproperlyConfigured: a step would miss a required parameter, get too many
            positional arguments, or be piped into without a positional parameter; the
            message names the step, the parameter and the inputs given.
    """
    given = _names(sorted(inputs))
    return tuple(_check_step(planned, len(args), inputs, given) for planned in plan.steps)


def _check_step(
    planned: PlanStep, arg_count: int, inputs: Mapping[str, Any], given: str
) -> tuple[str, ...]:
    """The inputs ``planned`` receives, or ImproperlyConfigured when it cannot be called."""
    signature = planned.signature
    where = f"flow step {planned.name!r} ({planned.event.__qualname__})"
    piped = planned.feed is not Feed.NONE
    count = arg_count if planned.entry else int(piped)
    if piped and not signature.positional and not signature.var_positional:
        raise ImproperlyConfigured(
            f"{where}: receives the previous step's value ({planned.feed.value}) but "
            f"takes no positional parameter to hold it (inputs given: {given})"
        )
    if count > len(signature.positional) and not signature.var_positional:
        source = "positional arguments of the call" if planned.entry else "piped value"
        raise ImproperlyConfigured(
            f"{where}: takes {len(signature.positional)} positional parameter(s) "
            f"({_names(signature.positional)}) but would get {count} {source} "
            f"(inputs given: {given})"
        )
    # A parameter filled positionally (by the call's arguments or a pipe) is never
    # filled by name too: the input is simply not passed to this step.
    filled = set(signature.positional[:count])
    taken = tuple(
        name
        for name in inputs
        if (name in signature.keywords and name not in filled)
        or (signature.var_keyword and name not in signature.keywords)
    )
    missing = [n for n in signature.required if n not in filled and n not in taken]
    if missing:
        if planned.entry:
            how = f"the call's {count} positional argument(s)"
        elif piped:
            how = "the piped value (it fills the first parameter only)"
        else:
            how = "a piped value (nothing is piped into this step)"
        raise ImproperlyConfigured(
            f"{where}: required parameter {missing[0]!r} is supplied neither by "
            f"{how} nor by the named inputs (inputs given: {given})"
        )
    return taken
