#!/usr/bin/env python
"""Measure event_pipeline against what users pick instead, side by side in one run.

Usage, from the repository root::

    python benchmarks/peers.py                        # every workload, medians of 3 (< 3 min)
    python benchmarks/peers.py --quick                # smoke run: small sizes, 1 repeat (< 20 s)
    python benchmarks/peers.py --markdown /tmp/peers.md
    python benchmarks/peers.py --only threads,processes --repeat 5
    python -m cProfile -s cumtime benchmarks/peers.py --only threads --library-only --repeat 1

Six workloads (issue 14), each run for this library and for its peers in the same process,
one contestant after another inside each repeat (the order rotates between repeats). Ratios
are paired: each repeat's figure is divided by the reference's figure *of the same repeat*, and
the median of those ratios is reported, so a slow patch of a shared machine moves both sides.

Pools are measured **warm**: every pool (the runner's and each peer's) is created, its workers
started and one warm-up call made before anything is timed. Pool start-up is not in any figure.

Peers (joblib, tenacity) are benchmark-only dependencies, imported lazily: a missing one prints
"not installed" on its row and the run goes on. ``multiprocessing`` and ``concurrent.futures``
are the standard library. The library's results are checked (count, order, success, attempts)
on every timed run, so a fast wrong answer is an ERROR, never a figure; peers' results are
checked the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import faulthandler
import gc
import importlib
import itertools
import math
import multiprocessing
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.pool import ThreadPool
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _src_from_argv(argv: list[str]) -> Path:
    """``--src DIR`` (read before the library is imported), else the repository's src."""
    for index, arg in enumerate(argv):
        if arg == "--src" and index + 1 < len(argv):
            return Path(argv[index + 1]).resolve()
        if arg.startswith("--src="):
            return Path(arg.split("=", 1)[1]).resolve()
    return REPO / "src"


SRC = _src_from_argv(sys.argv[1:])

# This directory first (so spawned and loky workers can import ``_peer_events``), then the
# repository's src (or ``--src DIR``), so that this tree is measured, never an installed copy.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if (SRC / "event_pipeline" / "__init__.py").is_file() and str(SRC) not in sys.path:
    sys.path.insert(1, str(SRC))

from _machine import cores, cpu_model  # noqa: E402

try:
    import _peer_events as E

    import event_pipeline
    from event_pipeline import EventRun, Runner
except ImportError as exc:  # pragma: no cover - only before the library exists
    raise SystemExit(
        f"peers.py: cannot import event_pipeline ({exc}); run `pip install -e .` "
        "from the repository root"
    ) from exc

SPAWN = multiprocessing.get_context("spawn")
NOT_INSTALLED = "not installed"


# --------------------------------------------------------------------------------------------
# Sizes and context
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    threads: int = 100_000
    processes: int = 20_000
    cpu: int = 2_000
    inline: int = 100_000
    retries: int = 200
    crash: int = 1_000


FULL = Sizes()
QUICK = Sizes(threads=5_000, processes=1_000, cpu=100, inline=5_000, retries=16, crash=100)


@dataclass(frozen=True)
class Context:
    sizes: Sizes
    repeat: int
    library_only: bool
    timeout: float


class BenchmarkError(Exception):
    """A contestant produced wrong results, so its timing means nothing."""


def _peer(name: str) -> ModuleType | None:
    """Import a benchmark-only peer, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _library_version() -> str:
    try:
        return str(event_pipeline.__version__)
    except Exception:
        return "(version unknown)"


def _version(name: str) -> str:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return NOT_INSTALLED


# --------------------------------------------------------------------------------------------
# Rows: one contestant of one workload
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table: a contestant's timings over the repeats, and how it compares."""

    workload: str
    contestant: str
    #: Tasks (or calls) per timed run; 0 when a per-task figure makes no sense.
    tasks: int
    library: bool = False
    #: Seconds of each repeat, in repeat order.
    seconds: list[float] = field(default_factory=list)
    #: Per-repeat comparison with the workload's reference: a ratio, or a difference in µs.
    compared: list[float] = field(default_factory=list)
    compare_kind: str = "x"  # "x": ratio; "us": microseconds per call over the reference
    target: float | None = None
    note: str = ""
    error: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "ERROR" if self.library else "-"
        if self.target is None or not self.compared:
            return "-"
        return "PASS" if statistics.median(self.compared) <= self.target else "FAIL"

    def cells(self) -> list[str]:
        if self.error is not None:
            return [
                self.workload,
                self.contestant,
                "-",
                "-",
                "-",
                "-",
                self._target(),
                self.status,
                self.error,
            ]
        median = self.median
        wall = "-" if median is None else _seconds_text(median)
        spread = (
            f"{_seconds_text(min(self.seconds))} - {_seconds_text(max(self.seconds))}"
            if len(self.seconds) > 1
            else "-"
        )
        per_task = "-" if median is None or not self.tasks else f"{median / self.tasks * 1e6:.2f}"
        return [
            self.workload,
            self.contestant,
            wall,
            spread,
            per_task,
            self._compared(),
            self._target(),
            self.status,
            self.note,
        ]

    def _compared(self) -> str:
        if not self.compared:
            return "-"
        value = statistics.median(self.compared)
        if self.compare_kind == "us":
            return f"{value:+.2f} µs"
        return f"{value:.2f}x" if value >= 0.095 else f"{value:.3f}x"

    def _target(self) -> str:
        if self.target is None:
            return "-"
        return f"≤ {self.target:.2f} µs" if self.compare_kind == "us" else f"≤ {self.target:g}x"


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.1f} ms"


@dataclass
class Contestant:
    """A row and how to run it: ``call`` returns the output that ``check`` judges."""

    row: Row
    call: Callable[[], Any]
    check: Callable[[Any], None]
    prepare: Callable[[], None] | None = None


def _run_once(contestant: Contestant) -> float:
    """Seconds of one timed call, after a garbage collection; the output is checked after."""
    if contestant.prepare is not None:
        contestant.prepare()
    gc.collect()
    t0 = time.perf_counter()
    out = contestant.call()
    elapsed = time.perf_counter() - t0
    contestant.check(out)
    return elapsed


def _measure(ctx: Context, contestants: list[Contestant], rotate: bool = True) -> None:
    """Time every contestant once per repeat; the order rotates so none is always first."""
    live = [c for c in contestants if c.row.error is None]
    for repeat in range(ctx.repeat):
        shift = repeat % len(live) if rotate and live else 0
        for contestant in live[shift:] + live[:shift]:
            if contestant.row.error is not None:
                continue
            try:
                contestant.row.seconds.append(_run_once(contestant))
            except Exception as exc:
                contestant.row.error = f"{type(exc).__name__}: {exc}"[:300]


def _compare(rows: list[Row], reference: list[float], kind: str = "x") -> None:
    """Per-repeat ratio (or µs difference) of each row against ``reference``."""
    for row in rows:
        if row.error is not None or len(row.seconds) != len(reference):
            continue
        row.compare_kind = kind
        if kind == "x":
            row.compared = [s / r for s, r in zip(row.seconds, reference, strict=True)]
        else:
            row.compared = [
                (s - r) / row.tasks * 1e6 for s, r in zip(row.seconds, reference, strict=True)
            ]


def _warm(contestant: Contestant, warm_up: Callable[[], Any] | None = None) -> None:
    """One untimed warm-up call (checked when it is the real call); an error ends the row."""
    try:
        if warm_up is None:
            contestant.check(contestant.call())
        else:
            warm_up()
    except Exception as exc:
        contestant.row.error = f"warm-up: {type(exc).__name__}: {exc}"[:300]


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _check_run(expected: list[Any], what: str, attempts: int = 1) -> Callable[[Any], None]:
    """A check that an EventRun succeeded with ``expected`` contents in order."""

    def check(run: Any) -> None:
        if not isinstance(run, EventRun):
            raise BenchmarkError(f"{what}: expected an EventRun, got {type(run).__name__}")
        results = run.results
        if len(results) != len(expected):
            raise BenchmarkError(f"{what}: {len(results)} results, expected {len(expected)}")
        if not run.success:
            failed = next((r for r in results if not r.success), None)
            raise BenchmarkError(f"{what}: run failed, first failed result {failed!r}")
        if [r.content for r in results] != expected:
            raise BenchmarkError(f"{what}: results out of order or wrong contents")
        if any(r.attempts != attempts for r in results):
            raise BenchmarkError(f"{what}: a result does not have attempts == {attempts}")

    return check


def _check_list(expected: list[Any], what: str) -> Callable[[Any], None]:
    def check(out: Any) -> None:
        out = list(out)
        if len(out) != len(expected):
            raise BenchmarkError(f"{what}: {len(out)} results, expected {len(expected)}")
        if out != expected:
            raise BenchmarkError(f"{what}: results out of order or wrong")

    return check


# --------------------------------------------------------------------------------------------
# Pools
# --------------------------------------------------------------------------------------------


def _spawn_executor(stack: contextlib.ExitStack) -> ProcessPoolExecutor:
    pool = stack.enter_context(ProcessPoolExecutor(E.PROCESSES, mp_context=SPAWN))
    # Workers of a spawn pool start on demand: two concurrent naps start both.
    list(pool.map(E.nap, [0.05] * E.PROCESSES))
    return pool


def _warm_runner_processes(runner: Runner) -> None:
    """Start both workers of the runner's two-process pool (they start on demand)."""
    runner.map(E.NapProcess, [0.05] * (2 * E.PROCESSES))


# --------------------------------------------------------------------------------------------
# 1. Trivial calls on four threads
# --------------------------------------------------------------------------------------------


def w_threads(ctx: Context, stack: contextlib.ExitStack) -> list[Row]:
    n = ctx.sizes.threads
    title = f"1. {n:,} trivial calls, 4 threads"
    expected = [(True, i) for i in range(n)]
    warm_n = min(n, 1_000)

    runner = stack.enter_context(Runner())
    lib = Contestant(
        Row(title, "event_pipeline `Runner.map`, TPE(4) event", n, library=True, target=10.0),
        lambda: runner.map(E.TrivialThread, range(n)),
        _check_run(list(range(n)), "threads: Runner.map"),
    )
    _warm(
        lib,
        lambda: _check_run(list(range(warm_n)), "threads warm-up")(
            runner.map(E.TrivialThread, range(warm_n))
        ),
    )
    contestants = [lib]

    if not ctx.library_only:
        thread_pool = stack.enter_context(ThreadPool(E.THREADS))
        reference = Contestant(
            Row(title, "`multiprocessing.pool.ThreadPool(4).map` (reference)", n),
            lambda: thread_pool.map(E.trivial, range(n)),
            _check_list(expected, "threads: ThreadPool.map"),
        )
        _warm(reference, lambda: thread_pool.map(E.trivial, range(warm_n)))
        executor = stack.enter_context(ThreadPoolExecutor(E.THREADS))
        raw = Contestant(
            Row(title, "raw `ThreadPoolExecutor(4).map`", n),
            lambda: list(executor.map(E.trivial, range(n))),
            _check_list(expected, "threads: TPE.map"),
        )
        _warm(raw, lambda: list(executor.map(E.trivial, range(warm_n))))
        contestants += [reference, raw]

        joblib = _peer("joblib")
        joblib_row = Row(title, 'joblib `Parallel(n_jobs=4, prefer="threads")`', n)
        if joblib is None:
            joblib_row.error = NOT_INSTALLED
            contestants.append(Contestant(joblib_row, list, list))
        else:
            parallel = stack.enter_context(joblib.Parallel(n_jobs=E.THREADS, prefer="threads"))
            delayed = joblib.delayed
            jl = Contestant(
                joblib_row,
                lambda: parallel(delayed(E.trivial)(i) for i in range(n)),
                _check_list(expected, "threads: joblib"),
            )
            _warm(jl, lambda: parallel(delayed(E.trivial)(i) for i in range(warm_n)))
            contestants.append(jl)

    _measure(ctx, contestants)
    rows = [c.row for c in contestants]
    if not ctx.library_only and contestants[1].row.error is None:
        _compare(rows, contestants[1].row.seconds)
    return rows


# --------------------------------------------------------------------------------------------
# 2. Trivial calls on two spawned processes
# --------------------------------------------------------------------------------------------


def w_processes(ctx: Context, stack: contextlib.ExitStack) -> list[Row]:
    n = ctx.sizes.processes
    title = f"2. {n:,} trivial calls, 2 processes"
    expected = [(True, i) for i in range(n)]
    warm_n = min(n, 2_000)
    # multiprocessing.Pool.map's own default: about four chunks per worker.
    good_chunk = max(1, math.ceil(n / (4 * E.PROCESSES)))

    runner = stack.enter_context(Runner())
    lib = Contestant(
        Row(
            title, "event_pipeline `Runner.map`, PPE(2) event (spawn)", n, library=True, target=1.0
        ),
        lambda: runner.map(E.TrivialProcess, range(n)),
        _check_run(list(range(n)), "processes: Runner.map"),
    )

    def warm_lib() -> None:
        _warm_runner_processes(runner)
        _check_run(list(range(warm_n)), "processes warm-up")(
            runner.map(E.TrivialProcess, range(warm_n))
        )

    _warm(lib, warm_lib)
    contestants = [lib]
    reference: Contestant | None = None

    if not ctx.library_only:
        joblib = _peer("joblib")
        joblib_row = Row(title, "joblib `Parallel(n_jobs=2)` (loky, auto batching) (reference)", n)
        if joblib is None:
            joblib_row.error = NOT_INSTALLED
            reference = Contestant(joblib_row, list, list)
        else:
            parallel = stack.enter_context(joblib.Parallel(n_jobs=E.PROCESSES))
            delayed = joblib.delayed

            def warm_joblib() -> None:
                parallel(delayed(E.nap)(0.05) for _ in range(E.PROCESSES))
                parallel(delayed(E.trivial)(i) for i in range(warm_n))

            reference = Contestant(
                joblib_row,
                lambda: parallel(delayed(E.trivial)(i) for i in range(n)),
                _check_list(expected, "processes: joblib"),
            )
            _warm(reference, warm_joblib)
        contestants.append(reference)

        mp_pool = stack.enter_context(SPAWN.Pool(E.PROCESSES))
        mp = Contestant(
            Row(title, '`multiprocessing.get_context("spawn").Pool(2).map`', n),
            lambda: mp_pool.map(E.trivial, range(n)),
            _check_list(expected, "processes: Pool.map"),
        )
        _warm(mp, lambda: mp_pool.map(E.trivial, range(warm_n)))
        executor = _spawn_executor(stack)
        raw_1 = Contestant(
            Row(title, "raw `ProcessPoolExecutor(2, spawn).map`, chunksize=1", n),
            lambda: list(executor.map(E.trivial, range(n), chunksize=1)),
            _check_list(expected, "processes: PPE.map chunksize=1"),
        )
        raw_good = Contestant(
            Row(title, f"raw `ProcessPoolExecutor(2, spawn).map`, chunksize={good_chunk:,}", n),
            lambda: list(executor.map(E.trivial, range(n), chunksize=good_chunk)),
            _check_list(expected, f"processes: PPE.map chunksize={good_chunk}"),
        )
        _warm(raw_1, lambda: list(executor.map(E.trivial, range(warm_n), chunksize=1)))
        _warm(raw_good, lambda: list(executor.map(E.trivial, range(warm_n), chunksize=250)))
        contestants += [mp, raw_1, raw_good]

    _measure(ctx, contestants)
    rows = [c.row for c in contestants]
    if reference is not None and reference.row.error is None:
        _compare(rows, reference.row.seconds)
    return rows


# --------------------------------------------------------------------------------------------
# 3. About 1 ms of CPU per call on two processes
# --------------------------------------------------------------------------------------------


def calibrate(target: float = 0.001) -> tuple[int, float]:
    """Loops of ``spin`` that take about ``target`` seconds here; and the measured seconds.

    Calibrated once per run, in the parent, from medians (a shared machine is noisy), then
    corrected until the median call is within 5 % of ``target`` (at most five rounds).
    """

    def median_call(loops: int, calls: int = 15) -> float:
        samples = []
        for _ in range(calls):
            t0 = time.perf_counter()
            E.busy(0, loops)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    loops = 10_000
    while (elapsed := median_call(loops, 5)) < 0.0002:
        loops *= 2
    for _ in range(5):
        loops = max(1, round(loops * target / elapsed))
        elapsed = median_call(loops)
        if abs(elapsed - target) <= 0.05 * target:
            break
    return loops, elapsed


def w_cpu(ctx: Context, stack: contextlib.ExitStack) -> list[Row]:
    n = ctx.sizes.cpu
    loops, per_call = calibrate()
    title = f"3. {n:,} x ~1 ms CPU, 2 processes"
    expected = [(True, i) for i in range(n)]
    warm_n = min(n, 100)
    ideal = n * per_call / E.PROCESSES

    runner = stack.enter_context(Runner())
    lib = Contestant(
        Row(
            title, "event_pipeline `Runner.map`, PPE(2) event (spawn)", n, library=True, target=1.05
        ),
        lambda: runner.map(E.BusyProcess, range(n), itertools.repeat(loops, n)),
        _check_run(list(range(n)), "cpu: Runner.map"),
    )

    def warm_lib() -> None:
        _warm_runner_processes(runner)
        runner.map(E.BusyProcess, range(warm_n), itertools.repeat(loops, warm_n))

    _warm(lib, warm_lib)
    contestants = [lib]
    raws: list[Contestant] = []
    if not ctx.library_only:
        executor = _spawn_executor(stack)
        for chunk in (1, 20, 50, 100):
            raw = Contestant(
                Row(title, f"raw `ProcessPoolExecutor(2, spawn).map`, chunksize={chunk}", n),
                _busy_map(executor, loops, n, chunk),
                _check_list(expected, f"cpu: PPE.map chunksize={chunk}"),
            )
            raws.append(raw)
        _warm(raws[0], lambda: list(executor.map(E.busy, range(warm_n), [loops] * warm_n)))
        contestants += raws

    _measure(ctx, contestants)
    rows = [c.row for c in contestants]
    ideal_row = Row(title, f"ideal: {n:,} x {per_call * 1e3:.3f} ms / 2", n)
    ideal_row.seconds = [ideal] * ctx.repeat
    good = [c.row for c in raws if c.row.error is None and len(c.row.seconds) == ctx.repeat]
    if good:
        # The best raw chunksize is the one with the lowest median: each repeat is compared
        # with that chunksize's run of the same repeat. (The fastest of four chunksizes in
        # each repeat would pick whichever was luckiest in it, a reference biased low by
        # about the noise of one run.)
        best = min(good, key=lambda row: statistics.median(row.seconds))
        _compare([*rows, ideal_row], best.seconds)
        best.contestant += " (reference)"
        for row in good:
            row.note = "reference = the raw chunksize with the lowest median"
    for row in rows:
        if row.seconds and row.error is None:
            ratio = statistics.median(row.seconds) / ideal
            row.note = f"{ratio:.2f}x ideal" + (f"; {row.note}" if row.note else "")
    ideal_row.note = f"{loops:,} loops calibrated to {per_call * 1e3:.3f} ms in the parent"
    return [*rows, ideal_row]


def _busy_map(
    executor: ProcessPoolExecutor, loops: int, n: int, chunk: int
) -> Callable[[], list[Any]]:
    """``list(executor.map(busy, ...))`` at one chunksize (a closure per chunksize)."""

    def call() -> list[Any]:
        return list(executor.map(E.busy, range(n), itertools.repeat(loops, n), chunksize=chunk))

    return call


# --------------------------------------------------------------------------------------------
# 4. One inline call: MyEvent.run vs event_pipeline.run vs runner.run
# --------------------------------------------------------------------------------------------


def w_inline(ctx: Context, stack: contextlib.ExitStack) -> list[Row]:
    n = ctx.sizes.inline
    title = f"4. {n:,} inline runs (DefaultExecutor)"
    runner = stack.enter_context(Runner())
    my_event = E.MyEvent
    ep = event_pipeline

    # The loops are what a user writes, attribute look-ups included.
    def class_method() -> EventRun:
        run = None
        for x in range(n):
            run = my_event.run(x)
        assert run is not None
        return run

    def module_run() -> EventRun:
        run = None
        for x in range(n):
            run = ep.run(my_event, x)
        assert run is not None
        return run

    def runner_run() -> EventRun:
        run = None
        for x in range(n):
            run = runner.run(my_event, x)
        assert run is not None
        return run

    check = _check_run([n - 1], "inline: last run")
    contestants = [
        Contestant(
            Row(title, "`MyEvent.run(x)`", n, library=True, target=0.3), class_method, check
        ),
        Contestant(
            Row(title, "`event_pipeline.run(MyEvent, x)` (reference)", n, library=True),
            module_run,
            check,
        ),
        Contestant(Row(title, "`runner.run(MyEvent, x)`", n, library=True), runner_run, check),
    ]
    for contestant, one in zip(
        contestants,
        (lambda: my_event.run(3), lambda: ep.run(my_event, 3), lambda: runner.run(my_event, 3)),
        strict=True,
    ):
        _check_run([3], f"inline: {contestant.row.contestant}")(one())
        _warm(contestant)
    _measure(ctx, contestants)
    rows = [c.row for c in contestants]
    if rows[1].error is None:
        _compare(rows, rows[1].seconds, kind="us")
    for row in rows:
        row.note = "ratio column: µs per call over `event_pipeline.run`"
    return rows


# --------------------------------------------------------------------------------------------
# 5. Retries: every task fails twice, then succeeds
# --------------------------------------------------------------------------------------------


def w_retries(ctx: Context, stack: contextlib.ExitStack) -> list[Row]:
    n = ctx.sizes.retries
    attempts = E.RETRY_ATTEMPTS
    title = f"5. {n} tasks x {attempts} attempts, 4 threads, backoff 0.01 s"
    waits = sum(E.RETRY_BACKOFF * 2**k for k in range(attempts - 1))
    # A lower bound: the work of every attempt spread over the threads (backoffs overlap other
    # tasks' work), or one task's own chain of attempts and waits, whichever is longer.
    ideal = max(n * attempts * E.RETRY_WORK / E.THREADS, attempts * E.RETRY_WORK + waits)
    expected = [(True, i) for i in range(n)]

    def check_attempts(table: dict[int, int], what: str) -> None:
        if sorted(table) != list(range(n)) or set(table.values()) != {attempts}:
            raise BenchmarkError(f"{what}: not exactly {attempts} attempts per task")

    runner = stack.enter_context(Runner())

    def check_lib(run: Any) -> None:
        _check_run(list(range(n)), "retries: Runner.map", attempts=attempts)(run)
        check_attempts(E.RUNNER_ATTEMPTS, "retries: Runner.map")

    lib = Contestant(
        Row(
            title,
            "event_pipeline `Runner.map`, `RetryPolicy(3, backoff_factor=0.01)`",
            n,
            library=True,
        ),
        lambda: runner.map(E.FlakyThread, range(n)),
        check_lib,
        prepare=E.reset_attempts,
    )
    _warm(lib, lambda: runner.map(E.FlakyThread, range(4)))
    contestants = [lib]

    if not ctx.library_only:
        tenacity = _peer("tenacity")
        row = Row(
            title,
            "tenacity `@retry(stop_after_attempt(3), wait_exponential(0.01))` in TPE(4)",
            n,
        )
        if tenacity is None:
            row.error = NOT_INSTALLED
            contestants.append(Contestant(row, list, list))
        else:
            flaky = tenacity.retry(
                stop=tenacity.stop_after_attempt(attempts),
                wait=tenacity.wait_exponential(multiplier=E.RETRY_BACKOFF, max=1.0),
                reraise=True,
            )(E.flaky)
            executor = stack.enter_context(ThreadPoolExecutor(E.THREADS))

            def check_peer(out: Any) -> None:
                _check_list(expected, "retries: tenacity")(out)
                check_attempts(E.PEER_ATTEMPTS, "retries: tenacity")

            peer = Contestant(
                row,
                lambda: list(executor.map(flaky, range(n))),
                check_peer,
                prepare=E.reset_attempts,
            )
            _warm(peer, lambda: list(executor.map(flaky, range(4))))
            contestants.append(peer)

    E.reset_attempts()
    _measure(ctx, contestants)
    rows = [c.row for c in contestants]
    ideal_row = Row(
        title,
        f"ideal: max({n} x {attempts} x {E.RETRY_WORK * 1e3:g} ms / 4, "
        f"{attempts} x {E.RETRY_WORK * 1e3:g} + 10 + 20 ms)",
        n,
    )
    ideal_row.seconds = [ideal] * ctx.repeat
    rows.append(ideal_row)
    _compare(rows, ideal_row.seconds)
    for row in rows[:-1]:
        row.note = "ratio = wall / ideal; each attempt sleeps 5 ms, then raises twice"
    return rows


# --------------------------------------------------------------------------------------------
# 6. Crash recovery: one task of 1,000 kills its worker
# --------------------------------------------------------------------------------------------


def w_crash(ctx: Context, stack: contextlib.ExitStack) -> list[Row]:
    n = ctx.sizes.crash
    crash_at = n // 2
    title = f"6. {n:,} trivial tasks, 2 processes, one kills its worker"
    runner = stack.enter_context(Runner())
    causes: list[str] = []

    def check_crash(run: Any) -> None:
        if not isinstance(run, EventRun) or len(run.results) != n:
            raise BenchmarkError(f"crash: expected an EventRun of {n} results")
        failed = [i for i, r in enumerate(run.results) if not r.success]
        if failed != [crash_at]:
            raise BenchmarkError(f"crash: failed indices {failed[:10]}, expected [{crash_at}]")
        culprit = run.results[crash_at]
        causes.append(f"{type(culprit.exception).__name__}, attempts={culprit.attempts}")
        good = [r for i, r in enumerate(run.results) if i != crash_at]
        if [r.content for r in good] != [i for i in range(n) if i != crash_at]:
            raise BenchmarkError("crash: innocent results out of order or wrong")
        if any(r.attempts != 1 for r in good):
            raise BenchmarkError("crash: an innocent task was charged an attempt")

    def started() -> None:
        # A crash replaces the pool, whose workers start on demand: start them untimed, so
        # neither row pays for starting a pool (the crash row still pays for its own
        # one-worker pool that re-runs the suspects).
        _warm_runner_processes(runner)

    clean = Contestant(
        Row(title, "event_pipeline `Runner.map`, no crash (reference)", n, library=True),
        lambda: runner.map(E.CrashProcess, range(n), itertools.repeat(-1, n)),
        _check_run(list(range(n)), "crash: no crash"),
        started,
    )
    crash = Contestant(
        Row(
            title,
            f"event_pipeline `Runner.map`, task {crash_at} calls `os._exit(1)`",
            n,
            library=True,
        ),
        lambda: runner.map(E.CrashProcess, range(n), itertools.repeat(crash_at, n)),
        check_crash,
        started,
    )

    def warm() -> None:
        _warm_runner_processes(runner)
        clean.check(clean.call())

    _warm(clean, warm)
    _measure(ctx, [clean, crash], rotate=False)
    _compare([clean.row, crash.row], clean.row.seconds)
    if clean.row.seconds and crash.row.seconds and crash.row.error is None:
        extra = statistics.median(
            c - r for c, r in zip(crash.row.seconds, clean.row.seconds, strict=True)
        )
        crash.row.note = (
            f"+{extra * 1e3:.0f} ms; {n - 1} innocents succeed with attempts=1, the culprit "
            f"fails ({'; '.join(sorted(set(causes)))}); first crash "
            f"{_seconds_text(crash.row.seconds[0])}"
        )
    return [clean.row, crash.row]


WORKLOADS: dict[str, Callable[[Context, contextlib.ExitStack], list[Row]]] = {
    "threads": w_threads,
    "processes": w_processes,
    "cpu": w_cpu,
    "inline": w_inline,
    "retries": w_retries,
    "crash": w_crash,
}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

HEADER = [
    "workload",
    "contestant",
    "wall (median)",
    "spread",
    "µs/task",
    "ratio",
    "target",
    "status",
    "note",
]


def _git_revision() -> str:
    if SRC != REPO / "src":
        return "not this repository's src (--src)"
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (src/ has uncommitted changes)" if dirty else head


def _load() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def render(rows: list[Row], header: list[tuple[str, str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = ["# event_pipeline against its peers", ""]
    out += [f"- **{key}:** {value}" for key, value in header]
    out += [
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    out += ["| " + " | ".join(cell(c) for c in row.cells()) + " |" for row in rows]
    out += [
        "",
        "Ratios are per repeat against the row marked (reference) — for workload 3 the raw "
        "chunksize with the lowest median, for 5 the ideal — and the median of those is shown; "
        "for workload 4 the "
        "ratio column is µs per call over `event_pipeline.run`. Pool start-up is excluded: every "
        "pool is started and given one warm-up call before timing, the same for each "
        "contestant. Status compares the library's row with issue 14's target.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_only(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(unknown) or repr(text)} "
            f"(expected one of {', '.join(WORKLOADS)})"
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/peers.py",
        description="Benchmark event_pipeline against joblib, multiprocessing, "
        "concurrent.futures and tenacity in one run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes and one repeat, for a smoke test (< 20 s)"
    )
    parser.add_argument(
        "--markdown", type=Path, metavar="FILE", help="also write the Markdown report to FILE"
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        metavar="N",
        help="repeats per workload; the median is reported (default 3, quick 1)",
    )
    parser.add_argument(
        "--only",
        type=_parse_only,
        metavar="NAME[,NAME]",
        help=f"run only these workloads: {', '.join(WORKLOADS)}",
    )
    parser.add_argument(
        "--library-only",
        action="store_true",
        help="skip the peers (for profiling the library alone)",
    )
    parser.add_argument(
        "--src",
        type=Path,
        metavar="DIR",
        help="measure the event_pipeline package under DIR (e.g. an exported "
        "older revision's src) instead of this repository's src",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="dump every thread and exit if one workload takes longer (default 300)",
    )
    return parser.parse_args(argv)


def run_workloads(names: list[str], ctx: Context) -> Iterator[Row]:
    for name in names:
        print(f"[{name}] ...", end=" ", flush=True, file=sys.stderr)
        started = time.perf_counter()
        # A hang (in the library or a peer) must not hang the instrument.
        faulthandler.dump_traceback_later(ctx.timeout, exit=True)
        try:
            with contextlib.ExitStack() as stack:
                rows = WORKLOADS[name](ctx, stack)
        except Exception as exc:
            rows = [
                Row(
                    name,
                    "event_pipeline",
                    0,
                    library=True,
                    error=f"{type(exc).__name__}: {exc}"[:300],
                )
            ]
        finally:
            faulthandler.cancel_dump_traceback_later()
        print(f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        yield from rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    ctx = Context(
        sizes=QUICK if args.quick else FULL,
        repeat=repeat,
        library_only=args.library_only,
        timeout=args.timeout,
    )
    names: list[str] = args.only or list(WORKLOADS)
    argv_text = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/peers.py", *argv_text])
    started = datetime.datetime.now(datetime.timezone.utc)
    load_start = _load()
    revision = _git_revision()
    t0 = time.perf_counter()
    rows = list(run_workloads(names, ctx))
    elapsed = time.perf_counter() - t0
    revision_end = _git_revision()
    if revision_end != revision:
        revision = f"{revision} at start, {revision_end} at end (CHANGED DURING THE RUN)"

    header = [
        ("Command", f"`{command}`" + (" (QUICK: small sizes, not a record)" if args.quick else "")),
        ("Date", started.strftime("%Y-%m-%d %H:%M UTC")),
        ("Machine", f"{cpu_model()}; {cores()}; {platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        (
            "Library",
            f"event_pipeline {_library_version()} from "
            f"{Path(event_pipeline.__file__).resolve().parent}, git {revision}",
        ),
        ("Peers", f"joblib {_version('joblib')}, tenacity {_version('tenacity')}"),
        ("Repeats", f"{repeat}; figures are medians, spread is min - max"),
        (
            "Pools",
            "warm: started and given one warm-up call before timing, for every "
            "contestant; start-up is not measured",
        ),
        ("Load average", f"{load_start} (1, 5, 15 min) at start; {_load()} at end"),
        ("Wall time", f"{elapsed:.0f} s"),
    ]
    text = render(rows, header)
    print(text)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text, encoding="utf-8")
        print(f"wrote {args.markdown}")
    return 1 if any(row.status == "ERROR" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
