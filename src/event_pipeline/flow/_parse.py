"""The text form of flows (SPEC §11.3): a tokenizer and a hand-written parser.

::

    text ─► tokens (one regular expression; a bad character becomes an error token, raised
            only if the parser gets that far, so the first error in the text is reported)
         ─► a loop over tokens with an explicit stack of open frames ─► Flow

The grammar, with one addition (a ``{...}`` block, or the whole text, may begin with
``|->``/``|=>``, which is how a chain that receives the previous value is written when it
is not right after a link — ``pipe(A)`` alone prints as ``|-> A``)::

    flow   = chain EOF
    chain  = [ "|->" | "|=>" ] par { link par }
    link   = "->" | "|->" | "|=>"
    par    = unit { "||" unit }
    unit   = atom { suffix }           each kind of suffix at most once, in any order
    atom   = NAME | "{" chain "}"
    suffix = "*" INT | "~" NUMBER | "?" | "[" NAME "]" | "(" arm { "," arm } [","] ")"
    arm    = DIGIT link chain

Frames are chains (the whole text, a ``{`` block, a branch arm) and branch lists. A chain
links one par after another, so a chain of any length is a loop, never a recursion; only
``{`` and ``(`` push a frame, at most 100 deep. The suffixes of a unit are applied in one
order whatever order they are written in: attempts and timeout (a step's own), the group
evaluation, ``?``, then the branch list — so ``A (0 -> B)?`` is ``A?`` with a branch, and
``{A (0 -> B)}?`` makes the whole branch tolerated.

Nothing is kept between calls and nothing is printed: every problem is a
:class:`FlowSyntaxError` carrying the file name, line, columns and the source line.
"""

from __future__ import annotations

import difflib
import math
import re
import types
from collections.abc import Callable, Iterable, Mapping

from .._evaluation import EventExecutionEvaluationState
from .._event import EventBase
from ..exceptions import FlowSyntaxError
from ._model import MAX_NESTING, Flow, each, parallel, pipe, sequence, step

__all__ = ["parse"]

Events = Mapping[str, type[EventBase]] | Iterable[type[EventBase]] | types.ModuleType

_TOKEN = re.compile(
    r"""
      (?P<space>\s+|\#[^\n]*)
    | (?P<number>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<op>\|->|\|=>|\|\||->|[{}()\[\],*~?])
    | (?P<name>[^\W\d]\w*)
    """,
    re.VERBOSE,
)
# A token: (kind, text, start, end). The kind of an operator is its text; the others are
# "name", "number", "eof", and "error" (whose text is the message).
_Token = tuple[str, str, int, int]

_LINKS = ("->", "|->", "|=>")
_INTEGER = re.compile(r"-?\d+")
_HINTS = {
    "-": "did you mean '->'?",
    ">": "did you mean '->'?",
    "=": "did you mean '|=>'?",
    "|": "did you mean '||', '|->' or '|=>'?",
    "&": "did you mean '||'?",
    '"': "names are written without quotes",
    "'": "names are written without quotes",
}
_EVALUATIONS: dict[str, EventExecutionEvaluationState] = {
    "all": EventExecutionEvaluationState.SUCCESS_ON_ALL_EVENTS_SUCCESS,
    "any": EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS,
    **{state.name: state for state in EventExecutionEvaluationState},
}

# Parser states: what the next token may be.
_CHAIN_START, _ATOM, _SUFFIX, _AFTER_UNIT, _ARM_START = range(5)
# Kinds of chain frame.
_TOP, _BLOCK, _ARM = range(3)


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    match = _TOKEN.match
    position, length, last_end = 0, len(text), 0
    while position < length:
        found = match(text, position)
        if found is None:
            char = text[position]
            hint = _HINTS.get(char)
            message = f"unexpected character {char!r}" + (f"; {hint}" if hint else "")
            tokens.append(("error", message, position, position + 1))
            return tokens
        kind = found.lastgroup
        end = found.end()
        if kind != "space":
            value = found.group()
            if kind == "name" and not value.isidentifier():
                tokens.append(("error", f"{value!r} is not a valid name", position, end))
                return tokens
            tokens.append((value if kind == "op" else str(kind), value, position, end))
            last_end = end
        position = end
    # End of input is placed right after the last token: that is where something is missing.
    tokens.append(("eof", "", last_end, last_end))
    return tokens


def _event_table(events: object) -> dict[str, list[type[EventBase]]]:
    """Names to the event classes they may mean (more than one: ambiguous)."""
    if isinstance(events, types.ModuleType):
        return _by_name(
            value
            for value in vars(events).values()
            if isinstance(value, type) and issubclass(value, EventBase) and value is not EventBase
        )
    if isinstance(events, Mapping):
        return _from_mapping(events)
    if isinstance(events, Iterable) and not isinstance(events, (str, bytes)):
        return _by_name(events)
    raise TypeError(
        "events must be a mapping of names to event classes, an iterable of event "
        f"classes or a module, got {events!r}"
    )


def _from_mapping(events: Mapping[object, object]) -> dict[str, list[type[EventBase]]]:
    table: dict[str, list[type[EventBase]]] = {}
    for key, value in events.items():
        if not isinstance(key, str):
            raise TypeError(f"events: names must be str, got {key!r}")
        if not (isinstance(value, type) and issubclass(value, EventBase)):
            raise TypeError(f"events[{key!r}]: expected an EventBase subclass, got {value!r}")
        table[key] = [value]
    return table


def _by_name(classes: Iterable[object]) -> dict[str, list[type[EventBase]]]:
    grouped: dict[str, list[type[EventBase]]] = {}
    for value in classes:
        if not (isinstance(value, type) and issubclass(value, EventBase)):
            raise TypeError(f"events: expected EventBase subclasses, got {value!r}")
        same_name = grouped.setdefault(value.__name__, [])
        if not any(known is value for known in same_name):
            same_name.append(value)
    return grouped


def parse(text: str, events: Events, *, filename: str = "<flow>") -> Flow:
    """The flow written in ``text``; see :meth:`Flow.parse`.

    Raises:
        FlowSyntaxError: the text does not parse.
        TypeError: ``text`` is not a str, or ``events`` is not a mapping, an iterable of
            event classes or a module.
    """
    if not isinstance(text, str):
        raise TypeError(f"the text of a flow must be a str, got {text!r}")
    return _Parser(text, _event_table(events), filename).parse()


class _Chain:
    """An open chain: the whole text, a ``{`` block or a branch arm."""

    __slots__ = ("code", "items", "kind", "link", "members", "opener", "par_start")

    def __init__(self, kind: int, opener: int, link: str | None = None, code: int = -1) -> None:
        self.kind = kind
        #: Token index of the '{' or of the arm's route code (-1 for the whole text).
        self.opener = opener
        self.code = code
        #: The pars read so far, each already wrapped by the link before it.
        self.items: list[Flow] = []
        #: The units of the par being read.
        self.members: list[Flow] = []
        #: The link before the par being read ("->", "|->", "|=>"), or None.
        self.link = link
        self.par_start = -1


class _Arms:
    """An open branch list."""

    __slots__ = ("arms", "opener", "unit")

    def __init__(self, unit: _Unit, opener: int) -> None:
        self.unit = unit
        self.opener = opener
        self.arms: dict[int, Flow] = {}


class _Unit:
    """An atom and the suffixes read after it so far."""

    __slots__ = ("arms", "attempts", "block", "evaluation", "event", "optional", "start", "timeout")

    def __init__(self, start: int, event: type[EventBase] | None, block: Flow | None) -> None:
        self.start = start
        self.event = event
        self.block = block
        self.attempts: int | None = None
        self.timeout: int | float | None = None
        self.evaluation: EventExecutionEvaluationState | None = None
        self.optional = False
        self.arms: dict[int, Flow] | None = None


class _Parser:
    """One parse of one text (a new parser per call: nothing is shared)."""

    def __init__(self, text: str, table: dict[str, list[type[EventBase]]], filename: str) -> None:
        self.text = text
        self.table = table
        self.filename = filename
        self.tokens = _tokenize(text)
        # The loop's state: open frames, what the next token may be, where it is, the unit
        # being read, and how many frames are arm chains (they do not count as nesting).
        self.stack: list[_Chain | _Arms] = [_Chain(_TOP, -1)]
        self.state = _CHAIN_START
        self.index = 0
        self.unit: _Unit | None = None
        self.arm_chains = 0
        self.result: Flow | None = None

    # -- errors ----------------------------------------------------------------------------
    def error(self, message: str, index: int) -> FlowSyntaxError:
        """A FlowSyntaxError at token ``index``."""
        _, _, start, end = self.tokens[index]
        line_start = self.text.rfind("\n", 0, start) + 1
        line_end = self.text.find("\n", start)
        line = self.text[line_start : len(self.text) if line_end < 0 else line_end]
        lineno = self.text.count("\n", 0, start) + 1
        offset = start - line_start + 1
        end_offset = max(end - line_start + 1, offset + 1)
        return FlowSyntaxError(
            message, (self.filename, lineno, offset, line.rstrip("\r"), lineno, end_offset)
        )

    def where(self, index: int) -> str:
        start = self.tokens[index][2]
        line_start = self.text.rfind("\n", 0, start) + 1
        return f"line {self.text.count(chr(10), 0, start) + 1}, column {start - line_start + 1}"

    def describe(self, index: int) -> str:
        kind, value, _, _ = self.tokens[index]
        return "end of input" if kind == "eof" else repr(value)

    def unclosed(self, stack: list[_Chain | _Arms]) -> str:
        """What is still open, for messages at the end of input."""
        for frame in reversed(stack):
            if isinstance(frame, _Arms):
                return f": unclosed '(' opened at {self.where(frame.opener)}"
            if frame.kind == _BLOCK:
                return f": unclosed '{{' opened at {self.where(frame.opener)}"
        return ""

    # -- names -----------------------------------------------------------------------------
    def resolve(self, index: int) -> type[EventBase]:
        name = self.tokens[index][1]
        found = self.table.get(name)
        if found is None:
            message = f"unknown event {name!r}"
            close = difflib.get_close_matches(name, list(self.table), n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
            elif self.table:
                known = sorted(self.table)
                more = ", ..." if len(known) > 10 else ""
                message += f" (known: {', '.join(known[:10])}{more})"
            else:
                message += " (no event classes were given)"
            raise self.error(message, index)
        if len(found) > 1:
            names = " and ".join(f"{cls.__module__}.{cls.__qualname__}" for cls in found)
            raise self.error(
                f"{name!r} names {len(found)} different event classes: {names}; pass a "
                f"mapping of names to classes to say which one",
                index,
            )
        return found[0]

    # -- building --------------------------------------------------------------------------
    def built(self, index: int, make: Callable[..., Flow], *args: object) -> Flow:
        """``make(*args)``, with a model error turned into a FlowSyntaxError at ``index``."""
        try:
            return make(*args)
        except (TypeError, ValueError) as exc:
            raise self.error(str(exc), index) from None

    def finish_unit(self, unit: _Unit) -> Flow:
        try:
            if unit.event is not None:
                flow = step(unit.event, attempts=unit.attempts, timeout=unit.timeout)
            else:
                assert unit.block is not None
                flow = unit.block
                if unit.evaluation is not None:
                    flow = parallel(*flow.items, evaluation=unit.evaluation)
            if unit.optional:
                flow = flow.optional()
            if unit.arms is not None:
                flow = flow.branch(unit.arms)
        except (TypeError, ValueError) as exc:
            raise self.error(str(exc), unit.start) from None
        return flow

    def close_par(self, chain: _Chain) -> None:
        members = chain.members
        flow = members[0] if len(members) == 1 else self.built(chain.par_start, parallel, *members)
        if chain.link == "|->":
            flow = self.built(chain.par_start, pipe, flow)
        elif chain.link == "|=>":
            flow = self.built(chain.par_start, each, flow)
        chain.items.append(flow)
        chain.members = []

    def close_chain(self, chain: _Chain) -> Flow:
        self.close_par(chain)
        start = max(chain.opener, 0)
        return self.built(start, sequence, chain.items)

    # -- the loop --------------------------------------------------------------------------
    def parse(self) -> Flow:
        """Run the loop: each state's handler reads the token at ``self.index``."""
        if self.tokens[0][0] == "eof":
            raise self.error("empty flow: expected an event name or '{'", 0)
        handlers = {
            _CHAIN_START: self.chain_start,
            _ATOM: self.atom,
            _SUFFIX: self.suffix_or_end,
            _AFTER_UNIT: self.after_unit,
            _ARM_START: self.arm_start,
        }
        while self.result is None:
            kind = self.tokens[self.index][0]
            if kind == "error":
                raise self.error(self.tokens[self.index][1], self.index)
            handlers[self.state](kind)
        return self.result

    def chain(self) -> _Chain:
        frame = self.stack[-1]
        assert isinstance(frame, _Chain)
        return frame

    def open_frame(self, frame: _Chain | _Arms) -> None:
        """Push a '{' block or a '(' branch list, counting the nesting."""
        if len(self.stack) - self.arm_chains >= MAX_NESTING + 1:
            raise self.error(
                f"flow nests deeper than {MAX_NESTING} levels of '{{' and '('", self.index
            )
        self.stack.append(frame)

    def chain_start(self, kind: str) -> None:
        # Only a block or the whole text may begin with a link: an arm has its own.
        frame = self.chain()
        if kind in ("|->", "|=>") and frame.kind != _ARM:
            frame.link = kind
            self.index += 1
        self.state = _ATOM

    def atom(self, kind: str) -> None:
        frame = self.chain()
        if not frame.members:
            frame.par_start = self.index
        if kind == "name":
            self.unit = _Unit(self.index, self.resolve(self.index), None)
            self.index += 1
            self.state = _SUFFIX
        elif kind == "{":
            self.open_frame(_Chain(_BLOCK, self.index))
            self.index += 1
            self.state = _CHAIN_START
        else:
            raise self.expected_atom(self.index, self.stack)

    def suffix_or_end(self, kind: str) -> None:
        unit = self.unit
        assert unit is not None
        if kind == "(":
            if unit.arms is not None:
                raise self.error("branch list given twice", self.index)
            self.open_frame(_Arms(unit, self.index))
            self.unit = None
            self.index += 1
            self.state = _ARM_START
        elif kind in ("*", "~", "?", "["):
            self.index = self.suffix(self.index, unit)
        else:
            self.chain().members.append(self.finish_unit(unit))
            self.unit = None
            self.state = _AFTER_UNIT

    def after_unit(self, kind: str) -> None:
        frame = self.chain()
        if kind == "||":
            self.index += 1
            self.state = _ATOM
        elif kind in _LINKS:
            self.close_par(frame)
            frame.link = kind
            self.index += 1
            self.state = _ATOM
        elif kind == "}" and frame.kind == _BLOCK:
            block = self.close_chain(frame)
            self.stack.pop()
            self.unit = _Unit(frame.opener, None, block)
            self.index += 1
            self.state = _SUFFIX
        elif kind in (",", ")") and frame.kind == _ARM:
            self.close_arm(frame, kind)
        elif kind == "eof" and frame.kind == _TOP:
            self.result = self.close_chain(frame)
        else:
            raise self.unexpected(self.index, frame, self.stack)

    def close_arm(self, frame: _Chain, kind: str) -> None:
        flow = self.close_chain(frame)
        self.stack.pop()
        self.arm_chains -= 1
        arms = self.stack[-1]
        assert isinstance(arms, _Arms)
        arms.arms[frame.code] = flow
        self.index += 1
        if kind == ",":
            self.state = _ARM_START
        else:
            self.close_arms(arms)

    def close_arms(self, arms: _Arms) -> None:
        self.stack.pop()
        self.unit = arms.unit
        self.unit.arms = arms.arms
        self.state = _SUFFIX

    def arm_start(self, kind: str) -> None:
        arms = self.stack[-1]
        assert isinstance(arms, _Arms)
        if kind == ")" and arms.arms:  # after a trailing comma
            self.index += 1
            self.close_arms(arms)
            return
        code = self.route_code(self.index, arms)
        link = self.tokens[self.index + 1][0]
        if link not in _LINKS:
            raise self.error(
                f"expected '->', '|->' or '|=>' after route code {code}, "
                f"found {self.describe(self.index + 1)}",
                self.index + 1,
            )
        self.stack.append(_Chain(_ARM, self.index, link, code))
        self.arm_chains += 1
        self.index += 2
        self.state = _ATOM

    # -- pieces of the loop ----------------------------------------------------------------
    def route_code(self, index: int, arms: _Arms) -> int:
        kind, value, _, _ = self.tokens[index]
        if kind != "number":
            found = self.describe(index)
            if kind == ")":
                message = "a branch list needs at least one arm, as in 'A (0 -> B)'"
            else:
                message = f"expected a route code (a digit 0-9) to begin an arm, found {found}"
            raise self.error(message, index)
        if len(value) != 1:
            raise self.error(f"route code must be a single digit 0-9, found {value!r}", index)
        code = int(value)
        if code in arms.arms:
            raise self.error(f"route {code} given twice in this branch list", index)
        return code

    def suffix(self, index: int, unit: _Unit) -> int:
        """Read the suffix at ``index`` into ``unit``; the index after it."""
        kind = self.tokens[index][0]
        if kind == "?":
            if unit.optional:
                raise self.error("'?' given twice", index)
            unit.optional = True
            return index + 1
        if kind == "[":
            return self.group_evaluation(index, unit)
        what = "attempts" if kind == "*" else "timeout"
        if unit.event is None:
            raise self.error(
                f"{what} ('{kind}') applies to an event name only, as in 'A {kind} 3'", index
            )
        if (unit.attempts if kind == "*" else unit.timeout) is not None:
            raise self.error(f"{what} given twice", index)
        if kind == "*":
            unit.attempts = self.attempts(index + 1)
        else:
            unit.timeout = self.timeout(index + 1)
        return index + 2

    def group_evaluation(self, index: int, unit: _Unit) -> int:
        """Read ``[NAME]`` at ``index``; the index after it."""
        if unit.block is None or unit.block.kind != "parallel":
            raise self.error(
                "a group evaluation such as '[any]' applies only to a parallel group, "
                "as in '{A || B}[any]'",
                index,
            )
        if unit.evaluation is not None:
            raise self.error("group evaluation given twice", index)
        unit.evaluation = self.evaluation(index + 1)
        if self.tokens[index + 2][0] != "]":
            raise self.error(
                f"expected ']' after the group evaluation, found {self.describe(index + 2)}",
                index + 2,
            )
        return index + 3

    def attempts(self, index: int) -> int:
        kind, value, _, _ = self.tokens[index]
        if kind != "number" or not _INTEGER.fullmatch(value):
            raise self.error(
                f"expected a whole number of attempts after '*', found {self.describe(index)}",
                index,
            )
        attempts = self.integer(index)
        if attempts < 1:
            raise self.error(f"attempts must be at least 1, found {value}", index)
        return attempts

    def timeout(self, index: int) -> int | float:
        kind, value, _, _ = self.tokens[index]
        if kind != "number":
            raise self.error(
                f"expected a number of seconds after '~', found {self.describe(index)}", index
            )
        timeout = self.integer(index) if _INTEGER.fullmatch(value) else float(value)
        if not timeout > 0:
            raise self.error(f"timeout must be positive, found {value}", index)
        if not math.isfinite(timeout):
            raise self.error(f"timeout must be a finite number of seconds, found {value}", index)
        return timeout

    def integer(self, index: int) -> int:
        try:
            return int(self.tokens[index][1])
        except ValueError:  # more digits than int() converts
            raise self.error("number too long", index) from None

    def evaluation(self, index: int) -> EventExecutionEvaluationState:
        kind, value, _, _ = self.tokens[index]
        if kind == "name" and value in _EVALUATIONS:
            return _EVALUATIONS[value]
        message = (
            f"expected a group evaluation (all, any or a state's name) after '[', "
            f"found {self.describe(index)}"
        )
        if kind == "name":
            close = difflib.get_close_matches(value, list(_EVALUATIONS), n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]!r}?"
        raise self.error(message, index)

    def expected_atom(self, index: int, stack: list[_Chain | _Arms]) -> FlowSyntaxError:
        tokens = self.tokens
        kind, value, _, _ = tokens[index]
        found = self.describe(index)
        if kind == "number":
            after = tokens[index + 1][0]
            if after == "*" and tokens[index + 2][0] == "name":
                return self.error(
                    f"found {found}: attempts are written after the event, as in "
                    f"'{tokens[index + 2][1]} * {value}'",
                    index,
                )
            top = stack[-1]
            if after in _LINKS and not (isinstance(top, _Chain) and top.kind == _ARM):
                return self.error(
                    f"found {found}: a route code belongs only inside a branch list, "
                    f"as in 'A ({value} {after} B)'",
                    index,
                )
        if kind == "(":
            return self.error(
                "found '(': use '{' and '}' to group steps ('(' opens a branch list "
                "after a step, as in 'A (0 -> B)')",
                index,
            )
        if kind == "eof":
            return self.error(
                f"expected an event name or '{{', found end of input{self.unclosed(stack)}",
                index,
            )
        previous = f" after {self.describe(index - 1)}" if index else ""
        return self.error(f"expected an event name or '{{'{previous}, found {found}", index)

    def unexpected(self, index: int, frame: _Chain, stack: list[_Chain | _Arms]) -> FlowSyntaxError:
        kind = self.tokens[index][0]
        closing = {_TOP: "or end of input", _BLOCK: "or '}'", _ARM: "',' or ')'"}[frame.kind]
        message = f"found {self.describe(index)}; expected '->', '|->', '|=>', '||', {closing}"
        if kind == "eof":
            message += self.unclosed(stack)
        elif kind == "name":
            message += " (is a link missing?)"
        elif kind in ("}", ")") and frame.kind == _TOP:
            message += f" ({self.describe(index)} closes nothing)"
        return self.error(message, index)
