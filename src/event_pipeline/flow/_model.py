"""Flow values: what a flow *is*, apart from how it is parsed, compiled or run.

A :class:`Flow` is an immutable tree of seven kinds of node::

    step      one event class, with an optional attempts and timeout override
    sequence  two or more items run in turn (a flat tuple: chains never nest)
    parallel  two or more members started together, with a group evaluation
    pipe      its one item receives the value of the node before it
    each      its one item runs one task per item of the value before it
    optional  its one item's failure is tolerated
    branch    a subject, then one arm per route code (0-9), in code order

The constructors keep one canonical shape, so that two flows meaning the same thing built
in different ways compare equal and print the same text: sequences are flattened,
``pipe``/``each`` sit outside ``optional`` and ``branch`` (``pipe(A).optional()`` is
``pipe(A.optional())``), ``pipe`` of a sequence pipes into its first item, and
``optional()`` of an optional flow is that flow.

Deep flows are the rule, not the exception (a 5,000-step chain must work), so nothing
here recurses: a sequence is one tuple, and every walk over nesting (printing, equality,
pickling, pictures) keeps its own stack. Hashes and the nesting the canonical text needs
are computed once, from the children, when a node is built; the text form allows 100
levels of ``{`` and ``(``, and so does the constructor, so every flow round-trips.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn, Union

from .._evaluation import EventExecutionEvaluationState
from .._event import EventBase

if TYPE_CHECKING:
    from types import ModuleType

    from .._flowrun import FlowRun

__all__ = ["MAX_NESTING", "Flow", "FlowLike", "each", "parallel", "pipe", "render_dot", "step"]

#: The most levels of ``{`` and ``(`` (counted together) a flow's text may nest.
MAX_NESTING = 100

FlowKind = Literal["step", "sequence", "parallel", "pipe", "each", "optional", "branch"]
FlowLike = Union["Flow", type[EventBase]]

_STEP: FlowKind = "step"
_SEQUENCE: FlowKind = "sequence"
_PARALLEL: FlowKind = "parallel"
_PIPE: FlowKind = "pipe"
_EACH: FlowKind = "each"
_OPTIONAL: FlowKind = "optional"
_BRANCH: FlowKind = "branch"

_FED = (_PIPE, _EACH)
_LINKS = {_PIPE: "|->", _EACH: "|=>"}
_DEFAULT_EVALUATION = EventExecutionEvaluationState.SUCCESS_ON_ALL_EVENTS_SUCCESS
# How a group evaluation is written inside ``[...]``; the others by their member name.
_EVALUATION_WORDS = {EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS: "any"}

Timeout = int | float


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_attempts(attempts: object) -> int | None:
    if attempts is None:
        return None
    if not _is_int(attempts):
        raise TypeError(f"attempts must be an int, got {attempts!r}")
    assert isinstance(attempts, int)
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1, got {attempts!r}")
    return attempts


def _check_timeout(timeout: object) -> Timeout | None:
    if timeout is None:
        return None
    if not (_is_int(timeout) or isinstance(timeout, float)):
        raise TypeError(f"timeout must be a number of seconds (int or float), got {timeout!r}")
    assert isinstance(timeout, (int, float))
    if isinstance(timeout, float) and not math.isfinite(timeout):
        raise ValueError(f"timeout must be a finite number of seconds, got {timeout!r}")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    return timeout


def _as_flow(value: object, where: str) -> Flow:
    """``value`` as a flow: a Flow as is, an event class as ``step(value)``."""
    if isinstance(value, Flow):
        return value
    if isinstance(value, type) and issubclass(value, EventBase):
        return step(value)
    raise TypeError(f"{where}: expected a Flow or an EventBase subclass, got {value!r}")


class Flow:
    """A composition of events: built with :func:`step`, :func:`parallel`, :func:`pipe`,
    :func:`each` and the methods below, or parsed from text with :meth:`parse`.

    Flows are immutable, hashable and picklable, compare structurally, and print as their
    canonical text form: ``Flow.parse(str(flow), events) == flow``.
    """

    __slots__ = (
        "_attempts",
        "_codes",
        "_evaluation",
        "_event",
        "_hash",
        "_items",
        "_kind",
        "_na",
        "_nc",
        "_np",
        "_nu",
        "_size",
        "_timeout",
    )

    _kind: FlowKind
    _event: type[EventBase] | None
    _attempts: int | None
    _timeout: Timeout | None
    _evaluation: EventExecutionEvaluationState | None
    _items: tuple[Flow, ...]
    _codes: tuple[int, ...]
    _hash: int
    _size: int
    # Levels of '{' and '(' the canonical text of this node needs when printed as an atom
    # (_na), a unit (_nu), a parallel group's place (_np) and a whole chain (_nc).
    _na: int
    _nu: int
    _np: int
    _nc: int

    def __init__(self) -> None:
        raise TypeError(
            "Flow is not built directly: use step(), parallel(), pipe(), each(), "
            "Flow.parse() or an event class"
        )

    # -- building --------------------------------------------------------------------------
    def then(self, *nexts: FlowLike) -> Flow:
        """A sequence: this flow, then each of ``nexts`` in turn.

        Raises:
            TypeError: no flow given, or one that is not a Flow or an event class.
        """
        if not nexts:
            raise TypeError("then() takes at least one flow or event class")
        items = [self]
        items.extend(_as_flow(n, f"then() argument {i + 1}") for i, n in enumerate(nexts))
        return _sequence(items)

    def branch(self, arms: Mapping[int, FlowLike]) -> Flow:
        """After this flow, run the arm of the code it routes to (SPEC §11.5).

        Args:
            arms: route code (an int 0-9) to the flow run for it; at least one.

        Raises:
            TypeError: ``arms`` is not a mapping, a code is not an int, or an arm is not
                a flow.
            ValueError: no arms, or a code outside 0-9.
        """
        if not isinstance(arms, Mapping):
            raise TypeError(f"branch() takes a mapping of route codes to flows, got {arms!r}")
        if not arms:
            raise ValueError("branch() needs at least one arm")
        checked: list[tuple[int, Flow]] = []
        for code, arm in arms.items():
            if not _is_int(code):
                raise TypeError(f"route code must be an int from 0 to 9, got {code!r}")
            if not 0 <= code <= 9:
                raise ValueError(f"route code must be from 0 to 9, got {code!r}")
            checked.append((code, _as_flow(arm, f"branch() arm {code}")))
        checked.sort(key=lambda pair: pair[0])
        if self._kind in _FED:
            return _make(self._kind, items=(self._items[0].branch(dict(checked)),))
        return _make(
            _BRANCH,
            items=(self, *(arm for _, arm in checked)),
            codes=tuple(code for code, _ in checked),
        )

    def optional(self) -> Flow:
        """This flow with its failure tolerated: it neither stops what follows nor fails
        the flow."""
        if self._kind == _OPTIONAL:
            return self
        if self._kind in _FED:
            return _make(self._kind, items=(self._items[0].optional(),))
        return _make(_OPTIONAL, items=(self,))

    # -- text ------------------------------------------------------------------------------
    @classmethod
    def parse(
        cls,
        text: str,
        events: Mapping[str, type[EventBase]] | Iterable[type[EventBase]] | ModuleType,
        *,
        filename: str = "<flow>",
    ) -> Flow:
        """The flow written in ``text`` (SPEC §11.3).

        Args:
            text: the flow in the text form.
            events: the event classes names refer to: a mapping of names to classes, an
                iterable of classes (keyed by ``__name__``) or a module (its event classes).
            filename: shown in error messages.

        Raises:
            FlowSyntaxError: the text does not parse; it carries the position.
            TypeError: ``events`` is none of the above.
        """
        from ._parse import parse

        return parse(text, events, filename=filename)

    def __str__(self) -> str:
        return "".join(_canonical_pieces(self))

    def __repr__(self) -> str:
        return f"Flow({str(self)!r})"

    # -- running ---------------------------------------------------------------------------
    def run(self, *args: Any, **inputs: Any) -> FlowRun:
        """Run this flow once on the default runner (SPEC §11.4) and return its FlowRun."""
        from .._runner import default_runner

        return default_runner().run(self, *args, **inputs)

    # -- pictures --------------------------------------------------------------------------
    def to_mermaid(self) -> str:
        """A Mermaid ``flowchart``: one node per step, named as in ``StepRun.name``."""
        return render_mermaid(self)

    def to_dot(self) -> str:
        """A Graphviz DOT ``digraph``: one node per step, named as in ``StepRun.name``."""
        return render_dot(self)

    # -- introspection ---------------------------------------------------------------------
    @property
    def kind(self) -> FlowKind:
        """``"step"``, ``"sequence"``, ``"parallel"``, ``"pipe"``, ``"each"``,
        ``"optional"`` or ``"branch"``."""
        return self._kind

    @property
    def event(self) -> type[EventBase] | None:
        """A step's event class, else ``None``."""
        return self._event

    @property
    def attempts(self) -> int | None:
        """A step's attempts override, else ``None``."""
        return self._attempts

    @property
    def timeout(self) -> Timeout | None:
        """A step's timeout override in seconds, else ``None``."""
        return self._timeout

    @property
    def evaluation(self) -> EventExecutionEvaluationState | None:
        """A parallel group's evaluation, else ``None``."""
        return self._evaluation

    @property
    def items(self) -> tuple[Flow, ...]:
        """A sequence's items or a group's members; the one wrapped flow of ``pipe``,
        ``each`` and ``optional``; a branch's subject; empty for a step."""
        if self._kind == _BRANCH:
            return self._items[:1]
        return self._items

    @property
    def arms(self) -> dict[int, Flow]:
        """A branch's arms by route code, in code order (a new dict); else empty."""
        return dict(zip(self._codes, self._items[1:], strict=True))

    @property
    def step_count(self) -> int:
        """How many steps the flow has (a step used twice counts twice)."""
        return self._size

    # -- value behaviour -------------------------------------------------------------------
    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Flow is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Flow is immutable: cannot delete {name!r}")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Flow):
            return NotImplemented
        pending = [(self, other)]
        while pending:
            a, b = pending.pop()
            if a is b:
                continue
            if (
                a._hash != b._hash
                or a._kind != b._kind
                or a._event is not b._event
                or a._attempts != b._attempts
                or a._timeout != b._timeout
                or a._evaluation is not b._evaluation
                or a._codes != b._codes
                or len(a._items) != len(b._items)
            ):
                return False
            pending.extend(zip(a._items, b._items, strict=True))
        return True

    def __copy__(self) -> Flow:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Flow:
        return self

    def __reduce__(self) -> tuple[Callable[[tuple[_Record, ...]], Flow], tuple[Any, ...]]:
        # One flat record per node, children before parents: unpickling a deep flow then
        # needs no recursion, and no cached hash (it depends on the process) is stored.
        return _unflatten, (_flatten(self),)


def _make(
    kind: FlowKind,
    *,
    event: type[EventBase] | None = None,
    attempts: int | None = None,
    timeout: Timeout | None = None,
    evaluation: EventExecutionEvaluationState | None = None,
    items: tuple[Flow, ...] = (),
    codes: tuple[int, ...] = (),
) -> Flow:
    """A node from checked parts, with its hash, size and nesting worked out."""
    if kind == _SEQUENCE:
        return _sequence_node(items, None, items)
    node = object.__new__(Flow)
    setter = object.__setattr__
    setter(node, "_kind", kind)
    setter(node, "_event", event)
    setter(node, "_attempts", attempts)
    setter(node, "_timeout", timeout)
    setter(node, "_evaluation", evaluation)
    setter(node, "_items", items)
    setter(node, "_codes", codes)
    setter(
        node,
        "_hash",
        hash((kind, event, attempts, timeout, evaluation, codes, tuple(i._hash for i in items))),
    )
    setter(node, "_size", 1 if kind == _STEP else sum(i._size for i in items))
    na, nu, np_, nc = _nesting(node)
    if nc > MAX_NESTING:
        raise ValueError(f"flow nests {nc} levels of '{{' and '(' deep; the most is {MAX_NESTING}")
    setter(node, "_na", na)
    setter(node, "_nu", nu)
    setter(node, "_np", np_)
    setter(node, "_nc", nc)
    return node


def _nesting(node: Flow) -> tuple[int, int, int, int]:
    """Levels of '{'/'(' that ``node``'s canonical text needs (see ``_canonical_pieces``)."""
    kind, items = node._kind, node._items
    if kind == _STEP:
        return 0, 0, 0, 0
    if kind == _PARALLEL:
        inner = max(m._nu for m in items)
        unit = 1 + inner
        place = inner if node._evaluation is _DEFAULT_EVALUATION else unit
        return unit, unit, place, place
    if kind in _FED:
        chain = items[0]._np
        return 1 + chain, 1 + chain, 1 + chain, chain
    if kind == _OPTIONAL:
        unit = items[0]._na
        return 1 + unit, unit, unit, unit
    core = items[0]
    if core._kind == _OPTIONAL:
        core = core._items[0]
    unit = max(core._na, 1 + max(arm._nc for arm in items[1:]))
    return 1 + unit, unit, unit, unit


def _sequence(items: Sequence[Flow]) -> Flow:
    """The flat sequence of ``items`` (nested sequences spliced in)."""
    # ``f = f.then(X)`` in a loop is how long chains get built: the sequence's hash, size and
    # nesting are extended from the leading sequence's rather than worked out again.
    prefix = items[0] if items[0]._kind == _SEQUENCE else None
    added: list[Flow] = []
    for item in items[1:] if prefix is not None else items:
        if item._kind == _SEQUENCE:
            added.extend(item._items)
        else:
            added.append(item)
    if prefix is None and len(added) == 1:
        return added[0]
    flat = (*prefix._items, *added) if prefix is not None else tuple(added)
    return _sequence_node(flat, prefix, added)


_SEQUENCE_SEED = hash(_SEQUENCE)


def _sequence_node(flat: tuple[Flow, ...], prefix: Flow | None, added: Sequence[Flow]) -> Flow:
    """A sequence of ``flat``, whose first items are ``prefix``'s and the rest ``added``."""
    digest, size, chain = (
        (prefix._hash, prefix._size, prefix._nc) if prefix is not None else (_SEQUENCE_SEED, 0, 0)
    )
    for item in added:
        digest = hash((digest, item._hash))
        size += item._size
        chain = max(chain, item._items[0]._np if item._kind in _FED else item._np)
    if chain > MAX_NESTING:
        raise ValueError(
            f"flow nests {chain} levels of '{{' and '(' deep; the most is {MAX_NESTING}"
        )
    node = object.__new__(Flow)
    setter = object.__setattr__
    for name, value in (
        ("_kind", _SEQUENCE),
        ("_event", None),
        ("_attempts", None),
        ("_timeout", None),
        ("_evaluation", None),
        ("_items", flat),
        ("_codes", ()),
        ("_hash", digest),
        ("_size", size),
        ("_na", 1 + chain),
        ("_nu", 1 + chain),
        ("_np", 1 + chain),
        ("_nc", chain),
    ):
        setter(node, name, value)
    return node


def sequence(items: Sequence[Flow]) -> Flow:
    """``items[0].then(*items[1:])`` in one step (for the parser): O(total length)."""
    return _sequence(items)


def step(
    event: type[EventBase], *, attempts: int | None = None, timeout: Timeout | None = None
) -> Flow:
    """One event as a flow step.

    Args:
        event: an :class:`EventBase` subclass. It is never modified.
        attempts: calls of ``process`` a task of this step may make (``>= 1``), overriding
            the event's ``max_attempts`` for this step only; an event without a retry
            policy then retries any ``Exception`` with ``RetryPolicy()``'s backoff.
        timeout: seconds allowed to one attempt of this step (``> 0``), overriding the
            event's ``timeout``.

    Raises:
        TypeError: ``event`` is not an event class, or an override has the wrong type.
        ValueError: an override is out of range.
    """
    if not (isinstance(event, type) and issubclass(event, EventBase)):
        raise TypeError(f"step() takes an EventBase subclass, got {event!r}")
    if event is EventBase:
        raise TypeError("step() takes a subclass of EventBase, not EventBase itself")
    return _make(
        _STEP, event=event, attempts=_check_attempts(attempts), timeout=_check_timeout(timeout)
    )


def parallel(
    *members: FlowLike,
    evaluation: EventExecutionEvaluationState = _DEFAULT_EVALUATION,
) -> Flow:
    """A group whose members (two or more) start together.

    Args:
        members: flows or event classes, in declaration order.
        evaluation: how the members' outcomes decide the group's (SPEC §8); a tolerated
            member counts as a success.

    Raises:
        TypeError: a member is not a flow or event class, or ``evaluation`` is not an
            :class:`EventExecutionEvaluationState` member.
        ValueError: fewer than two members.
    """
    if len(members) < 2:
        raise ValueError(f"parallel() needs at least two members, got {len(members)}")
    if not isinstance(evaluation, EventExecutionEvaluationState):
        raise TypeError(
            f"evaluation must be an EventExecutionEvaluationState member, got {evaluation!r}"
        )
    flows = tuple(_as_flow(m, f"parallel() member {i + 1}") for i, m in enumerate(members))
    return _make(_PARALLEL, evaluation=evaluation, items=flows)


def _fed(kind: FlowKind, value: FlowLike) -> Flow:
    flow = _as_flow(value, f"{kind}()")
    first = flow._items[0] if flow._kind == _SEQUENCE else flow
    if first._kind in _FED:
        raise ValueError(
            f"{kind}() of a flow that already receives the previous value ({first._kind}()): {flow}"
        )
    if flow._kind == _SEQUENCE:
        return _sequence((_make(kind, items=(first,)), *flow._items[1:]))
    return _make(kind, items=(flow,))


def pipe(value: FlowLike) -> Flow:
    """``value`` receiving the previous node's value as its first positional argument.

    Raises:
        TypeError: ``value`` is not a flow or an event class.
        ValueError: ``value`` already begins with ``pipe``/``each``.
    """
    return _fed(_PIPE, value)


def each(value: FlowLike) -> Flow:
    """``value`` run as one task per item of the previous node's value, as
    ``runner.map`` does.

    Raises:
        TypeError: ``value`` is not a flow or an event class.
        ValueError: ``value`` already begins with ``pipe``/``each``.
    """
    return _fed(_EACH, value)


# -- canonical text ---------------------------------------------------------------------------
# The printer is a loop over a stack of pieces: a piece is text, or a node still to print in
# one of four places: a whole chain, the place of a parallel group (after a link), a unit
# (a group member, or what suffixes follow), or a branch arm (a chain that must begin with
# a link).
_CHAIN, _PLACE, _UNIT, _ARM = range(4)
_Piece = str | tuple[int, Flow]


def evaluation_word(evaluation: EventExecutionEvaluationState) -> str:
    """How ``evaluation`` is written inside ``[...]``."""
    return _EVALUATION_WORDS.get(evaluation, evaluation.name)


def _format_number(value: Timeout) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _step_text(node: Flow) -> str:
    assert node._event is not None
    text = node._event.__name__
    if node._attempts is not None:
        text += f" * {node._attempts}"
    if node._timeout is not None:
        text += f" ~ {_format_number(node._timeout)}"
    return text


def _expand(place: int, node: Flow) -> list[_Piece]:
    kind = node._kind
    if place in (_CHAIN, _ARM):
        items = node._items if kind == _SEQUENCE else (node,)
        out: list[_Piece] = []
        for index, item in enumerate(items):
            if item._kind in _FED:
                out.append(f"{' ' if index else ''}{_LINKS[item._kind]} ")
                out.append((_PLACE, item._items[0]))
            else:
                if index:
                    out.append(" -> ")
                elif place == _ARM:
                    out.append("-> ")
                out.append((_PLACE, item))
        return out
    if place == _PLACE and kind == _PARALLEL and node._evaluation is _DEFAULT_EVALUATION:
        return _joined(node._items)
    core, optional = node, False
    codes: tuple[int, ...] = ()
    arms: tuple[Flow, ...] = ()
    if core._kind == _BRANCH:
        codes = core._codes
        arms = core._items[1:]
        core = core._items[0]
    if core._kind == _OPTIONAL:
        optional = True
        core = core._items[0]
    out = []
    if core._kind == _STEP:
        out.append(_step_text(core))
    elif core._kind == _PARALLEL:
        out.append("{")
        out.extend(_joined(core._items))
        assert core._evaluation is not None
        word = (
            ""
            if core._evaluation is _DEFAULT_EVALUATION
            else f"[{evaluation_word(core._evaluation)}]"
        )
        out.append("}" + word)
    else:
        out.extend(("{", (_CHAIN, core), "}"))
    if optional:
        out.append("?")
    if codes:
        out.append(" (")
        for index, (code, arm) in enumerate(zip(codes, arms, strict=True)):
            out.append(f"{', ' if index else ''}{code} ")
            out.append((_ARM, arm))
        out.append(")")
    return out


def _joined(members: tuple[Flow, ...]) -> list[_Piece]:
    out: list[_Piece] = []
    for index, member in enumerate(members):
        if index:
            out.append(" || ")
        out.append((_UNIT, member))
    return out


def _canonical_pieces(flow: Flow) -> Iterator[str]:
    stack: list[_Piece] = [(_CHAIN, flow)]
    while stack:
        piece = stack.pop()
        if isinstance(piece, str):
            yield piece
        else:
            stack.extend(reversed(_expand(*piece)))


# -- pickling ---------------------------------------------------------------------------------
_Record = tuple[
    FlowKind,
    "type[EventBase] | None",
    "int | None",
    "Timeout | None",
    "EventExecutionEvaluationState | None",
    int,
    tuple[int, ...],
]


def _flatten(flow: Flow) -> tuple[_Record, ...]:
    order: list[Flow] = []
    stack = [flow]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node._items)
    order.reverse()
    return tuple(
        (n._kind, n._event, n._attempts, n._timeout, n._evaluation, len(n._items), n._codes)
        for n in order
    )


def _unflatten(records: tuple[_Record, ...]) -> Flow:
    built: list[Flow] = []
    for kind, event, attempts, timeout, evaluation, count, codes in records:
        items: tuple[Flow, ...] = ()
        if count:
            items = tuple(built[-count:])
            del built[-count:]
        built.append(
            _make(
                kind,
                event=event,
                attempts=attempts,
                timeout=timeout,
                evaluation=evaluation,
                items=items,
                codes=codes,
            )
        )
    (flow,) = built
    return flow


# -- pictures ---------------------------------------------------------------------------------
class _Graph:
    """A flow as nodes (its steps, in text order), edges and parallel groups."""

    __slots__ = ("edges", "groups", "names", "optional")

    def __init__(self) -> None:
        #: Step names as in ``StepRun.name``, in text order.
        self.names: list[str] = []
        #: Whether each step is tolerated (``?`` on the step itself).
        self.optional: list[bool] = []
        #: (from step, to step, label or "").
        self.edges: list[tuple[int, int, str]] = []
        #: (first step, end step, label) of each parallel group, outer groups first.
        self.groups: list[tuple[int, int, str]] = []


def step_names(events: Sequence[type[EventBase]]) -> list[str]:
    """Names of steps in text order: the event's ``__name__``, then ``Name#2``, ``Name#3``."""
    seen: dict[str, int] = {}
    names = []
    for event in events:
        base = event.__name__
        count = seen.get(base, 0) + 1
        seen[base] = count
        names.append(base if count == 1 else f"{base}#{count}")
    return names


def _graph(flow: Flow) -> _Graph:
    # Pre-order: each visited node gets a record; steps are numbered as they are met,
    # which is text order. Then, children before parents (reverse pre-order), each node's
    # entries and exits are worked out and the edges between siblings drawn.
    graph = _Graph()
    nodes: list[Flow] = []
    children: list[list[int]] = []
    step_of: list[int] = []
    events: list[type[EventBase]] = []
    firsts: list[int] = []
    stack: list[tuple[Flow, int]] = [(flow, -1)]
    while stack:
        node, parent = stack.pop()
        index = len(nodes)
        nodes.append(node)
        children.append([])
        firsts.append(len(events))
        if parent >= 0:
            children[parent].append(index)
        if node._kind == _STEP:
            assert node._event is not None
            step_of.append(len(events))
            events.append(node._event)
        else:
            step_of.append(-1)
            stack.extend((item, index) for item in reversed(node._items))
    graph.names = step_names(events)
    graph.optional = [False] * len(events)
    entries: list[list[tuple[int, str]]] = [[] for _ in nodes]
    exits: list[list[int]] = [[] for _ in nodes]
    for index in range(len(nodes) - 1, -1, -1):
        node, kids = nodes[index], children[index]
        kind = node._kind
        if kind == _STEP:
            entries[index] = [(step_of[index], "")]
            exits[index] = [step_of[index]]
        elif kind == _SEQUENCE:
            for before, after in itertools.pairwise(kids):
                _connect(graph, exits[before], entries[after], "")
            entries[index], exits[index] = entries[kids[0]], exits[kids[-1]]
        elif kind == _PARALLEL:
            entries[index] = [e for kid in kids for e in entries[kid]]
            exits[index] = [e for kid in kids for e in exits[kid]]
            end = firsts[index] + node._size
            assert node._evaluation is not None
            label = (
                "" if node._evaluation is _DEFAULT_EVALUATION else evaluation_word(node._evaluation)
            )
            graph.groups.append((firsts[index], end, label))
        elif kind in _FED:
            link = _LINKS[kind]
            entries[index] = [(e, label or link) for e, label in entries[kids[0]]]
            exits[index] = exits[kids[0]]
        elif kind == _OPTIONAL:
            entries[index], exits[index] = entries[kids[0]], exits[kids[0]]
            if node._items[0]._kind == _STEP:
                graph.optional[step_of[kids[0]]] = True
        else:
            subject = kids[0]
            entries[index] = entries[subject]
            ends = [] if 1 in node._codes else list(exits[subject])
            for code, arm in zip(node._codes, kids[1:], strict=True):
                _connect(graph, exits[subject], entries[arm], str(code))
                ends.extend(exits[arm])
            exits[index] = ends
    # Outer groups first where two begin at the same step.
    graph.groups.sort(key=lambda group: (group[0], -group[1]))
    graph.edges.sort()
    return graph


def _connect(graph: _Graph, sources: list[int], targets: list[tuple[int, str]], code: str) -> None:
    for target, link in targets:
        label = f"{code} {link}" if code and link else code or link
        graph.edges.extend((source, target, label) for source in sources)


def _nested_groups(graph: _Graph) -> Iterator[tuple[str, int]]:
    """Opening and closing of groups around steps, in text order: ("open", group),
    ("step", index), ("close", group)."""
    open_ends: list[tuple[int, int]] = []
    pending = list(reversed(range(len(graph.groups))))
    for index in range(len(graph.names)):
        while open_ends and open_ends[-1][0] <= index:
            yield "close", open_ends.pop()[1]
        while pending and graph.groups[pending[-1]][0] == index:
            group = pending.pop()
            open_ends.append((graph.groups[group][1], group))
            yield "open", group
        yield "step", index
    while open_ends:
        yield "close", open_ends.pop()[1]


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_dot(
    flow: Flow,
    fills: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
) -> str:
    """``flow`` as Graphviz DOT; ``fills`` colours each step, ``notes`` adds a second line
    to its label (both in text order)."""
    graph = _graph(flow)
    lines = [
        "digraph flow {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    depth = 1
    for what, index in _nested_groups(graph):
        pad = "  " * depth
        if what == "open":
            label = graph.groups[index][2]
            lines.append(f"{pad}subgraph cluster_{index} {{")
            lines.append(f'{pad}  style=dashed; color="#888888"; label={_dot_quote(label)};')
            depth += 1
        elif what == "close":
            depth -= 1
            lines.append("  " * depth + "}")
        else:
            label = graph.names[index]
            if notes is not None:
                label += "\n" + notes[index]
            attributes = [f"label={_dot_quote(label)}"]
            if fills is not None:
                attributes.append(f"fillcolor={_dot_quote(fills[index])}")
            if graph.optional[index]:
                attributes.append('style="rounded,filled,dashed"')
            lines.append(f"{pad}s{index} [{', '.join(attributes)}];")
    for source, target, label in graph.edges:
        extra = f" [label={_dot_quote(label)}]" if label else ""
        lines.append(f"  s{source} -> s{target}{extra};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    # Inside a quoted label Mermaid ends at '"' and, in an edge label, at '|'; both are
    # written as entities. ('#' followed by digits and '"' is not an entity, so names such
    # as 'Pack#2' stay as they are.)
    return text.replace('"', "#quot;").replace("|", "#124;")


def render_mermaid(flow: Flow) -> str:
    """``flow`` as a Mermaid ``flowchart``."""
    graph = _graph(flow)
    lines = ["flowchart LR"]
    depth = 1
    for what, index in _nested_groups(graph):
        pad = "    " * depth
        if what == "open":
            label = graph.groups[index][2] or "parallel"
            lines.append(f'{pad}subgraph g{index} ["{_mermaid_text(label)}"]')
            depth += 1
        elif what == "close":
            depth -= 1
            lines.append("    " * depth + "end")
        else:
            name = _mermaid_text(graph.names[index])
            shape = f'(["{name}"])' if graph.optional[index] else f'["{name}"]'
            lines.append(f"{pad}s{index}{shape}")
    for source, target, label in graph.edges:
        arrow = f'-->|"{_mermaid_text(label)}"|' if label else "-->"
        lines.append(f"    s{source} {arrow} s{target}")
    return "\n".join(lines) + "\n"
