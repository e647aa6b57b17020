"""The command line, run as a user runs it: ``python -m event_pipeline`` in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from event_pipeline.__main__ import main
from event_pipeline._cli import format_syntax_error

TESTS = Path(__file__).resolve().parent


def cli(
    *args: str,
    cwd: Path,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    events_on_path: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m event_pipeline ARGS`` in ``cwd`` and capture everything.

    Output is decoded without newline translation, so the progress line's ``\r`` shows.
    """
    done = subprocess.run(
        [sys.executable, "-m", "event_pipeline", *args],
        input=None if stdin is None else stdin.encode("utf-8", "surrogateescape"),
        capture_output=True,
        cwd=cwd,
        env=child_env(env, events_on_path),
        timeout=60,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def child_env(extra: dict[str, str] | None = None, events_on_path: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if events_on_path:
        env["PYTHONPATH"] = str(TESTS)
    env.update(extra or {})
    return env


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a usage error (and no traceback)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("event-pipeline")
    return lines[0]


# -- help -------------------------------------------------------------------------------------
def test_help_lists_the_subcommands(tmp_path: Path) -> None:
    """--help exits 0 and names run, map, check and graph."""
    result = cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for name in ("run", "map", "check", "graph"):
        assert name in result.stdout


@pytest.mark.parametrize("command", ["run", "map", "check", "graph"])
def test_each_subcommand_has_help_with_an_example(tmp_path: Path, command: str) -> None:
    """COMMAND --help exits 0 and shows an example command line."""
    result = cli(command, "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "example" in result.stdout
    assert f"event-pipeline {command} " in result.stdout
    assert result.stderr == ""


# -- run ----------------------------------------------------------------------------------------
def test_run_prints_one_line_per_task(tmp_path: Path) -> None:
    """run prints the task's outcome, attempts and value; nothing on stderr; exit 0."""
    result = cli("run", "cli_events:square", "7", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr == ""
    (line,) = result.stdout.splitlines()
    assert line.startswith("square[0]  succeeded  1 attempt  ")
    assert line.endswith("s  49")


def test_run_failed_task_exits_1(tmp_path: Path) -> None:
    """A run whose task fails exits 1 and says so."""
    result = cli("run", "cli_events:square", "-3", cwd=tmp_path)
    assert result.returncode == 1
    assert "failed" in result.stdout
    assert result.stderr == ""


def test_run_shows_the_last_exception_after_retries(tmp_path: Path) -> None:
    """A task that raises on every attempt shows its attempts and its exception."""
    result = cli("run", "cli_events:boom", "x", cwd=tmp_path)
    assert result.returncode == 1
    assert "3 attempts" in result.stdout
    assert "ValueError: bad x" in result.stdout


def test_run_reads_arguments_as_json_else_as_strings(tmp_path: Path) -> None:
    """Each ARG and --input VALUE is JSON when it parses, a string otherwise."""
    args = ["7", '"7"', "abc", "[1, 2]", '{"a": 1}', "true", "null", "1.5", "{oops"]
    result = cli(
        "run", "cli_events:echo", *args, "--input", "n=3", "--input", "s=x=y", "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    value = json.loads(result.stdout)["results"][0]["value"]
    assert value["args"] == [7, "7", "abc", [1, 2], {"a": 1}, True, None, 1.5, "{oops"]
    assert value["kwargs"] == {"n": 3, "s": "x=y"}


def test_run_json_is_one_object(tmp_path: Path) -> None:
    """--json prints exactly one JSON object describing the run."""
    result = cli("run", "cli_events:add", "1", "2", "--input", "scale=10", "--json",
                 cwd=tmp_path)
    assert result.returncode == 0
    assert len(result.stdout.splitlines()) == 1
    data = json.loads(result.stdout)
    assert data["event"] == "add" and data["success"] is True
    (task,) = data["results"]
    assert task["value"] == 30 and task["error"] is None and task["attempts"] == 1
    assert set(task) == {"index", "success", "value", "error", "attempts", "duration"}


def test_run_progress_line(tmp_path: Path) -> None:
    """run --progress draws a final progress line on stderr."""
    result = cli("run", "cli_events:square", "2", "--progress", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stderr.startswith("\r") and result.stderr.endswith("\n")
    assert "done 1/1 (100%)" in result.stderr


def test_run_wrong_arguments_fail_the_task(tmp_path: Path) -> None:
    """Arguments process() does not accept make a failed task (exit 1), not a crash."""
    result = cli("run", "cli_events:square", "1", "2", cwd=tmp_path)
    assert result.returncode == 1
    assert "TypeError" in result.stdout


def test_run_bad_input_option(tmp_path: Path) -> None:
    """--input without NAME= is a usage error."""
    result = cli("run", "cli_events:echo", "--input", "novalue", cwd=tmp_path)
    assert result.returncode == 2
    assert "NAME=VALUE" in one_error_line(result)


def test_run_timeline_needs_a_flow(tmp_path: Path) -> None:
    """--timeline on an event target is a usage error, and writes nothing."""
    result = cli("run", "cli_events:square", "2", "--timeline", "t.svg", cwd=tmp_path)
    assert result.returncode == 2
    assert "--timeline" in one_error_line(result)
    assert not (tmp_path / "t.svg").exists()


def test_current_directory_is_importable(tmp_path: Path) -> None:
    """A module in the current directory is found, as with python -m."""
    (tmp_path / "mine.py").write_text(
        "from event_pipeline import event\n\n"
        "@event\ndef double(x):\n    return True, 2 * x\n"
    )
    result = cli("run", "mine:double", "21", cwd=tmp_path, events_on_path=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("42")


# -- targets and usage errors ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("cli_events:plain", "is a function, not an event class or a Flow"),
        ("cli_events:NOT_AN_EVENT", "is an int, not an event class or a Flow"),
        ("cli_events:Path", "not an EventBase subclass"),
        ("cli_events:Abstract", "does not define process()"),
        ("cli_events:sqare", "has no attribute 'sqare' (did you mean 'square'?)"),
        ("no_such_module:thing", "cannot import module 'no_such_module'"),
        ("cli_events.square", "did you mean 'cli_events:square'?"),
        ("cli_events:", "TARGET must be"),
        ("pipeline.flow", "needs --events MODULE"),
    ],
)
@pytest.mark.parametrize("command", ["run", "map"])
def test_bad_targets_are_one_line_usage_errors(
    tmp_path: Path, command: str, target: str, message: str
) -> None:
    """A target that is not an event or a flow: one line naming the problem, exit 2."""
    result = cli(command, target, cwd=tmp_path, stdin="1\n")
    assert result.returncode == 2
    assert message in one_error_line(result)
    assert result.stdout == ""


def test_module_that_fails_to_import(tmp_path: Path) -> None:
    """A module raising while imported is a usage error naming the module and the error."""
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-written module')\n")
    result = cli("run", "broken:x", cwd=tmp_path)
    assert result.returncode == 2
    line = one_error_line(result)
    assert "cannot import module 'broken'" in line
    assert "RuntimeError: half-written module" in line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "cli_events:square", "--frob"], "unrecognized arguments: --frob"),
        (["map", "cli_events:square", "a", "b"], "unrecognized arguments: b"),
        (["graph", "x.flow", "--format", "png"], "invalid choice: 'png'"),
        ([], "required"),
        (["run", "cli_events:square", "--events", "cli_events"], "--events is for FILE.flow"),
    ],
)
def test_bad_usage_is_one_line_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    """Unknown subcommands and options: one line on stderr, exit 2."""
    result = cli(*argv, cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_error_line(result)


# -- map --------------------------------------------------------------------------------------
def test_map_reads_stdin_and_writes_json_lines(tmp_path: Path) -> None:
    """map over stdin: one record per input, in order, with the documented keys."""
    result = cli("map", "cli_events:square", cwd=tmp_path, stdin="1\n2\n3\n")
    assert result.returncode == 0
    assert result.stderr == ""
    assert records(result.stdout) == [
        {"index": i, "success": True, "value": v, "error": None, "attempts": 1}
        for i, v in enumerate([1, 4, 9])
    ]


def test_map_reads_a_file_and_array_lines_are_positional(tmp_path: Path) -> None:
    """Array lines give positional arguments; blank lines are skipped; '-' is stdin."""
    (tmp_path / "in.jsonl").write_text('[1, 2]\n\n["a", "b"]\n[[1], [2]]\n')
    from_file = cli("map", "cli_events:add", "in.jsonl", cwd=tmp_path)
    from_stdin = cli("map", "cli_events:add", "-", cwd=tmp_path,
                     stdin=(tmp_path / "in.jsonl").read_text())
    assert from_file.returncode == 0, from_file.stderr
    assert [r["value"] for r in records(from_file.stdout)] == [3, "ab", [1, 2]]
    assert from_file.stdout == from_stdin.stdout


def test_map_single_values_and_one_item_arrays(tmp_path: Path) -> None:
    """Any other value is the single argument; an array of one item gives that item."""
    result = cli("map", "cli_events:echo", cwd=tmp_path, stdin='"text"\n[["a", "list"]]\n')
    assert [r["value"]["args"] for r in records(result.stdout)] == [["text"], [["a", "list"]]]


def test_map_failures_exit_1_and_show_errors(tmp_path: Path) -> None:
    """A failed task makes exit 1; (False, v) keeps v, an exception is 'Type: message'."""
    result = cli("map", "cli_events:square", cwd=tmp_path, stdin="2\n-3\n")
    assert result.returncode == 1
    assert result.stderr == ""
    assert records(result.stdout)[1] == {
        "index": 1, "success": False, "value": 9, "error": None, "attempts": 1,
    }
    result = cli("map", "cli_events:boom", cwd=tmp_path, stdin="1\n")
    assert records(result.stdout) == [
        {"index": 0, "success": False, "value": None, "error": "ValueError: bad 1",
         "attempts": 3},
    ]


def test_map_value_json_cannot_hold_is_its_repr(tmp_path: Path) -> None:
    """A value JSON cannot hold is written as its repr."""
    result = cli("map", "cli_events:opaque", cwd=tmp_path, stdin="5\n")
    assert records(result.stdout)[0]["value"] == "{5}"


def test_map_keeps_input_order_when_tasks_finish_out_of_order(tmp_path: Path) -> None:
    """Results come out in input order even when later tasks finish first."""
    n = 40
    stdin = "".join(f"{i}\n" for i in range(n))
    result = cli("map", "cli_events:slow_in_process", cwd=tmp_path, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert [(r["index"], r["value"]) for r in records(result.stdout)] == [
        (i, i) for i in range(n)
    ]


def test_map_empty_input(tmp_path: Path) -> None:
    """No input lines: no output, exit 0."""
    result = cli("map", "cli_events:square", cwd=tmp_path, stdin="\n\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


@pytest.mark.parametrize(
    ("stdin", "message"),
    [
        ("1\n2\nnope\n", "bad JSON at line 3 of <stdin>"),
        ("1\n\n{\"x\": 1}\n", "line 3 of <stdin> is a JSON object"),
        ("[1, 2]\n[3]\n", "line 2 of <stdin> gives 1 argument(s) but line 1 gave 2"),
        ("[]\n", "line 1 of <stdin> is an empty array"),
        (b"1\n\xff\n".decode("utf-8", "surrogateescape"), "bad JSON at line 2"),
    ],
)
def test_map_bad_input_lines(tmp_path: Path, stdin: str, message: str) -> None:
    """An unreadable input line: one line naming the line, exit 2."""
    result = cli("map", "cli_events:add", cwd=tmp_path, stdin=stdin)
    assert result.returncode == 2
    assert message in one_error_line(result)


def test_map_missing_inputs_file(tmp_path: Path) -> None:
    """A missing INPUTS file is a usage error naming it."""
    result = cli("map", "cli_events:square", "nowhere.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read INPUTS 'nowhere.jsonl': No such file or directory" in one_error_line(
        result
    )


def test_map_input_option_is_for_flows(tmp_path: Path) -> None:
    """--input on an event's map is a usage error (events take INPUTS' arguments)."""
    result = cli("map", "cli_events:square", "--input", "a=1", cwd=tmp_path, stdin="1\n")
    assert result.returncode == 2
    assert "--input is for flows" in one_error_line(result)


def test_map_output_file(tmp_path: Path) -> None:
    """--output writes the records to FILE, nothing to stdout or stderr, no leftovers."""
    (tmp_path / "in.jsonl").write_text("1\n2\n")
    result = cli("map", "cli_events:square", "in.jsonl", "--output", "out.jsonl",
                 cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    assert [r["value"] for r in records((tmp_path / "out.jsonl").read_text())] == [1, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl"]
    assert (tmp_path / "out.jsonl").stat().st_mode & 0o777 != 0o600


@pytest.mark.parametrize(
    ("target", "stdin"),
    [("cli_events:square", "1\n2\nnot json\n"), ("cli_events:stopper", "1\n-1\n2\n")],
)
def test_map_output_no_partial_file_on_failure(tmp_path: Path, target: str, stdin: str) -> None:
    """A map that does not finish leaves FILE as it was and no temporary file behind."""
    (tmp_path / "out.jsonl").write_text("previous\n")
    result = cli("map", target, "-o", "out.jsonl", cwd=tmp_path, stdin=stdin)
    assert result.returncode in (1, 2)
    one_error_line(result)
    assert (tmp_path / "out.jsonl").read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_map_stop_on_exception_exits_1(tmp_path: Path) -> None:
    """A stop_on_exception event that raises stops the map: one line on stderr, exit 1."""
    result = cli("map", "cli_events:stopper", cwd=tmp_path, stdin="1\n-1\n2\n")
    assert result.returncode == 1
    assert "RuntimeError: negative" in one_error_line(result)


def test_map_progress_line(tmp_path: Path) -> None:
    """--progress draws on stderr with the file's total; --no-progress draws nothing."""
    (tmp_path / "in.jsonl").write_text("1\n2\n\n3\n-4\n")
    shown = cli("map", "cli_events:square", "in.jsonl", "--progress", cwd=tmp_path)
    assert shown.returncode == 1
    assert len(records(shown.stdout)) == 4
    assert shown.stderr.startswith("\r") and shown.stderr.endswith("\n")
    assert shown.stderr.count("\n") == 1
    final = shown.stderr.rsplit("\r", 1)[1]
    assert final.startswith("done 4/4 (100%) | failed 1 | retried 0 | ")
    assert "ETA 0:00" in final
    hidden = cli("map", "cli_events:square", "in.jsonl", "--no-progress", cwd=tmp_path)
    assert hidden.stderr == ""
    assert hidden.stdout == shown.stdout


def test_map_progress_from_stdin_has_no_total(tmp_path: Path) -> None:
    """Reading stdin, the line shows no total and no ETA; retries are counted."""
    result = cli("map", "cli_events:boom", "--progress", cwd=tmp_path, stdin="1\n2\n")
    final = result.stderr.rsplit("\r", 1)[1]
    assert final.startswith("done 2 | failed 2 | retried 4 | ")
    assert "ETA" not in final


# -- Ctrl-C -------------------------------------------------------------------------------------
@pytest.mark.parametrize("output", [None, "out.jsonl"])
def test_ctrl_c_during_a_process_pool_map(tmp_path: Path, output: str | None) -> None:
    """SIGINT mid-map: exit 130, a partial summary on stdout, no worker process left."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(f"{i}\n" for i in range(5000)))
    pids = tmp_path / "pids"
    pids.mkdir()
    argv = [sys.executable, "-m", "event_pipeline", "map", "cli_events:slow_in_process",
            str(inputs), "--progress"]
    if output:
        argv += ["--output", output]
    child = subprocess.Popen(
        argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=child_env({"CLI_PIDS": str(pids)}),
    )
    try:
        deadline = time.monotonic() + 30
        while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(list(pids.iterdir())) == 2, "the workers did not start"
        time.sleep(0.2)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    stdout, stderr = out.decode(), err.decode()
    assert child.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary = stdout.splitlines()[-1]
    assert summary.startswith("interrupted: ")
    assert "of 5,000 inputs done" in summary
    if output:
        assert f"{output} was not written" in summary
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "pids"]
    else:
        done = records("\n".join(stdout.splitlines()[:-1]))
        assert [r["index"] for r in done] == list(range(len(done)))
        assert 0 < len(done) < 5000
    for pid_file in pids.iterdir():
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.name), 0)


# -- memory -------------------------------------------------------------------------------------
def _peak_rss_kib(tmp_path: Path, lines: int) -> int:
    """Peak RSS of one ``map`` child over ``lines`` inputs (os.wait4: that child alone)."""
    inputs = tmp_path / f"in-{lines}.jsonl"
    inputs.write_text("".join(f"[{i}]\n" for i in range(lines)))
    child = subprocess.Popen(
        [sys.executable, "-m", "event_pipeline", "map", "cli_events:square", str(inputs),
         "--output", "out.jsonl"],
        cwd=tmp_path, env=child_env(), stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    assert child.stderr is not None
    assert child.returncode == 0, child.stderr.read()
    child.stderr.close()
    with (tmp_path / "out.jsonl").open() as out:
        assert sum(1 for _ in out) == lines
    return usage.ru_maxrss


@pytest.mark.slow
def test_map_memory_stays_flat(tmp_path: Path) -> None:
    """Ten times the input lines (200,000) grows the child's peak RSS by under 20 MiB."""
    small = _peak_rss_kib(tmp_path, 20_000)
    large = _peak_rss_kib(tmp_path, 200_000)
    assert large - small < 20 * 1024, (small, large)


# -- flows --------------------------------------------------------------------------------------
# (every subcommand on flows, as a user runs them: tests/test_cli_flows.py)
@pytest.mark.parametrize("command", ["check", "graph", "run", "map"])
def test_flow_file_needs_events(tmp_path: Path, command: str) -> None:
    """A FILE.flow without --events: one line naming the option, exit 2, nothing on stdout."""
    (tmp_path / "pipeline.flow").write_text("square\n")
    result = cli(command, "pipeline.flow", cwd=tmp_path, stdin="1\n")
    assert result.returncode == 2
    assert one_error_line(result) == (
        "event-pipeline: error: pipeline.flow needs --events MODULE (the module whose "
        "events it uses)"
    )
    assert result.stdout == ""


def test_flow_file_of_an_event_module(tmp_path: Path) -> None:
    """A one-line flow over cli_events maps like the event itself (attempts summed)."""
    (tmp_path / "pipeline.flow").write_text("square |-> square\n")
    result = cli("map", "pipeline.flow", "--events", "cli_events", cwd=tmp_path, stdin="2\n-1\n")
    assert result.returncode == 1
    assert records(result.stdout) == [
        {"index": 0, "success": True, "value": 16, "error": None, "attempts": 2},
        {"index": 1, "success": False, "value": 1, "error": "square: square failed: "
         "returned (False, 1)", "attempts": 1},
    ]


def test_format_syntax_error_is_compiler_style() -> None:
    """FILE:LINE:COL: message, the source line, and a caret under the column (tabs kept)."""
    error = SyntaxError("unknown event 'Pasre' (did you mean 'Parse'?)")
    error.filename, error.lineno, error.offset, error.text = "p.flow", 2, 11, "\tFetch -> Pasre\n"
    error.end_offset = 16
    assert format_syntax_error(error).splitlines() == [
        "p.flow:2:11: unknown event 'Pasre' (did you mean 'Parse'?)",
        "\tFetch -> Pasre",
        "\t         ^~~~~",
    ]
    bare = SyntaxError("empty flow")
    bare.filename, bare.lineno, bare.offset = "e.flow", 1, 1
    assert format_syntax_error(bare) == "e.flow:1:1: empty flow"


# -- in-process and pipes ---------------------------------------------------------------------
def test_main_returns_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """main(argv) returns the exit code instead of raising SystemExit."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # main makes the cwd importable
    assert main(["--help"]) == 0
    assert main(["frobnicate"]) == 2
    assert main(["run", "no_such_module_here:x"]) == 2
    err = capsys.readouterr().err
    assert "cannot import module 'no_such_module_here'" in err


def test_closed_stdout_ends_the_map_quietly(tmp_path: Path) -> None:
    """`map ... | head -1`: the map stops with exit 141 and no traceback."""
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(f"{i}\n" for i in range(100_000)))
    child = subprocess.Popen(
        [sys.executable, "-m", "event_pipeline", "map", "cli_events:square", str(inputs)],
        cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    child.stdout.close()
    err = child.stderr.read()
    child.stderr.close()
    assert child.wait(timeout=60) == 141
    assert json.loads(first)["index"] == 0
    assert err == b""
