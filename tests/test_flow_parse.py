"""The text form of flows (SPEC §11.3): grammar, errors, limits, round trip and fuzzing."""

from __future__ import annotations

import copyreg
import pickle
import random
import time

import pytest

import flow_events
from event_pipeline import EventBase, EventExecutionEvaluationState
from event_pipeline.exceptions import FlowSyntaxError
from event_pipeline.flow import Flow, each, parallel, pipe, step
from flow_events import Fetch, Notify, Pack, Parse, Store, Tick, random_flow

# Single-letter names for the table's texts, mapped onto the helper module's events.
LETTERS: dict[str, type[EventBase]] = {
    "A": Fetch,
    "B": Parse,
    "C": Pack,
    "D": Store,
    "H": Notify,
    "X": Tick,
}
ANY = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS


def parse(text: str) -> Flow:
    return Flow.parse(text, LETTERS)


# SPEC §11.3's table, verbatim, and the two rows §14.2 adds.
TABLE = [
    ("A ->", "1:5", ["end of input"]),
    ("A -> B$", "1:7", ["unexpected character '$'"]),
    ("A - > B", "1:3", ["did you mean '->'"]),
    ("A -> (B || C)", "1:6", ["use '{'"]),
    ("A (0 -> B", "1:10", ["unclosed '('", "line 1, column 3"]),
    ("A (B, C)", "1:4", ["route code"]),
    ("A (1 -> B, 1 -> C)", "1:12", ["route 1 given twice"]),
    ("A (10 -> B)", "1:4", ["0-9"]),
    ("A * 0", "1:5", ["at least 1"]),
    ("3 * A", "1:1", ["A * 3"]),
    ("0 -> A", "1:1", ["only inside a branch list"]),
    ("A * 2 * 3", "1:7", ["given twice"]),
    ("A -> B[any]", "1:7", ["parallel group"]),
    ("", "1:1", ["empty flow"]),
    ("# only a comment", "1:1", ["empty flow"]),
    ("A ->\n  B ->\n  C D", "3:5", ["'D'", "expected '->'"]),
    ("Fetch -> Pasre", "1:10", ["unknown event 'Pasre'", "did you mean 'Parse'"]),
    ("A ~ 0", "1:5", ["must be positive"]),
    ("A ~ x", "1:5", ["expected a number"]),
]


@pytest.mark.parametrize(("text", "position", "fragments"), TABLE)
def test_error_table(text: str, position: str, fragments: list[str]) -> None:
    """Each row of the table fails at its line and column with its message."""
    events = [Fetch, Parse] if text.startswith("Fetch") else LETTERS
    with pytest.raises(FlowSyntaxError) as info:
        Flow.parse(text, events, filename="shop.flow")
    error = info.value
    assert f"{error.lineno}:{error.offset}" == position
    for fragment in fragments:
        assert fragment in error.msg
    assert error.filename == "shop.flow"
    assert error.text == text.split("\n")[error.lineno - 1]
    assert error.end_offset is not None and error.end_offset > error.offset


def test_error_is_a_syntax_error_and_pickles() -> None:
    """FlowSyntaxError is a SyntaxError and keeps its position through pickling."""
    with pytest.raises(SyntaxError) as info:
        parse("A -> Pasre")
    # Dask's workers install tblib's exception pickling process-wide, which drops the
    # position of every SyntaxError; the Dask tests may have run in this process.
    saved = copyreg.dispatch_table.pop(FlowSyntaxError, None)
    try:
        copy = pickle.loads(pickle.dumps(info.value))
    finally:
        if saved is not None:
            copyreg.dispatch_table[FlowSyntaxError] = saved
    assert isinstance(copy, FlowSyntaxError)
    assert (copy.lineno, copy.offset, copy.end_offset, copy.text) == (1, 6, 11, "A -> Pasre")


def test_grammar_examples() -> None:
    """The SPEC's examples parse to the structures it names."""
    assert parse("A -> B || C |-> D") == step(Fetch).then(parallel(Parse, Pack), pipe(Store))
    assert parse("A |-> B || C") == step(Fetch).then(pipe(parallel(Parse, Pack)))
    assert parse("A || B (0 -> X)") == parallel(Fetch, step(Parse).branch({0: Tick}))
    assert parse("{A || B} (0 -> X)") == parallel(Fetch, Parse).branch({0: Tick})
    assert parse("{A || B}[any]") == parallel(Fetch, Parse, evaluation=ANY)
    assert parse("{A || B}[all]") == parallel(Fetch, Parse)
    assert parse("A |=> B") == step(Fetch).then(each(Parse))
    assert parse("A * 3 ~ 2.5?") == step(Fetch, attempts=3, timeout=2.5).optional()


def test_suffixes_in_any_order() -> None:
    """A unit's suffixes mean the same in any order; '?' binds to the unit, not the arms."""
    assert parse("A ~ 2 ? * 3") == parse("A * 3 ~ 2?") == parse("A? ~2*3")
    assert parse("A (0 -> X)?") == step(Fetch).optional().branch({0: Tick})
    assert parse("{A (0 -> X)}?") == step(Fetch).branch({0: Tick}).optional()


def test_layout_and_comments() -> None:
    """Whitespace and newlines are free and '#' starts a comment."""
    text = "# checkout\nA   # fetch it\n  |->B\n\t->C( 1->X ,0 |-> H , )"
    expected = step(Fetch).then(pipe(Parse), step(Pack).branch({1: Tick, 0: pipe(Notify)}))
    assert parse(text) == expected
    assert str(expected) == "A |-> B -> C (0 |-> H, 1 -> X)".replace("A", "Fetch").replace(
        "B", "Parse"
    ).replace("C", "Pack").replace("H", "Notify").replace("X", "Tick")


def test_blocks_and_leading_links() -> None:
    """Braces group; a block or the text may begin with '|->'/'|=>', as pipe() alone prints."""
    assert parse("A -> {B -> C}") == step(Fetch).then(Parse, Pack)
    assert parse("A -> {|-> B} || C") == step(Fetch).then(parallel(pipe(Parse), Pack))
    assert parse("|=> B") == each(Parse)
    assert str(pipe(Parse)) == "|-> Parse"
    with pytest.raises(FlowSyntaxError, match="already receives"):
        parse("A |-> {|-> B}")


def test_numbers() -> None:
    """Attempts are whole numbers; timeouts are ints or floats in any usual spelling."""
    assert parse("A ~ .5").items == () and parse("A ~ .5").timeout == 0.5
    assert parse("A ~ 1e-3").timeout == 0.001
    assert parse("A ~ 2").timeout == 2 and isinstance(parse("A ~ 2").timeout, int)
    assert parse("A * 12").attempts == 12
    for text, fragment in [
        ("A * 2.5", "whole number"),
        ("A * -1", "at least 1"),
        ("A ~ -1", "must be positive"),
        ("A ~ 1e999", "finite"),
        ("{A} * 2", "event name only"),
        ("{A} ~ 2", "event name only"),
        ("A ~ 1 ~ 2", "timeout given twice"),
        ("A??", "'?' given twice"),
        ("A (0 -> B) (1 -> C)", "branch list given twice"),
        ("{A || B}[any][all]", "evaluation given twice"),
        ("{A || B}[an]", "did you mean 'any'"),
        ("{A || B}[any", "expected ']'"),
        ("A ()", "at least one arm"),
        ("A (0 B)", "after route code 0"),
        ("A -> {}", "expected an event name"),
        ("A}", "closes nothing"),
        ("{A", "unclosed '{'"),
        ("A |- B", "did you mean '||', '|->' or '|=>'"),
        ("A => B", "did you mean '|=>'"),
    ]:
        with pytest.raises(FlowSyntaxError, match=fragment.replace("(", r"\(").replace("|", r"\|")):
            parse(text)


def test_evaluation_names() -> None:
    """Every state may be named in '[...]' and prints back the same way."""
    for state in EventExecutionEvaluationState:
        flow = parse(f"{{A || B}}[{state.name}]")
        assert flow.evaluation is state
        assert Flow.parse(str(flow), [Fetch, Parse]) == flow


def test_events_forms() -> None:
    """Names resolve through a mapping, an iterable of classes or a module."""
    assert Flow.parse("Fetch -> Parse", [Fetch, Parse, Fetch]) == step(Fetch).then(Parse)
    assert Flow.parse("Fetch -> double", flow_events) == step(Fetch).then(flow_events.double)
    assert Flow.parse("get", {"get": Fetch}) == step(Fetch)
    with pytest.raises(FlowSyntaxError, match="unknown event 'EventBase'"):
        Flow.parse("EventBase", flow_events)
    with pytest.raises(TypeError, match="events"):
        Flow.parse("Fetch", "Fetch")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="42"):
        Flow.parse("Fetch", [Fetch, 42])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="events\\['x'\\]"):
        Flow.parse("x", {"x": len})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="str"):
        Flow.parse(b"Fetch", [Fetch])  # type: ignore[arg-type]


def test_unknown_name_without_close_match_lists_names() -> None:
    """With nothing close, the error lists the names it knows."""
    with pytest.raises(FlowSyntaxError, match=r"unknown event 'Zzz' \(known: Fetch, Parse\)"):
        Flow.parse("Zzz", [Fetch, Parse])


def test_names_are_exact() -> None:
    """Names are case-sensitive; a near miss in case gets a suggestion."""
    with pytest.raises(FlowSyntaxError, match="did you mean 'Fetch'"):
        Flow.parse("fetch", [Fetch])


def test_same_name_twice_is_an_error_only_where_used() -> None:
    """Two classes called alike fail only where the text uses the name, naming both."""
    other = type("Fetch", (EventBase,), {"process": Fetch.process, "__module__": "shop.legacy"})
    events = [Fetch, other, Parse]
    assert Flow.parse("Parse", events) == step(Parse)
    with pytest.raises(FlowSyntaxError) as info:
        Flow.parse("Parse -> Fetch", events)
    assert info.value.offset == 10
    assert "flow_events.Fetch" in info.value.msg and "shop.legacy.Fetch" in info.value.msg


def test_long_chain_parses() -> None:
    """A 5,000-step chain parses, with every kind of link, in well under a second."""
    links = ["->", "|->", "|=>"]
    text = "A" + "".join(f" {links[i % 3]} {'ABCDX'[i % 5]}" for i in range(4999))
    started = time.perf_counter()
    flow = parse(text)
    assert time.perf_counter() - started < 1.0
    assert flow.step_count == 5000 and len(flow.items) == 5000
    assert Flow.parse(str(flow), list(LETTERS.values())) == flow


@pytest.mark.parametrize("opener", ["{", "(", "mixed"])
def test_nesting_limit(opener: str) -> None:
    """100 levels of '{' and '(' parse; the 101st is a FlowSyntaxError at its bracket."""

    def nested(levels: int) -> str:
        text = "X"
        for level in range(levels):
            use_brace = opener == "{" or (opener == "mixed" and level % 2)
            text = "{" + text + "}" if use_brace else "A (0 -> " + text + ")"
        return text

    assert parse(nested(100)).step_count >= 1
    with pytest.raises(FlowSyntaxError, match="deeper than 100 levels") as info:
        parse(nested(101))
    assert info.value.text is not None and info.value.text[info.value.offset - 1] in "{("


def test_round_trip_random_flows() -> None:
    """``Flow.parse(str(flow), events) == flow`` for random flows of every kind."""
    rng = random.Random(20240611)
    for _ in range(600):
        flow = random_flow(rng)
        text = str(flow)
        again = Flow.parse(text, flow_events.EVENTS)
        assert again == flow, text
        assert str(again) == text


def test_parser_keeps_no_state_and_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """Parsing the same text twice gives equal flows; an error in between changes nothing."""
    first = parse("A -> B")
    with pytest.raises(FlowSyntaxError):
        parse("A -> {B")
    assert parse("A -> B") == first
    assert capsys.readouterr() == ("", "")


# -- fuzzing --------------------------------------------------------------------------------
VOCABULARY = [
    "A", "B", "C", "X", "Zz", "é", "_x1", "0", "1", "3", "10", "-1", "2.5", ".5", "1e999",
    "->", "|->", "|=>", "||", "{", "}", "(", ")", "[", "]", ",", "*", "~", "?", "any",
    "$", "-", "|", "=", ">", "&", '"', " ", "\n", "\t", "# note\n", "\u00a0", "\r\n",
]  # fmt: skip


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(text) + 1)
        span = rng.randint(1, 4)
        choice = rng.randrange(5)
        if choice == 0:
            text = text[:at] + text[at + span :]
        elif choice == 1:
            text = text[:at] + rng.choice(VOCABULARY) + text[at:]
        elif choice == 2:
            text = text[:at] + text[at : at + span] * 2 + text[at + span :]
        elif choice == 3:
            text = text[:at]
        else:
            text = text[:at] + rng.choice(VOCABULARY) + text[at + span :]
    return text


def check_outcome(text: str) -> bool:
    """Parse ``text``: a flow that round-trips, or a FlowSyntaxError that points into it."""
    try:
        flow = parse(text)
    except FlowSyntaxError as error:
        lines = text.split("\n")
        assert 1 <= error.lineno <= max(len(lines), 1)
        line = lines[error.lineno - 1].rstrip("\r")
        assert error.text == line
        assert 1 <= error.offset <= len(line) + 1
        return False
    assert Flow.parse(str(flow), flow_events.EVENTS) == flow
    return True


@pytest.mark.timeout(30)
def test_fuzz_only_flow_syntax_errors() -> None:
    """Thousands of token soups and mutated valid flows raise nothing but FlowSyntaxError,
    and all of them together take under 5 seconds."""
    rng = random.Random(7)
    names = {cls.__name__: cls for cls in flow_events.EVENTS}
    LETTERS.update(names)
    valid = [str(random_flow(rng)) for _ in range(150)]
    started = time.perf_counter()
    parsed = cases = 0
    try:
        for _ in range(3000):
            soup = "".join(rng.choice(VOCABULARY) for _ in range(rng.randint(0, 25)))
            parsed += check_outcome(soup)
            parsed += check_outcome(mutate(rng, rng.choice(valid)))
            cases += 2
    finally:
        for name in names:
            LETTERS.pop(name, None)
    elapsed = time.perf_counter() - started
    assert cases == 6000 and elapsed < 5.0
    # The mutations keep some texts valid: the fuzzing reaches past the first tokens.
    assert 50 < parsed < cases
