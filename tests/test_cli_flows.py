"""The command line on flows, run as a user runs it.

Each test works in a temporary directory holding a small events module (``shop.py``) and
a text-form flow (``checkout.flow``), and runs ``python -m event_pipeline`` there in a
subprocess: ``check``, ``graph`` in its three formats, ``run`` (text, ``--json``,
``--timeline``), ``map`` (positional lines through ``imap``, object lines with named
inputs of their own), and the usage errors around them.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

SHOP = '''\
"""Events of the command-line flow tests."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from event_pipeline import event
from event_pipeline.flow import each, pipe, step

_seen = set()
_lock = threading.Lock()


@event
def fetch(order: int):
    """An order's two items."""
    return True, [order, order + 1]


@event(executor=ThreadPoolExecutor, max_workers=4)
def price(item: int):
    """An item's price; a negative item fails. Later items often finish first."""
    time.sleep(0.002 * ((item + 1) % 3))
    return item >= 0, item * 10


@event
def total(prices: list):
    return True, sum(prices)


@event(retry_policy={"max_attempts": 2, "backoff_factor": 0.0})
def audit(amount: int):
    """Fails its first attempt for each amount: two attempts."""
    with _lock:
        first = amount not in _seen
        _seen.add(amount)
    if first:
        raise ConnectionError("audit log busy")
    return True, amount


@event(executor=ThreadPoolExecutor, max_workers=2)
def notify(amount: int, *, channel: str = "mail"):
    return True, f"{channel}:{amount}"


@event
def alarm():
    return True, "alarm"


@event
def receipt(parts: tuple):
    return True, {"total": parts[0], "note": parts[1]}


@event(executor=ThreadPoolExecutor, max_workers=2)
def slow(order: int):
    time.sleep(0.05)
    return True, order


quick = step(fetch).then(each(price), pipe(total))
NOT_A_FLOW = 42
'''

CHECKOUT = """\
# checkout: price each item of an order, audit and notify, then a receipt
fetch |=> price |-> total
  |-> {audit || notify}
  (0 -> alarm, 1 |-> receipt)
"""
CANONICAL = "fetch |=> price |-> total |-> {audit || notify} (0 -> alarm, 1 |-> receipt)"
STEPS = ["fetch", "price", "total", "audit", "notify", "alarm", "receipt"]
# fetch 1 + price 2 (one task per item) + total 1 + audit 2 (a retry) + notify 1 + receipt 1
ATTEMPTS = 8


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A directory with ``shop.py`` and ``checkout.flow``, the cwd of every command."""
    (tmp_path / "shop.py").write_text(SHOP)
    (tmp_path / "checkout.flow").write_text(CHECKOUT)
    return tmp_path


def cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m event_pipeline ARGS`` in ``cwd``; stdout/stderr as text, ``\\r`` kept."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # shop.py is found because the cwd is importable
    done = subprocess.run(
        [sys.executable, "-m", "event_pipeline", *args],
        input=None if stdin is None else stdin.encode(),
        capture_output=True, cwd=cwd, env=env, timeout=60,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("event-pipeline: error: ")
    return lines[0]


def expected_value(order: int, channel: str = "mail") -> dict[str, Any]:
    amount = 10 * order + 10 * (order + 1)
    return {"total": amount, "note": f"{channel}:{amount}"}


# -- check ------------------------------------------------------------------------------------
def test_check_prints_the_canonical_form(shop: Path) -> None:
    result = cli("check", "checkout.flow", "--events", "shop", cwd=shop)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == CANONICAL + "\n"
    # The canonical form is itself a flow file that checks to the same text.
    (shop / "again.flow").write_text(result.stdout)
    assert cli("check", "again.flow", "--events", "shop", cwd=shop).stdout == result.stdout


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("# the order\nfetch |=> price\n  |-> totl\n", (3, 7),
         "unknown event 'totl'; did you mean 'total'?"),
        ("fetch -> (price || total)\n", (1, 10), "use '{'"),
        ("fetch (0 -> alarm\n", (1, 18), "unclosed '('"),
        ("fetch -> price$\n", (1, 15), "unexpected character '$'"),
    ],
)
def test_check_syntax_error_is_compiler_style(
    shop: Path, text: str, where: tuple[int, int], message: str
) -> None:
    """FILE:LINE:COL: message, the source line, a caret under the column; exit 1."""
    (shop / "bad.flow").write_text(text)
    result = cli("check", "bad.flow", "--events", "shop", cwd=shop)
    assert result.returncode == 1
    assert result.stdout == ""
    head, source, caret = result.stderr.splitlines()
    lineno, col = where
    assert head.startswith(f"bad.flow:{lineno}:{col}: ")
    assert message in head
    assert source == text.splitlines()[lineno - 1]
    assert caret.index("^") == col - 1
    assert set(caret[: col - 1]) <= {" "}
    assert "Traceback" not in result.stderr


def test_syntax_error_in_run_map_and_graph_too(shop: Path) -> None:
    (shop / "bad.flow").write_text("fetch ->\n")
    for argv in (["run", "bad.flow", "1"], ["map", "bad.flow"], ["graph", "bad.flow"]):
        result = cli(*argv, "--events", "shop", cwd=shop, stdin="1\n")
        assert result.returncode == 1, argv
        assert result.stderr.splitlines()[0].startswith("bad.flow:1:9: "), result.stderr
        assert "end of input" in result.stderr
        assert result.stdout == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["check", "checkout.flow"], "checkout.flow needs --events MODULE"),
        (["check", "missing.flow", "--events", "shop"], "cannot read flow file 'missing.flow'"),
        (["check", "checkout.flow", "--events", "nope"], "cannot import module 'nope'"),
        (["check", "shop:quick"], "check takes a FILE.flow"),
        (["graph", "shop:NOT_A_FLOW"], "is an int, not an event class or a Flow"),
        (["graph", "shop:quick", "--events", "shop"], "--events is for FILE.flow"),
        (["run", "checkout.flow", "1"], "needs --events MODULE"),
        (["run", "checkout.flow", "--events", "shop"], "required parameter 'order'"),
        (["run", "shop:fetch", "1", "--timeline", "t.svg"], "--timeline"),
        (["map", "checkout.flow"], "needs --events MODULE"),
    ],
)
def test_flow_usage_errors_are_one_line_exit_2(
    shop: Path, argv: list[str], message: str
) -> None:
    result = cli(*argv, cwd=shop, stdin="1\n")
    assert result.returncode == 2
    assert message in one_error_line(result)
    assert result.stdout == ""
    assert not (shop / "t.svg").exists()


# -- graph ------------------------------------------------------------------------------------
def test_graph_text_is_the_canonical_form(shop: Path) -> None:
    result = cli("graph", "checkout.flow", "--events", "shop", cwd=shop)
    assert (result.returncode, result.stdout, result.stderr) == (0, CANONICAL + "\n", "")


def test_graph_mermaid_names_every_step_and_edge_kind(shop: Path) -> None:
    result = cli("graph", "checkout.flow", "--events", "shop", "--format", "mermaid", cwd=shop)
    assert (result.returncode, result.stderr) == (0, "")
    text = result.stdout
    assert text.startswith("flowchart LR\n")
    nodes = dict(re.findall(r'^\s+(s\d+)\["([^"]+)"\]$', text, re.MULTILINE))
    assert sorted(nodes.values()) == sorted(STEPS)
    edges = re.findall(r'^\s+(s\d+) -->(?:\|"([^"]*)"\|)? (s\d+)$', text, re.MULTILINE)
    labelled = {(nodes[a], label, nodes[b]) for a, label, b in edges}
    assert ("fetch", "#124;=>", "price") in labelled  # |=> (| written as #124;)
    assert ("price", "#124;->", "total") in labelled  # |->
    assert ("total", "#124;->", "audit") in labelled and ("total", "#124;->", "notify") in labelled
    assert ("audit", "0", "alarm") in labelled  # an arm code
    assert ("notify", "1 #124;->", "receipt") in labelled  # an arm that pipes
    assert re.search(r'subgraph \w+ \["parallel"\]\n\s+s\d+\["audit"\]\n\s+s\d+\["notify"\]\n'
                     r"\s+end", text)


def test_graph_mermaid_plain_then_edge(shop: Path) -> None:
    (shop / "plain.flow").write_text("fetch -> alarm")
    result = cli("graph", "plain.flow", "--events", "shop", "--format", "mermaid", cwd=shop)
    assert result.stdout.splitlines()[-1].strip() == "s0 --> s1"


def test_graph_dot_names_every_step_and_edge_kind(shop: Path) -> None:
    result = cli("graph", "checkout.flow", "--events", "shop", "--format", "dot", cwd=shop)
    assert (result.returncode, result.stderr) == (0, "")
    text = result.stdout
    assert text.startswith("digraph flow {") and text.rstrip().endswith("}")
    nodes = dict(re.findall(r'^\s+(s\d+) \[label="([^"]+)"\];$', text, re.MULTILINE))
    assert sorted(nodes.values()) == sorted(STEPS)
    edges = re.findall(r'^\s+(s\d+) -> (s\d+)(?: \[label="([^"]*)"\])?;$', text, re.MULTILINE)
    labelled = {(nodes[a], label, nodes[b]) for a, b, label in edges}
    assert ("fetch", "|=>", "price") in labelled
    assert ("price", "|->", "total") in labelled
    assert ("audit", "0", "alarm") in labelled
    assert ("notify", "1 |->", "receipt") in labelled
    assert "subgraph cluster_" in text
    (shop / "plain.flow").write_text("fetch -> alarm")
    plain = cli("graph", "plain.flow", "--events", "shop", "--format", "dot", cwd=shop)
    assert "  s0 -> s1;" in plain.stdout.splitlines()


def test_graph_of_a_python_flow_and_of_an_event(shop: Path) -> None:
    """TARGET may be a Flow object (module:name) or an event (a one-step flow)."""
    flow = cli("graph", "shop:quick", cwd=shop)
    assert (flow.returncode, flow.stdout) == (0, "fetch |=> price |-> total\n")
    event = cli("graph", "shop:fetch", "--format", "mermaid", cwd=shop)
    assert event.returncode == 0
    assert event.stdout == 'flowchart LR\n    s0["fetch"]\n'


# -- run --------------------------------------------------------------------------------------
def summary_rows(stdout: str) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[1]) for line in stdout.splitlines()]


def test_run_prints_the_summary(shop: Path) -> None:
    result = cli("run", "checkout.flow", "2", "--events", "shop", cwd=shop)
    assert (result.returncode, result.stderr) == (0, "")
    assert summary_rows(result.stdout) == [
        ("fetch", "SUCCEEDED"), ("price", "SUCCEEDED"), ("total", "SUCCEEDED"),
        ("audit", "SUCCEEDED"), ("notify", "SUCCEEDED"), ("alarm", "NOT_TAKEN"),
        ("receipt", "SUCCEEDED"),
    ]
    lines = result.stdout.splitlines()
    assert re.search(r"\b2 attempts\s+\d+\.\d{3}s$", lines[1])  # price: one task per item
    assert lines[5].endswith("not taken: route 1 chosen")


def test_run_failed_flow_exits_1(shop: Path) -> None:
    """A failed step: exit 1, the steps after it SKIPPED with the reason."""
    result = cli("run", "checkout.flow", "-1", "--events", "shop", cwd=shop)
    assert (result.returncode, result.stderr) == (1, "")
    rows = summary_rows(result.stdout)
    assert rows[1] == ("price", "FAILED")
    assert [status for _, status in rows[2:]] == ["SKIPPED"] * 5
    assert "upstream 'price' failed" in result.stdout


def test_run_json_is_one_object(shop: Path) -> None:
    result = cli("run", "checkout.flow", "3", "--events", "shop", "--input", "channel=sms",
                 "--json", cwd=shop)
    assert (result.returncode, result.stderr) == (0, "")
    (line,) = result.stdout.splitlines()
    data = json.loads(line)
    assert data["flow"] == CANONICAL
    assert data["success"] is True and data["error"] is None
    assert data["output"] == expected_value(3, "sms")
    assert [s["name"] for s in data["steps"]] == STEPS
    assert sum(s["attempts"] for s in data["steps"]) == ATTEMPTS
    alarm = data["steps"][5]
    assert (alarm["status"], alarm["started"], alarm["attempts"]) == ("not_taken", None, 0)
    assert data["steps"][2]["value"] == 70

    failed = cli("run", "checkout.flow", "-1", "--events", "shop", "--json", cwd=shop)
    assert failed.returncode == 1
    data = json.loads(failed.stdout)
    assert data["success"] is False
    assert data["error"].startswith("price: ")


def test_run_python_flow_target_and_json_arguments(shop: Path) -> None:
    result = cli("run", "shop:quick", "4", "--json", cwd=shop)
    assert result.returncode == 0
    assert json.loads(result.stdout)["output"] == 90


def test_run_timeline_writes_a_well_formed_svg(shop: Path) -> None:
    result = cli("run", "checkout.flow", "2", "--events", "shop", "--timeline", "out.svg",
                 cwd=shop)
    assert (result.returncode, result.stderr) == (0, "")
    root = ET.parse(shop / "out.svg").getroot()
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    groups = [g for g in root.iter(f"{ns}g") if g.get("class") == "step"]
    assert len(groups) == len(STEPS)
    for group, name in zip(groups, STEPS, strict=True):
        bars = [r for r in group.iter(f"{ns}rect") if r.get("class") == "bar"]
        assert len(bars) == 1
        tooltip = group.find(f"{ns}title")
        assert tooltip is not None and tooltip.text is not None
        assert tooltip.text.startswith(f"{name}: ")
        assert "attempt" in tooltip.text and " s" in tooltip.text
    texts = [t.text or "" for t in root.iter(f"{ns}text")]
    assert "0 s" in texts  # the time axis, in seconds
    assert {"succeeded", "failed", "skipped", "not taken", "cancelled"} <= set(texts)


def test_run_timeline_of_a_failed_run(shop: Path) -> None:
    result = cli("run", "checkout.flow", "-1", "--events", "shop", "--timeline", "t.svg",
                 cwd=shop)
    assert result.returncode == 1
    root = ET.parse(shop / "t.svg").getroot()
    statuses = [g.get("data-status") for g in root.iter("{http://www.w3.org/2000/svg}g")
                if g.get("class") == "step"]
    assert statuses == ["SUCCEEDED", "FAILED"] + ["SKIPPED"] * 5
    assert [p.name for p in shop.iterdir() if p.name.startswith(".")] == []


def test_run_progress(shop: Path) -> None:
    result = cli("run", "checkout.flow", "1", "--events", "shop", "--progress", cwd=shop)
    assert result.returncode == 0
    final = result.stderr.rsplit("\r", 1)[1]
    assert final.startswith("done 1/1 (100%) | failed 0 | retried 1 | "), final


# -- map --------------------------------------------------------------------------------------
def test_map_writes_one_line_per_input_in_order(shop: Path) -> None:
    orders = list(range(40))
    result = cli("map", "checkout.flow", "--events", "shop", cwd=shop,
                 stdin="".join(f"{n}\n" for n in orders))
    assert (result.returncode, result.stderr) == (0, "")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == list(range(len(orders)))
    assert [r["value"] for r in records] == [expected_value(n) for n in orders]
    assert {r["attempts"] for r in records} == {ATTEMPTS}
    assert all(r["success"] is True and r["error"] is None for r in records)
    assert set(records[0]) == {"index", "success", "value", "error", "attempts"}


def test_map_failures_exit_1(shop: Path) -> None:
    result = cli("map", "checkout.flow", "--events", "shop", cwd=shop, stdin="1\n-1\n2\n")
    assert result.returncode == 1
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["success"] for r in records] == [True, False, True]
    failed = records[1]
    assert failed["error"].startswith("price: ")
    assert failed["value"] == [-10, 0]  # the output: the value of the last step that ran
    assert failed["attempts"] == 3  # fetch 1 + price 2; the skipped steps 0


def test_map_object_lines_are_named_inputs(shop: Path) -> None:
    """Object lines give named inputs of their own (over --input); arrays and plain values
    stay positional; [] is a run with no arguments; the order holds throughout."""
    lines = [
        '{"order": 1}', '{"order": 2, "channel": "fax"}', "3", "[4]",
        '{"order": 5}', "[]", "6",
    ]
    result = cli("map", "checkout.flow", "--events", "shop", "--input", "channel=sms",
                 "--input", "order=9", cwd=shop, stdin="\n".join(lines) + "\n")
    assert (result.returncode, result.stderr) == (0, "")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in records] == list(range(7))
    assert [r["value"] for r in records] == [
        expected_value(1, "sms"), expected_value(2, "fax"), expected_value(3, "sms"),
        expected_value(4, "sms"), expected_value(5, "sms"), expected_value(9, "sms"),
        expected_value(6, "sms"),
    ]


def test_map_many_object_lines_keep_their_order(shop: Path) -> None:
    """More object lines than run at once (2 x 16): results still in input order."""
    orders = list(range(100))
    stdin = "".join(json.dumps({"order": n}) + "\n" for n in orders)
    result = cli("map", "checkout.flow", "--events", "shop", cwd=shop, stdin=stdin)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["value"] for r in records] == [expected_value(n) for n in orders]
    assert {r["attempts"] for r in records} == {ATTEMPTS}


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("[1, 2]\n", "line 1 of <stdin>: flow step 'fetch'"),  # checked before running
        ("1\n[1, 2]\n", "line 2 of <stdin> gives 2 argument(s) but line 1 gave 1"),
        ('{"ordr": 1}\n', "line 1 of <stdin>: flow step 'fetch' (fetch): required parameter"),
        ('{"order": 1, "no-id": 2}\n', "line 1 of <stdin> names an input 'no-id'"),
        ("1\n{oops\n", "bad JSON at line 2 of <stdin>"),
    ],
)
def test_map_bad_lines_are_usage_errors(shop: Path, stdin: str, message: str) -> None:
    result = cli("map", "checkout.flow", "--events", "shop", "-o", "out.jsonl", cwd=shop,
                 stdin=stdin)
    assert result.returncode == 2
    assert message in one_error_line(result)
    assert not [p.name for p in shop.iterdir() if p.name.startswith((".", "out"))]


def test_map_output_file_and_progress(shop: Path) -> None:
    (shop / "orders.jsonl").write_text("".join(f"{n}\n" for n in range(10)))
    result = cli("map", "checkout.flow", "orders.jsonl", "--events", "shop", "--output",
                 "out.jsonl", "--progress", cwd=shop)
    assert result.returncode == 0
    assert result.stdout == ""
    records = [json.loads(line) for line in (shop / "out.jsonl").read_text().splitlines()]
    assert [r["value"] for r in records] == [expected_value(n) for n in range(10)]
    final = result.stderr.rsplit("\r", 1)[1]
    assert final.startswith("done 10/10 (100%) | failed 0 | retried 10 | "), final
    assert final.endswith("\n")


def test_map_python_flow_target(shop: Path) -> None:
    result = cli("map", "shop:quick", cwd=shop, stdin="1\n2\n")
    assert result.returncode == 0
    assert [json.loads(line)["value"] for line in result.stdout.splitlines()] == [30, 50]


def test_ctrl_c_during_a_map_of_object_lines(shop: Path) -> None:
    """SIGINT while per-line runs are in flight: exit 130, a partial summary, no hang."""
    (shop / "slow.flow").write_text("slow -> slow")
    (shop / "in.jsonl").write_text("".join(f'{{"order": {n}}}\n' for n in range(2000)))
    child = subprocess.Popen(
        [sys.executable, "-m", "event_pipeline", "map", "slow.flow", "in.jsonl", "--events",
         "shop"],
        cwd=shop, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert json.loads(first)["index"] == 0
        child.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, err = child.communicate(timeout=30)
        assert time.monotonic() - started < 10
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err.decode()
    assert b"Traceback" not in err
    last = out.decode().splitlines()[-1]
    assert last.startswith("interrupted: ") and "inputs done" in last
