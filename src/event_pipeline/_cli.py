"""The ``event-pipeline`` command line (also ``python -m event_pipeline``).

Every subcommand follows the same path::

    argv ─► argparse ─► resolve TARGET (module:Name, or FILE.flow + --events) ─► command
         ─► stdout (summaries, JSON Lines) · stderr (one-line errors, the progress line)

``map`` streams: JSON lines are read lazily, fed to ``Runner.imap`` and written out one by
one, so memory stays flat whatever the input length. Exit codes: 0 success, 1 a run failed
(or a flow has a syntax error), 2 bad usage (one line on stderr, never a traceback), 130
after Ctrl-C once a partial summary is printed and the runner is shut down.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import difflib
import importlib
import inspect
import json
import os
import queue
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from types import ModuleType, TracebackType
from typing import IO, Any, NoReturn

from ._event import EventBase
from ._progress import ProgressLine, ProgressTracker, count_lines, format_duration
from ._results import EventResult, EventRun
from ._runner import Runner
from .exceptions import ImproperlyConfigured, StopProcessingError
from .flow import Flow
from .flow import step as flow_step

__all__ = ["main"]

PROG = "event-pipeline"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# What a shell reports for a process killed by SIGPIPE: `event-pipeline map ... | head`.
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """Bad usage: its message is printed as one line on stderr and the exit code is 2."""


# -- arguments ------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line on stderr, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


_RUN_EXAMPLE = """\
examples:
  event-pipeline run shop.events:Resize photo.jpg 640
  event-pipeline run shop.events:Resize '"photo.jpg"' --input width=640 --json
  event-pipeline run shop.flows:checkout 42 --progress
  event-pipeline run checkout.flow --events shop.events --input order=42

Each ARG and VALUE is read as JSON when it parses as JSON (42, true, [1, 2], {"a": 1},
"quoted"), else as a string.
"""

_MAP_EXAMPLE = """\
examples:
  seq 1 1000 | event-pipeline map shop.events:Square
  event-pipeline map shop.events:Resize photos.jsonl --output sizes.jsonl --progress
  event-pipeline map checkout.flow orders.jsonl --events shop.events

Each line of INPUTS is one task: a JSON array gives positional arguments ([1, "a"]),
any other value the single argument. Named inputs (flows only) are given with --input.
Writes one JSON line per input, in input order:
  {"index": 0, "success": true, "value": ..., "error": null, "attempts": 1}
"""

_CHECK_EXAMPLE = """\
example:
  event-pipeline check checkout.flow --events shop.events

Prints the flow's canonical form; a syntax error is printed as FILE:LINE:COL: message,
with the source line and a caret under the column (exit 1).
"""

_GRAPH_EXAMPLE = """\
examples:
  event-pipeline graph shop.flows:checkout --format mermaid
  event-pipeline graph checkout.flow --events shop.events --format dot | dot -Tsvg > flow.svg
"""


def _build_parser() -> _Parser:
    parser = _Parser(
        prog=PROG,
        description="Run events and flows from the command line.",
        epilog="Run 'event-pipeline COMMAND --help' for a command's options and an example.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, example: str) -> _Parser:
        sub: _Parser = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=example,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument(
            "target",
            metavar="TARGET",
            help="package.module:Name (an event class or a Flow), or a FILE.flow with --events",
        )
        return sub

    run = command("run", "Run TARGET once and print its summary.", _RUN_EXAMPLE)
    run.add_argument("args", metavar="ARG", nargs="*", help="a positional argument (JSON or text)")
    _add_inputs(run)
    run.add_argument("--json", action="store_true", help="print one JSON object instead")
    run.add_argument(
        "--timeline", metavar="FILE.svg", help="write a flow run's timeline as an SVG picture"
    )
    _add_events(run)
    _add_progress(run)
    run.set_defaults(handler=_cmd_run)

    map_ = command("map", "Run TARGET once per JSON line of INPUTS.", _MAP_EXAMPLE)
    map_.add_argument(
        "inputs", metavar="INPUTS", nargs="?", default="-",
        help="a JSON Lines file, or - for stdin (the default)",
    )
    map_.add_argument(
        "-o", "--output", metavar="FILE",
        help="write the results to FILE (complete or not at all) instead of stdout",
    )
    _add_inputs(map_)
    _add_events(map_)
    _add_progress(map_)
    map_.set_defaults(handler=_cmd_map)

    check = command("check", "Parse and validate a FILE.flow; print its canonical form.",
                    _CHECK_EXAMPLE)
    _add_events(check)
    check.set_defaults(handler=_cmd_check)

    graph = command("graph", "Draw a flow as text, Mermaid or Graphviz DOT.", _GRAPH_EXAMPLE)
    graph.add_argument(
        "--format", choices=("text", "mermaid", "dot"), default="text",
        help="the picture's language (default: text, the flow's canonical form)",
    )
    _add_events(graph)
    graph.set_defaults(handler=_cmd_graph)
    return parser


def _add_inputs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input", metavar="NAME=VALUE", action="append", default=[],
        help="a named input (JSON or text); repeatable",
    )


def _add_events(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events", metavar="MODULE", help="the module whose events a FILE.flow uses"
    )


def _add_progress(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="show a progress line on stderr (default: when stderr is a terminal)",
    )


def parse_value(text: str) -> Any:
    """``text`` read as JSON when it parses as JSON, else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_inputs(items: Iterable[str]) -> dict[str, Any]:
    """``--input NAME=VALUE`` options as a dict (values read as by :func:`parse_value`).

    Raises:
        UsageError: an item without ``=`` or whose NAME is not an identifier.
    """
    inputs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.isidentifier():
            raise UsageError(f"--input expects NAME=VALUE with NAME an identifier, got {item!r}")
        inputs[name] = parse_value(value)
    return inputs


# -- targets --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """What a TARGET names: exactly one of an event class and a flow."""

    label: str
    event: type[EventBase] | None = None
    flow: Flow | None = None

    def as_flow(self) -> Flow:
        """The flow, or a one-step flow of the event."""
        if self.flow is not None:
            return self.flow
        assert self.event is not None
        return flow_step(self.event)


def _describe(exc: BaseException) -> str:
    """``Type: message``, or ``Type`` alone when the message is empty."""
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def import_module(name: str) -> ModuleType:
    """Import the user's module ``name``.

    Raises:
        UsageError: the module cannot be found or raises while importing.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise UsageError(
                f"cannot import module {name!r}: no module named {exc.name!r} "
                f"(looked in the current directory and on sys.path)"
            ) from exc
        raise UsageError(f"cannot import module {name!r}: {_describe(exc)}") from exc
    except Exception as exc:
        raise UsageError(f"cannot import module {name!r}: {_describe(exc)}") from exc


def _lookup(module: ModuleType, module_name: str, qualname: str) -> object:
    obj: object = module
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = f"module {module_name!r}" if obj is module else repr(obj)
            close = difflib.get_close_matches(part, dir(obj), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{where} has no attribute {part!r}{hint}") from None
    return obj


def _what(obj: object) -> str:
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "a function, not an event class or a Flow (decorate it with @event)"
    if inspect.isclass(obj):
        return "a class but not an EventBase subclass, nor a Flow"
    name = "module" if inspect.ismodule(obj) else type(obj).__name__
    kind = f"{'an' if name[0] in 'aeiouAEIOU' else 'a'} {name}"
    return f"{kind}, not an event class or a Flow"


def resolve_target(spec: str, events: str | None) -> Target:
    """The event class or flow that ``spec`` names (``--events`` for a ``FILE.flow``).

    Raises:
        UsageError: the target is malformed, missing, or neither an event nor a flow.
        FlowSyntaxError: a ``FILE.flow`` does not parse.
    """
    if ":" not in spec:
        if spec.endswith(".flow"):
            return _flow_file_target(spec, events)
        hint = ""
        if "." in spec and not os.path.exists(spec):
            module, _, name = spec.rpartition(".")
            hint = f" (did you mean '{module}:{name}'?)"
        raise UsageError(f"TARGET must be 'package.module:Name' or a FILE.flow, got {spec!r}{hint}")
    if events is not None:
        raise UsageError("--events is for FILE.flow targets only")
    module_name, _, qualname = spec.partition(":")
    if not module_name or not qualname:
        raise UsageError(f"TARGET must be 'package.module:Name', got {spec!r}")
    obj = _lookup(import_module(module_name), module_name, qualname)
    if isinstance(obj, type) and issubclass(obj, EventBase):
        if inspect.isabstract(obj):
            raise UsageError(f"{spec} cannot run: it does not define process()")
        return Target(spec, event=obj)
    if isinstance(obj, Flow):
        return Target(spec, flow=obj)
    raise UsageError(f"{spec} is {_what(obj)}")


def _read_text(path: str, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {what} {path!r}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return _describe(exc)


def _flow_file_target(path: str, events: str | None) -> Target:
    if events is None:
        raise UsageError(f"{path} needs --events MODULE (the module whose events it uses)")
    text = _read_text(path, "flow file")
    module = import_module(events)
    return Target(path, flow=Flow.parse(text, module, filename=path))


def format_syntax_error(exc: SyntaxError) -> str:
    """A syntax error the way compilers print one: ``FILE:LINE:COL: message``, the line, a caret."""
    lineno = exc.lineno or 1
    offset = exc.offset or 1
    lines = [f"{exc.filename or '<flow>'}:{lineno}:{offset}: {exc.msg}"]
    if exc.text:
        source = exc.text.rstrip("\r\n")
        lines.append(source)
        # Keep tabs in the margin so the caret lines up under a tab-indented line.
        margin = "".join(c if c == "\t" else " " for c in source[: offset - 1])
        end = getattr(exc, "end_offset", None) or offset + 1
        width = max(1, min(end, len(source) + 1) - offset)
        lines.append(margin + "^" + "~" * (width - 1))
    return "\n".join(lines)


# -- values and records -----------------------------------------------------------------------
def _dumps(record: dict[str, Any]) -> str:
    """``record`` as one JSON line; a value JSON cannot hold is written as its ``repr``."""
    try:
        return json.dumps(record, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        record["value"] = _jsonable(record["value"])
        return json.dumps(record, ensure_ascii=False, allow_nan=False)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)
    return value


def _encode(line: str) -> bytes:
    # A lone surrogate (from a "\ud800" escape in the input) cannot be UTF-8; written as the
    # escape it came from, it stays valid JSON inside its string.
    return line.encode("utf-8", "backslashreplace") + b"\n"


def event_record(index: int, result: EventResult) -> dict[str, Any]:
    """The ``map`` output record of one event task."""
    exc = result.exception
    return {
        "index": index,
        "success": result.success,
        "value": None if exc is not None else result.content,
        "error": None if exc is None else _describe(exc),
        "attempts": result.attempts,
    }


def _flow_error(flow_run: Any) -> str | None:
    if flow_run.success:
        return None
    for step in flow_run.failed or flow_run.steps:
        if isinstance(step.value, BaseException):
            return _describe(step.value)
        if step.reason:
            return f"{step.name}: {step.reason}"
    return "the flow failed"


def flow_record(index: int, flow_run: Any) -> dict[str, Any]:
    """The ``map`` output record of one flow run."""
    return {
        "index": index,
        "success": bool(flow_run.success),
        "value": flow_run.output,
        "error": _flow_error(flow_run),
        "attempts": sum(step.attempts for step in flow_run.steps),
    }


def _retries_of_event(result: EventResult) -> int:
    return max(0, result.attempts - 1)


def _retries_of_flow(flow_run: Any) -> int:
    retried = 0
    for step in flow_run.steps:
        if step.run is not None:
            retried += sum(max(0, r.attempts - 1) for r in step.run.results)
    return retried


# -- progress display -----------------------------------------------------------------------
class _Display:
    """The progress line on stderr, drawn by a ticker thread while tasks run.

    The calling thread only counts (a few attribute updates per task, no lock, no drawing);
    the ticker reads the counts every 0.1 s and draws, so the line keeps moving while a
    slow task holds the calling thread, and only one thread ever writes the line. A count
    read a moment early is shown a tenth of a second later.
    """

    def __init__(self, enabled: bool | None, total: int | None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._stop = threading.Event()
        self._line = ProgressLine(sys.stderr)
        self._tracker = ProgressTracker(_ignore, total=total)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Display:
        if self.enabled:
            self._thread = threading.Thread(
                target=self._draw, name="event-pipeline-progress", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _draw(self) -> None:
        while not self._stop.wait(0.1):
            self._line.update(self._tracker.snapshot())

    def submitted(self) -> None:
        if self.enabled:
            self._tracker.submitted()

    def done(self, failed: bool, retried: int) -> None:
        if self.enabled:
            if retried:
                self._tracker.task_retried(retried)
            self._tracker.task_done(failed)

    def close(self) -> None:
        """Stop the ticker and draw the final line (once)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._line.close(self._tracker.finish())


def _ignore(progress: object) -> None:
    """The tracker's sink in the command line: the ticker thread draws instead."""


def _count_inputs(path: str) -> int | None:
    """The number of inputs when ``path`` is a regular file (a quick pass), else ``None``."""
    try:
        if path == "-" or not stat.S_ISREG(os.stat(path).st_mode):
            return None
        return count_lines(path)
    except OSError:
        return None


# -- map: inputs ------------------------------------------------------------------------------
class JsonLines:
    """Reads JSON values from a binary stream lazily, one non-blank line at a time.

    Args:
        stream: the input.
        name: the input's name in messages (a path, or ``<stdin>``).
        on_take: called for every value handed out (the progress line's in-flight count).
    """

    def __init__(self, stream: IO[bytes], name: str, on_take: Callable[[], None]) -> None:
        self._stream = stream
        self.name = name
        self._on_take = on_take
        self.lineno = 0

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        for raw in self._stream:
            self.lineno += 1
            if raw.isspace():
                continue
            try:
                value = json.loads(raw)
            except ValueError as exc:
                problem = exc.msg if isinstance(exc, json.JSONDecodeError) else _describe(exc)
                if isinstance(exc, json.JSONDecodeError):
                    problem += f" (column {exc.colno})"
                raise UsageError(
                    f"bad JSON at line {self.lineno} of {self.name}: {problem}"
                ) from None
            self._on_take()
            yield self.lineno, value


def _event_columns(values: Iterator[tuple[int, Any]], label: str, name: str) -> list[Iterable[Any]]:
    """The argument columns ``Runner.imap`` zips into each task's positional arguments.

    ``imap(event, *iterables)`` gives every task as many arguments as there are iterables,
    so the first line fixes how many: later array lines must have as many items. Column 0
    reads a line and parks the rest of its arguments for the other columns, which ``zip``
    asks next, in order; nothing is read ahead.
    """
    first = next(values, None)
    if first is None:
        return []
    arity = _arity(first, label, name)
    parked: list[Any] = []

    def arguments(lineno: int, value: Any) -> list[Any]:
        if isinstance(value, dict):
            raise UsageError(
                f"line {lineno} of {name} is a JSON object (named inputs), which only flows "
                f"take; give {label} its arguments as a JSON array"
            )
        args = value if isinstance(value, list) else [value]
        if len(args) != arity:
            raise UsageError(
                f"line {lineno} of {name} gives {len(args)} argument(s) but line {first[0]} "
                f"gave {arity}: every line of one map gives the same number"
            )
        return args

    def column0() -> Iterator[Any]:
        for lineno, value in _chain_first(first, values):
            args = arguments(lineno, value)
            parked[:] = args[1:]
            yield args[0]

    def column(k: int) -> Iterator[Any]:
        while True:
            yield parked[k - 1]

    return [column0(), *(column(k) for k in range(1, arity))]


def _arity(first: tuple[int, Any], label: str, name: str) -> int:
    lineno, value = first
    if isinstance(value, dict):
        raise UsageError(
            f"line {lineno} of {name} is a JSON object (named inputs), which only flows "
            f"take; give {label} its arguments as a JSON array"
        )
    if isinstance(value, list) and not value:
        raise UsageError(f"line {lineno} of {name} is an empty array: a task needs an argument")
    return len(value) if isinstance(value, list) else 1


def _chain_first(
    first: tuple[int, Any], rest: Iterator[tuple[int, Any]]
) -> Iterator[tuple[int, Any]]:
    yield first
    yield from rest


# -- map: output ------------------------------------------------------------------------------
class _Output:
    """Where ``map`` writes: stdout, or a temporary file renamed over FILE on success.

    Until :meth:`commit`, FILE is untouched; :meth:`discard` removes the temporary file, so
    an interrupted or failed map never leaves a partial file that looks complete. FILE
    that exists and is not a regular file (``/dev/null``, a FIFO) is written directly:
    renaming over it would replace the device or pipe.
    """

    def __init__(self, path: str | None) -> None:
        self.path = None if path in (None, "-") else path
        self._tmp: str | None = None
        self._final = ""
        self._mode = 0
        if self.path is None:
            self.stream: IO[bytes] = sys.stdout.buffer
            return
        try:
            self.stream = self._open(self.path)
        except OSError as exc:
            raise UsageError(f"cannot write {self.path!r}: {_reason(exc)}") from exc

    def _open(self, path: str) -> IO[bytes]:
        try:
            existing = os.stat(path)
        except FileNotFoundError:
            existing = None
        if existing is not None and not stat.S_ISREG(existing.st_mode):
            return open(path, "wb")
        # Rename onto the symlink's target, so a link stays a link.
        self._final = os.path.realpath(path)
        if existing is not None:
            self._mode = stat.S_IMODE(existing.st_mode)
        else:
            umask = os.umask(0)
            os.umask(umask)
            self._mode = 0o666 & ~umask
        fd, self._tmp = tempfile.mkstemp(
            dir=os.path.dirname(self._final),
            prefix=f".{os.path.basename(self._final)}.",
            suffix=".part",
        )
        return os.fdopen(fd, "wb")

    def commit(self) -> None:
        """Finish writing; a temporary file takes FILE's place."""
        if self.path is None:
            self.stream.flush()
            return
        self.stream.close()
        if self._tmp is not None:
            # mkstemp makes the file private (0600); give it FILE's mode or a new file's.
            os.chmod(self._tmp, self._mode)
            os.replace(self._tmp, self._final)
            self._tmp = None

    def discard(self) -> None:
        """Give up: the temporary file goes, FILE is left as it was."""
        if self.path is None:
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()
            return
        with contextlib.suppress(OSError):
            self.stream.close()
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._tmp)
            self._tmp = None


@contextlib.contextmanager
def _open_inputs(path: str) -> Iterator[tuple[IO[bytes], str]]:
    if path == "-":
        yield sys.stdin.buffer, "<stdin>"
        return
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed by this context manager
    except OSError as exc:
        raise UsageError(f"cannot read INPUTS {path!r}: {_reason(exc)}") from exc
    with stream:
        yield stream, path


@dataclass
class _Tally:
    done: int = 0
    failed: int = 0


# -- commands ---------------------------------------------------------------------------------
def _cmd_map(ns: argparse.Namespace) -> int:
    target = resolve_target(ns.target, ns.events)
    named = parse_inputs(ns.input)
    if target.event is not None and named:
        raise UsageError("--input is for flows; an event's map takes its arguments from INPUTS")
    wants = sys.stderr.isatty() if ns.progress is None else ns.progress
    with _open_inputs(ns.inputs) as (stream, name):
        total = _count_inputs(ns.inputs) if wants else None
        display = _Display(wants, total)
        lines = JsonLines(stream, name, display.submitted)
        tally = _Tally()
        started = time.monotonic()
        output = _Output(ns.output)
        with Runner() as runner:
            try:
                with display:
                    _map_into(runner, target, iter(lines), named, name, output, display, tally)
            except KeyboardInterrupt:
                output.discard()
                runner.shutdown()
                _print_interrupted(tally, total, started, ns.output)
                return EXIT_INTERRUPTED
            except BrokenPipeError:
                _silence_stdout()
                output.discard()
                return EXIT_BROKEN_PIPE
            except BaseException:
                output.discard()
                raise
        output.commit()
    return EXIT_OK if tally.failed == 0 else EXIT_FAILED


def _map_into(
    runner: Runner,
    target: Target,
    values: Iterator[tuple[int, Any]],
    named: dict[str, Any],
    name: str,
    output: _Output,
    display: _Display,
    tally: _Tally,
) -> None:
    write = output.stream.write
    if target.event is not None:
        columns = _event_columns(values, target.label, name)
        if not columns:
            return
        results: Iterator[Any] = runner.imap(target.event, *columns)
        to_record: Callable[[int, Any], dict[str, Any]] = event_record
        retries: Callable[[Any], int] = _retries_of_event
    else:
        results = _imap_flow(runner, target.as_flow(), values, named, name)
        to_record, retries = flow_record, _retries_of_flow
    try:
        for index, outcome in enumerate(results):
            record = to_record(index, outcome)
            write(_encode(_dumps(record)))
            tally.done += 1
            if not record["success"]:
                tally.failed += 1
            display.done(not record["success"], retries(outcome))
    except StopProcessingError as exc:
        cause = exc.__cause__
        detail = _describe(cause) if cause is not None else str(exc)
        raise _Stopped(f"{target.label}: the run stopped (stop_on_exception): {detail}") from exc
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


class _Stopped(Exception):
    """The map stopped before its end: a one-line message, exit 1."""


#: Flow runs with per-line named inputs (object lines) run this many at a time, each on a
#: driver thread of the command line calling ``Runner.run``; twice as many are in flight.
LINE_DRIVERS = 16


class _Lines:
    """The numbered input values, with one value that can be put back, and the last line
    number handed out (for messages)."""

    def __init__(self, values: Iterator[tuple[int, Any]]) -> None:
        self._values = values
        self._back: list[tuple[int, Any]] = []
        self.lineno = 0

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> tuple[int, Any]:
        item = self._back.pop() if self._back else next(self._values)
        self.lineno = item[0]
        return item

    def put_back(self, item: tuple[int, Any]) -> None:
        self._back.append(item)

    def while_(self, per_line: bool) -> Iterator[tuple[int, Any]]:
        """The next values as long as they are (``per_line``) or are not :func:`_per_line`."""
        for item in self:
            if _per_line(item[1]) is not per_line:
                self.put_back(item)
                return
            yield item


def _per_line(value: Any) -> bool:
    """A line a flow runs through ``Runner.run``: a JSON object (named inputs of its own)
    or ``[]`` (no arguments; ``Runner.imap`` needs at least one)."""
    return isinstance(value, dict) or (isinstance(value, list) and not value)


def _imap_flow(
    runner: Runner,
    flow: Flow,
    values: Iterator[tuple[int, Any]],
    named: dict[str, Any],
    name: str,
) -> Iterator[Any]:
    """Stream a flow over the input lines: one flow run per line, in input order.

    ``Runner.imap(flow, *iterables, **inputs)`` gives every run the same named inputs, so
    the lines are taken in stretches: consecutive non-object lines (positional arguments)
    stream through one ``imap`` call with the ``--input`` values; consecutive object lines
    (named inputs of their own, merged over ``--input``) and ``[]`` lines (no arguments)
    run through ``Runner.run`` on a
    few driver threads, at most ``2 * LINE_DRIVERS`` in flight, results taken in order.
    Either way memory stays flat and the output keeps the input order.
    """
    lines = _Lines(values)
    while True:
        first = next(lines, None)
        if first is None:
            return
        lines.put_back(first)
        if _per_line(first[1]):
            yield from _run_each(runner, flow, lines.while_(per_line=True), named, name)
            continue
        columns = _event_columns(lines.while_(per_line=False), "the flow", name)
        imap: Callable[..., Iterator[Any]] = runner.imap
        try:
            yield from imap(flow, *columns, **named)
        except (ImproperlyConfigured, TypeError, ValueError) as exc:
            # The up-front check of a run's arguments (SPEC 11.4), before it started.
            raise UsageError(f"line {lines.lineno} of {name}: {exc}") from exc


def _run_each(
    runner: Runner,
    flow: Flow,
    lines: Iterator[tuple[int, Any]],
    named: dict[str, Any],
    name: str,
) -> Iterator[Any]:
    """One ``Runner.run`` per object line on driver threads; the flow runs in line order."""
    drivers = _Drivers(runner, flow, LINE_DRIVERS)
    pending: collections.deque[tuple[int, Future[Any]]] = collections.deque()
    try:
        for lineno, value in lines:
            pending.append((lineno, drivers.submit(_line_inputs(lineno, value, named, name))))
            if len(pending) >= 2 * LINE_DRIVERS:
                yield _line_result(*pending.popleft(), name)
        while pending:
            yield _line_result(*pending.popleft(), name)
    finally:
        drivers.close()


def _line_inputs(lineno: int, value: Any, named: dict[str, Any], name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return dict(named)
    for key in value:
        if not key.isidentifier():
            raise UsageError(
                f"line {lineno} of {name} names an input {key!r}, which is not an identifier"
            )
    return {**named, **value}


def _line_result(lineno: int, future: Future[Any], name: str) -> Any:
    try:
        return future.result()
    except (ImproperlyConfigured, TypeError, ValueError) as exc:
        raise UsageError(f"line {lineno} of {name}: {exc}") from exc


class _Drivers:
    """A few daemon threads calling ``runner.run(flow, **inputs)`` for queued lines.

    Daemon threads, so that an interrupted map never waits for them at exit; once the
    runner is shut down, a run they are driving ends within a tenth of a second.
    """

    def __init__(self, runner: Runner, flow: Flow, size: int) -> None:
        self._runner = runner
        self._flow = flow
        self._size = size
        self._jobs: queue.SimpleQueue[tuple[Future[Any], dict[str, Any]] | None] = (
            queue.SimpleQueue()
        )
        self._threads: list[threading.Thread] = []
        self._futures: collections.deque[Future[Any]] = collections.deque()

    def submit(self, inputs: dict[str, Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, inputs))
        self._futures.append(future)
        while self._futures and self._futures[0].done():
            self._futures.popleft()
        if len(self._threads) < self._size:
            thread = threading.Thread(
                target=self._drive, name=f"event-pipeline-line-{len(self._threads)}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return future

    def _drive(self) -> None:
        run: Callable[..., Any] = self._runner.run
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, inputs = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(run(self._flow, **inputs))
            except BaseException as exc:  # handed to the reading thread
                future.set_exception(exc)

    def close(self) -> None:
        """Cancel the runs not started and let the threads end (not waited for)."""
        for future in self._futures:
            future.cancel()
        for _ in self._threads:
            self._jobs.put(None)


def _print_interrupted(tally: _Tally, total: int | None, started: float, path: str | None) -> None:
    of = f" of {total:,}" if total is not None else ""
    where = f"{path} was not written" if path not in (None, "-") else "the output is incomplete"
    print(
        f"interrupted: {tally.done:,}{of} inputs done ({tally.failed:,} failed) in "
        f"{format_duration(time.monotonic() - started)}; {where}",
        flush=True,
    )


def _silence_stdout() -> None:
    # Python flushes stdout at exit; with the reader gone that flush fails again and prints
    # an error, so point stdout at /dev/null (as the Python docs advise for SIGPIPE).
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _cmd_run(ns: argparse.Namespace) -> int:
    target = resolve_target(ns.target, ns.events)
    args = [parse_value(a) for a in ns.args]
    inputs = parse_inputs(ns.input)
    if ns.timeline is not None and target.flow is None:
        raise UsageError("--timeline draws a flow run's steps; TARGET is an event")
    started = time.monotonic()
    display = _Display(ns.progress, total=1)
    with Runner() as runner:
        try:
            with display:
                display.submitted()
                outcome = _run_once(runner, target, args, inputs)
                display.done(not outcome.success, _retries(target, outcome))
        except StopProcessingError as exc:
            outcome = exc.run
        except KeyboardInterrupt:
            runner.shutdown()
            print(
                f"interrupted: {target.label} did not finish "
                f"({format_duration(time.monotonic() - started)} elapsed)",
                flush=True,
            )
            return EXIT_INTERRUPTED
    if ns.timeline is not None:
        _write_file(ns.timeline, outcome.to_svg())
    if ns.json:
        print(json.dumps(_run_json(target, outcome), ensure_ascii=False, indent=None))
    else:
        print(_run_text(target, outcome))
    return EXIT_OK if outcome.success else EXIT_FAILED


def _retries(target: Target, outcome: Any) -> int:
    if target.event is not None:
        return sum(_retries_of_event(r) for r in outcome.results)
    return _retries_of_flow(outcome)


def _run_once(runner: Runner, target: Target, args: list[Any], inputs: dict[str, Any]) -> Any:
    subject: Any = target.event if target.event is not None else target.flow
    run: Callable[..., Any] = runner.run
    try:
        return run(subject, *args, **inputs)
    except StopProcessingError:
        raise
    except (ImproperlyConfigured, TypeError, ValueError) as exc:
        # Raised before any task ran: the arguments or the target cannot run as given.
        raise UsageError(f"{target.label}: {exc}") from exc


def _value_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return repr(value)


def event_lines(run: EventRun) -> list[str]:
    """One line per task: name, index, outcome, attempts, duration, value or error."""
    width = max((len(str(i)) for i in range(len(run.results))), default=1)
    lines = []
    for index, result in enumerate(run.results):
        status = "succeeded" if result.success else "failed   "
        plural = "" if result.attempts == 1 else "s"
        shown = (
            _describe(result.exception) if result.exception is not None
            else _value_text(result.content)
        )
        lines.append(
            f"{result.event_name}[{index:>{width}}]  {status}  "
            f"{result.attempts} attempt{plural}  {result.duration:.3f}s  {shown}"
        )
    return lines


def _run_text(target: Target, outcome: Any) -> str:
    if target.event is not None:
        return "\n".join(event_lines(outcome))
    summary: str = outcome.summary()
    return summary.rstrip("\n")


def _run_json(target: Target, outcome: Any) -> dict[str, Any]:
    if target.event is not None:
        return {
            "event": outcome.event_name,
            "success": outcome.success,
            "duration": outcome.duration,
            "results": [
                {**event_record(i, r), "value": _jsonable(event_record(i, r)["value"]),
                 "duration": r.duration}
                for i, r in enumerate(outcome.results)
            ],
        }
    return {
        "flow": str(target.flow),
        "success": bool(outcome.success),
        "output": _jsonable(outcome.output),
        "error": _flow_error(outcome),
        "duration": outcome.duration,
        "steps": [_step_json(step) for step in outcome.steps],
    }


def _step_json(step: Any) -> dict[str, Any]:
    status = step.status
    return {
        "name": step.name,
        "event": step.event_name,
        "status": getattr(status, "name", str(status)).lower(),
        "attempts": step.attempts,
        "started": step.started,
        "duration": step.duration,
        "route": step.route,
        "handled": step.handled,
        "reason": step.reason,
        "value": _describe(step.value) if isinstance(step.value, BaseException)
        else _jsonable(step.value),
    }


def _write_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` completely or not at all."""
    output = _Output(path)
    try:
        output.stream.write(text.encode("utf-8"))
    except BaseException:
        output.discard()
        raise
    output.commit()


def _cmd_check(ns: argparse.Namespace) -> int:
    if not ns.target.endswith(".flow"):
        raise UsageError(f"check takes a FILE.flow, got {ns.target!r}")
    target = resolve_target(ns.target, ns.events)
    print(str(target.flow))
    return EXIT_OK


def _cmd_graph(ns: argparse.Namespace) -> int:
    target = resolve_target(ns.target, ns.events)
    flow = target.as_flow()
    if ns.format == "mermaid":
        picture: str = flow.to_mermaid()
    elif ns.format == "dot":
        picture = flow.to_dot()
    else:
        picture = str(flow)
    print(picture.rstrip("\n"))
    return EXIT_OK


# -- entry point ------------------------------------------------------------------------------
def _make_cwd_importable() -> None:
    # As with `python -m`: the user's modules live in the current directory. Process pools
    # started later hand this sys.path to their workers.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _fail(message: str) -> None:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Returns:
        0 success; 1 a run failed or a flow has a syntax error; 2 bad usage; 130 after
        Ctrl-C.
    """
    parser = _build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _make_cwd_importable()
    handler: Callable[[argparse.Namespace], int] = ns.handler
    try:
        return handler(ns)
    except UsageError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except _Stopped as exc:
        _fail(str(exc))
        return EXIT_FAILED
    except SyntaxError as exc:
        # Only a flow's text is parsed here (a user module's own syntax error is a
        # UsageError from import_module): FlowSyntaxError subclasses SyntaxError.
        sys.stderr.write(format_syntax_error(exc) + "\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        return EXIT_INTERRUPTED
