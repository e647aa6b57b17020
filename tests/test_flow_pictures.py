"""Flow results and pictures (SPEC §11.6, §12): StepRun/FlowRun records, Mermaid and DOT
graphs of flows, the coloured graph and the SVG timeline of a flow run."""

from __future__ import annotations

import pickle
import re
import xml.etree.ElementTree as ET

import pytest

import flow_events
from event_pipeline import EventResult, EventRun
from event_pipeline._flowrun import FlowRun, StepRun, StepStatus
from event_pipeline.flow import Flow, step
from flow_events import Fetch, Parse, Tick

SVG = "{http://www.w3.org/2000/svg}"
# Every kind of edge: plain, pipe, each, arm codes (one arm piped), a group, an optional step.
TEXT = "Fetch |-> Parse -> {Pack || Pack}[any] |=> Tick? (0 |-> Pack, 1 -> Fetch) -> Parse"
NAMES = ["Fetch", "Parse", "Pack", "Pack#2", "Tick", "Pack#3", "Fetch#2", "Parse#2"]


def flow() -> Flow:
    return Flow.parse(TEXT, flow_events)


def dot_edges(text: str) -> set[tuple[str, str, str]]:
    """(from label, to label, edge label) for every edge of a DOT text."""
    labels = dict(re.findall(r'^\s*(s\d+) \[label="([^"\\]*)', text, re.MULTILINE))
    found = set()
    for source, target, label in re.findall(r'(s\d+) -> (s\d+)(?: \[label="([^"]*)"\])?;', text):
        found.add((labels[source], labels[target], label))
    return found


def test_dot_names_every_step_and_edge_kind() -> None:
    """The DOT graph has one node per step named as StepRun.name and labelled edges."""
    text = flow().to_dot()
    assert text.startswith("digraph flow {") and text.rstrip().endswith("}")
    assert re.findall(r'^\s*s\d+ \[label="([^"]+)"', text, re.MULTILINE) == NAMES
    assert dot_edges(text) == {
        ("Fetch", "Parse", "|->"),
        ("Parse", "Pack", ""),
        ("Parse", "Pack#2", ""),
        ("Pack", "Tick", "|=>"),
        ("Pack#2", "Tick", "|=>"),
        ("Tick", "Pack#3", "0 |->"),
        ("Tick", "Fetch#2", "1"),
        ("Pack#3", "Parse#2", ""),
        ("Fetch#2", "Parse#2", ""),
    }
    # The group's members sit together in one cluster, labelled by its evaluation.
    cluster = text[text.index("subgraph cluster_0") : text.index("}", text.index("subgraph"))]
    assert 'label="any"' in cluster and "s2 " in cluster and "s3 " in cluster
    assert 's4 [label="Tick", style="rounded,filled,dashed"]' in text


def test_mermaid_names_every_step_and_edge_kind() -> None:
    """The Mermaid chart has the same nodes, a subgraph per group and labelled edges."""
    text = flow().to_mermaid()
    assert text.startswith("flowchart LR\n")
    assert re.findall(r's\d+\(?\["([^"]+)"\]', text) == NAMES
    assert 'subgraph g0 ["any"]' in text and text.count("end\n") == 1
    assert 's0 -->|"#124;->"| s1' in text
    assert 's2 -->|"#124;=>"| s4' in text
    assert 's4 -->|"0 #124;->"| s5' in text
    assert 's4 -->|"1"| s6' in text
    assert "s1 --> s2" in text
    assert 's4(["Tick"])' in text  # the tolerated step has a rounded shape


def test_branch_without_success_arm_continues_from_subject() -> None:
    """With no arm for code 1, what follows the branch list also follows its subject."""
    edges = dot_edges(Flow.parse("Fetch (0 -> Tick) -> Pack", flow_events).to_dot())
    assert edges == {("Fetch", "Tick", "0"), ("Tick", "Pack", ""), ("Fetch", "Pack", "")}
    edges = dot_edges(Flow.parse("Fetch (1 -> Tick) -> Pack", flow_events).to_dot())
    assert edges == {("Fetch", "Tick", "1"), ("Tick", "Pack", "")}


def test_nested_groups_nest_in_pictures() -> None:
    """A group inside a group is a subgraph inside a subgraph."""
    nested = Flow.parse("{{Fetch || Parse} || Pack} -> Tick", flow_events)
    dot = nested.to_dot()
    assert dot.index("subgraph cluster_0") < dot.index("subgraph cluster_1") < dot.index("s2 ")
    mermaid = nested.to_mermaid()
    assert mermaid.count("subgraph") == 2 and mermaid.count("end\n") == 2


# -- results ------------------------------------------------------------------------------------
def make_run(count: int = 0) -> FlowRun:
    """A finished run of TEXT, one step of each status, or ``count`` steps in a chain."""
    if count:
        steps = [
            StepRun(
                f"Step{i}" if i else "A<&>\"'",
                "Step",
                StepStatus.SUCCEEDED if i % 5 else StepStatus.SKIPPED,
                attempts=1 if i % 5 else 0,
                started=None if i % 5 == 0 else i * 0.01,
                duration=0.0 if i % 5 == 0 else 0.02,
                reason="upstream <x> & 'y' failed" if i % 5 == 0 else None,
            )
            for i in range(count)
        ]
        return FlowRun(False, steps, None, count * 0.01 + 0.02)
    ok = EventRun("Fetch", True, [EventResult(False, 1, None, "0", "Fetch", 1, 0.1)], 0.1)
    S = StepStatus
    steps = [
        StepRun("Fetch", "Fetch", S.SUCCEEDED, run=ok, value=1, attempts=1, started=0.0,
                duration=0.1),
        StepRun("Parse", "Parse", S.SUCCEEDED, attempts=1, started=0.1, duration=0.2),
        StepRun("Pack", "Pack", S.SUCCEEDED, attempts=2, started=0.3, duration=0.3),
        StepRun("Pack#2", "Pack", S.FAILED, handled=True, attempts=3, started=0.3,
                duration=0.5, reason="ValueError: bad"),
        StepRun("Tick", "Tick", S.FAILED, attempts=1, started=0.8, duration=0.1, route=0,
                reason="TypeError: oops"),
        StepRun("Pack#3", "Pack", S.CANCELLED, attempts=1, started=0.9, duration=0.05),
        StepRun("Fetch#2", "Fetch", S.NOT_TAKEN, reason="route 0 chosen"),
        StepRun("Parse#2", "Parse", S.SKIPPED, reason="upstream 'Pack#3' cancelled"),
    ]  # fmt: skip
    return FlowRun(False, steps, None, 1.0, flow())


def test_step_status_members() -> None:
    """StepStatus is an Enum of the five statuses."""
    assert [s.name for s in StepStatus] == [
        "SUCCEEDED", "FAILED", "SKIPPED", "NOT_TAKEN", "CANCELLED",
    ]  # fmt: skip


def test_lookup_by_name_and_failed() -> None:
    """Steps are found by name; ``failed`` lists FAILED steps that were not handled."""
    run = make_run()
    assert run["Pack#2"].handled and run["Tick"].route == 0
    assert [s.name for s in run.failed] == ["Tick"]
    with pytest.raises(KeyError) as info:
        run["Pack#9"]
    assert "Pack#9" in str(info.value) and "Pack, Pack#2, Tick" in str(info.value)


def test_not_run_step_defaults() -> None:
    """A step that did not run has no run, value, attempts or start, and zero duration."""
    step_run = StepRun("Store", "Store", StepStatus.SKIPPED, reason="upstream 'A' failed")
    assert (step_run.run, step_run.value, step_run.attempts) == (None, None, 0)
    assert (step_run.started, step_run.duration, step_run.handled) == (None, 0.0, False)


def test_summary_one_line_per_step() -> None:
    """summary() is a str with one line per step: name, status, attempts, duration, reason."""
    run = make_run()
    lines = run.summary().split("\n")
    assert len(lines) == len(run.steps)
    assert lines[3].split()[:5] == ["Pack#2", "FAILED", "(handled)", "3", "attempts"]
    assert "0.500s" in lines[3] and lines[3].endswith("ValueError: bad")
    assert lines[0].split() == ["Fetch", "SUCCEEDED", "1", "attempt", "0.100s"]
    assert lines[7].endswith("upstream 'Pack#3' cancelled")


def test_records_pickle_and_print() -> None:
    """Runs and steps pickle with everything in them and print readably."""
    run = make_run()
    copy = pickle.loads(pickle.dumps(run))
    assert copy.flow == run.flow and copy.success is False and copy.duration == 1.0
    assert [(s.name, s.status, s.attempts, s.reason) for s in copy.steps] == [
        (s.name, s.status, s.attempts, s.reason) for s in run.steps
    ]
    assert copy["Fetch"].run is not None and copy["Fetch"].run.results[0].content == 1
    assert repr(run).startswith("FlowRun(failure, 8 steps: 3 succeeded, 2 failed")
    assert repr(run["Pack#2"]) == (
        "StepRun(Pack#2 FAILED, handled, attempts=3, duration=0.500000, reason='ValueError: bad')"
    )


def test_run_dot_coloured_by_status() -> None:
    """A run's DOT graph is the flow's, each step filled by its status and labelled with it."""
    text = make_run().to_dot()
    fills = dict(re.findall(r'label="([^"\\]+)\\n[^"]*", fillcolor="(#[0-9a-f]{6})"', text))
    assert list(fills) == NAMES
    assert fills["Fetch"] == fills["Parse"] != fills["Tick"]
    assert len({fills["Tick"], fills["Pack#2"], fills["Pack#3"], fills["Fetch#2"]}) == 4
    assert dot_edges(text) == dot_edges(flow().to_dot())
    assert 'label="Tick\\nfailed"' in text


def test_run_dot_without_flow_lists_steps() -> None:
    """Without its flow, a run still draws every step, coloured."""
    text = make_run(4).to_dot()
    assert text.count("fillcolor=") == 4 and "->" not in text


def svg_rows(text: str) -> list[ET.Element]:
    root = ET.fromstring(text)
    assert root.tag == f"{SVG}svg"
    return [g for g in root.iter(f"{SVG}g") if g.get("class") == "step"]


def test_svg_timeline() -> None:
    """The timeline is well-formed SVG with one titled bar per step, in text order."""
    text = make_run().to_svg()
    rows = svg_rows(text)
    assert len(rows) == len(NAMES)
    for row, name in zip(rows, NAMES, strict=True):
        title = row.find(f"{SVG}title")
        assert title is not None and title.text is not None and title.text.startswith(name + ":")
        assert len([r for r in row.iter(f"{SVG}rect") if r.get("class") == "bar"]) == 1
    pack2 = rows[3]
    assert "3 attempts" in pack2.findtext(f"{SVG}title", "")
    assert "0.500 s" in pack2.findtext(f"{SVG}title", "")
    bars = [row.find(f"{SVG}rect[@class='bar']") for row in rows]
    widths = [float(bar.get("width", "nan")) for bar in bars if bar is not None]
    assert widths[3] == pytest.approx(5 * widths[0], rel=0.02)  # 0.5 s against 0.1 s
    assert widths[6] == 0.0  # not taken: nothing ran
    xs = [float(bar.get("x", "nan")) for bar in bars if bar is not None]
    assert xs[2] == xs[3] > xs[1] > xs[0]  # the group's members start together
    axis = ET.fromstring(text).find(f"{SVG}g[@class='axis']")
    assert axis is not None  # the time axis, in seconds, at the top and the bottom
    assert [t.text for t in axis.iter(f"{SVG}text")][::2] == [
        "0 s", "0.2 s", "0.4 s", "0.6 s", "0.8 s", "1 s",
    ]  # fmt: skip
    for status in ("succeeded", "failed", "skipped", "not taken", "cancelled"):
        assert f">{status}</text>" in text  # the legend


def test_svg_timeline_for_200_steps_escapes_names() -> None:
    """200 rows stay well-formed with markup characters in names and reasons escaped."""
    text = make_run(200).to_svg()
    rows = svg_rows(text)
    assert len(rows) == 200
    assert rows[0].findtext(f"{SVG}text") == "A<&>\"'"
    assert "upstream <x> & 'y' failed" in rows[0].findtext(f"{SVG}title", "")
    root = ET.fromstring(text)
    height = float(root.get("height", "0"))
    assert 200 * 16 < height < 200 * 30  # rows readable, not squeezed nor sprawling


def test_svg_of_a_run_with_nothing_started() -> None:
    """A run in which no step started still draws an axis and a row per step."""
    run = FlowRun(False, [StepRun("Tick", "Tick", StepStatus.SKIPPED)], None, 0.0, step(Tick))
    rows = svg_rows(run.to_svg())
    assert len(rows) == 1 and "0 s" in run.to_svg()


def test_pictures_of_single_steps() -> None:
    """A one-step flow draws one node and no edge."""
    dot = step(Fetch).to_dot()
    assert dot.count("[label=") == 1 and " -> " not in dot
    mermaid = step(Parse).to_mermaid()
    assert mermaid == 'flowchart LR\n    s0["Parse"]\n'
