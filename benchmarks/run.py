#!/usr/bin/env python
"""Measure event_pipeline's runner against raw ``concurrent.futures`` in the same process.

Usage, from the repository root::

    python benchmarks/run.py                 # full run: prints the table, writes docs/benchmarks.md
    python benchmarks/run.py --quick         # smoke run with small sizes (< 30 s), writes nothing
    python benchmarks/run.py --only inline,thread-map --repeat 5
    python benchmarks/run.py --quick --output /tmp/bench.md
    python benchmarks/run.py --profile thread-map   # cProfile of one figure, event_pipeline only

Every figure is the median of ``--repeat`` runs (default 3); ratios are paired, i.e. the runner
and the raw executor are timed one after the other inside each repeat, and the median of the
per-repeat ratios is reported. Pools are created and warmed before timing on both sides.
``docs/benchmarks.md`` is only (re)written by a full run of every figure with at least three
repeats, or wherever ``--output`` says. Standard library only.

Every figure runs on runners without hooks or progress (the defaults), except the ``hooks``
figure, which measures exactly what one no-op hook and a ``progress=`` callable add.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime
import faulthandler
import functools
import gc
import json
import multiprocessing
import os
import platform
import pstats
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SRC = REPO / "src"
DEFAULT_OUTPUT = REPO / "docs" / "benchmarks.md"

# ``python benchmarks/run.py`` already has this directory on sys.path; spawned workers and the
# streaming child inherit the path. The repository's src goes first so that the working tree
# is what gets measured, never a stale installed copy.
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
if (SRC / "event_pipeline" / "__init__.py").is_file() and str(SRC) not in sys.path:
    sys.path.insert(1, str(SRC))

from _machine import cores, cpu_model  # noqa: E402

try:
    import _events

    import event_pipeline
    from event_pipeline import EventBase, Runner
except ImportError as exc:  # pragma: no cover - only before the library exists
    raise SystemExit(
        f"run.py: cannot import event_pipeline ({exc}); run `pip install -e .` "
        "from the repository root"
    ) from exc

MIB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Sizes, figures, context
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does."""

    inline_calls: int = 200_000
    thread_map: int = 100_000
    process_map: int = 20_000
    repeated_runs: int = 100
    streaming: int = 1_000_000
    streaming_raw: int = 100_000
    retry_tasks: int = 400
    policy_map: int = 100_000
    one_task_runs: int = 5_000
    result_memory: int = 100_000
    flow_runs: int = 20_000
    flow_stream: int = 1_000_000
    flow_map: int = 10_000
    hook_runs: int = 200_000
    hook_map: int = 100_000
    async_tasks: int = 10_000
    timeout_map: int = 2_000
    timeout_pairs: int = 60


FULL = Sizes()
QUICK = Sizes(
    inline_calls=20_000,
    thread_map=10_000,
    process_map=1_000,
    repeated_runs=20,
    streaming=30_000,
    streaming_raw=5_000,
    retry_tasks=100,
    policy_map=10_000,
    one_task_runs=500,
    result_memory=10_000,
    flow_runs=1_000,
    flow_stream=5_000,
    flow_map=1_000,
    hook_runs=20_000,
    hook_map=10_000,
    async_tasks=2_000,
    timeout_map=500,
    timeout_pairs=6,
)


@dataclass
class Figure:
    """One row of the table: the median of several repeats, and how it compares to a target."""

    name: str
    title: str
    unit: str
    samples: list[float] = field(default_factory=list)
    target: float | None = None
    digits: int = 2
    detail: str = ""
    error: str | None = None

    @property
    def value(self) -> float | None:
        return statistics.median(self.samples) if self.samples else None

    @property
    def status(self) -> str:
        if self.error is not None:
            return "ERROR"
        if self.target is None or self.value is None:
            return "-"
        return "PASS" if self.value <= self.target else "FAIL"

    def fmt(self, number: float | None) -> str:
        return "-" if number is None else f"{number:,.{self.digits}f}"

    @property
    def median_text(self) -> str:
        return f"{self.fmt(self.value)} {self.unit}" if self.value is not None else "-"

    @property
    def spread_text(self) -> str:
        if len(self.samples) < 2:
            return "-"
        return f"{self.fmt(min(self.samples))} - {self.fmt(max(self.samples))}"

    @property
    def target_text(self) -> str:
        return "-" if self.target is None else f"<= {self.fmt(self.target)} {self.unit}"


@dataclass(frozen=True)
class Context:
    sizes: Sizes
    repeat: int
    timeout: float
    quick: bool


class BenchmarkError(Exception):
    """A benchmark produced wrong results, so its timing means nothing."""


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _collect() -> None:
    """Start each timed section from the same garbage-collector state."""
    gc.collect()


def _per_call(call: Callable[[int], object], n: int) -> float:
    """Seconds per call of ``call(i)`` over ``range(n)``, after a garbage collection."""
    _collect()
    t0 = time.perf_counter()
    for i in range(n):
        call(i)
    return (time.perf_counter() - t0) / n


def _check_results(run: Any, expected: list[Any], what: str) -> None:
    """Raise BenchmarkError unless ``run`` succeeded with ``expected`` contents in order."""
    results = run.results
    if len(results) != len(expected):
        raise BenchmarkError(f"{what}: {len(results)} results, expected {len(expected)}")
    if not run.success:
        failed = next((r for r in results if not r.success), None)
        raise BenchmarkError(f"{what}: run failed, first failed result {failed!r}")
    if [r.content for r in results] != expected:
        raise BenchmarkError(f"{what}: results out of order or wrong contents")


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def bench_inline(ctx: Context) -> list[Figure]:
    """Runner.run of a trivial inline event, minus a direct call of its ``process``."""
    n = ctx.sizes.inline_calls
    fig = Figure("inline", "inline: Runner.run - direct call", "us/call", target=3.0)
    process = _events.Trivial().process
    event = _events.Trivial
    direct_us: list[float] = []
    runner_us: list[float] = []
    with Runner() as runner:
        run = runner.run
        for x in range(1_000):
            run(event, x)
        for _ in range(ctx.repeat):
            _collect()
            t0 = time.perf_counter()
            for x in range(n):
                process(x)
            t1 = time.perf_counter()
            for x in range(n):
                run(event, x)
            t2 = time.perf_counter()
            direct_us.append((t1 - t0) / n * 1e6)
            runner_us.append((t2 - t1) / n * 1e6)
            fig.samples.append(runner_us[-1] - direct_us[-1])
        _check_results(run(event, 12345), [12345], "inline")
    fig.detail = (
        f"Runner.run {_median(runner_us):.2f} us, direct process() {_median(direct_us):.3f} us; "
        f"{n:,} calls"
    )
    return [fig]


def _timed_map(runner_map: Callable[[], Any], expected: list[Any], what: str) -> float:
    """Seconds one runner map takes, after a garbage collection; its results are checked."""
    _collect()
    t0 = time.perf_counter()
    result = runner_map()
    elapsed = time.perf_counter() - t0
    _check_results(result, expected, what)
    return elapsed


def _time_map_pair(
    ctx: Context,
    fig: Figure,
    raw_map: Callable[[], list[Any]],
    runner_map: Callable[[], Any],
    expected: list[Any],
    what: str,
    raw_s: list[float],
    runner_s: list[float],
) -> None:
    """Time a raw map and the runner's map, alternately, ``ctx.repeat`` times; record ratios."""
    for _ in range(ctx.repeat):
        _collect()
        t0 = time.perf_counter()
        out = raw_map()
        raw_s.append(time.perf_counter() - t0)
        del out
        runner_s.append(_timed_map(runner_map, expected, what))
        fig.samples.append(runner_s[-1] / raw_s[-1])


def bench_thread_map(ctx: Context) -> list[Figure]:
    """Runner.map on four threads over trivial tasks, divided by raw ThreadPoolExecutor.map."""
    n = ctx.sizes.thread_map
    fig = Figure("thread-map", "thread map: Runner.map / raw TPE(4).map", "x", target=0.5, digits=3)
    expected = list(range(n))
    raw_s: list[float] = []
    runner_s: list[float] = []
    with Runner() as runner, ThreadPoolExecutor(_events.THREADS) as pool:
        runner.map(_events.TrivialThread, range(1_000))
        list(pool.map(_events.trivial, range(1_000)))
        _time_map_pair(
            ctx,
            fig,
            lambda: list(pool.map(_events.trivial, range(n))),
            lambda: runner.map(_events.TrivialThread, range(n)),
            expected,
            "thread map",
            raw_s,
            runner_s,
        )
    fig.detail = (
        f"runner {_median(runner_s):.3f} s ({_median(runner_s) / n * 1e6:.2f} us/task), "
        f"raw {_median(raw_s):.3f} s ({_median(raw_s) / n * 1e6:.2f} us/task); {n:,} tasks"
    )
    return [fig]


def _spawn_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(_events.PROCESSES, mp_context=multiprocessing.get_context("spawn"))


def bench_process_map(ctx: Context) -> list[Figure]:
    """Runner.map on two spawned processes, divided by raw ProcessPoolExecutor.map(chunksize=1)."""
    n = ctx.sizes.process_map
    fig = Figure(
        "process-map", "process map: Runner.map / raw PPE(2).map", "x", target=0.3, digits=3
    )
    expected = list(range(n))
    raw_s: list[float] = []
    runner_s: list[float] = []
    with Runner() as runner, _spawn_pool() as pool:
        # Pools spawn workers on demand: warm until both pools have all their workers, so no
        # worker start-up (an interpreter import on a 2-core machine) lands in a timed section.
        for _ in range(10):
            runner.map(_events.TrivialProcess, range(200))
            list(pool.map(_events.trivial, range(200), chunksize=1))
            if len(multiprocessing.active_children()) >= 2 * _events.PROCESSES:
                break
        _time_map_pair(
            ctx,
            fig,
            lambda: list(pool.map(_events.trivial, range(n), chunksize=1)),
            lambda: runner.map(_events.TrivialProcess, range(n)),
            expected,
            "process map",
            raw_s,
            runner_s,
        )
    fig.detail = (
        f"runner {_median(runner_s):.3f} s ({_median(runner_s) / n * 1e6:.1f} us/task), "
        f"raw {_median(raw_s):.3f} s ({_median(raw_s) / n * 1e6:.1f} us/task); {n:,} tasks"
    )
    return [fig]


def bench_repeated_runs(ctx: Context) -> list[Figure]:
    """Runner.run of a process-pool event, many times after the first (which creates the pool)."""
    n = ctx.sizes.repeated_runs
    fig = Figure(
        "repeated-runs", "repeated runs: Runner.run on PPE(2)", "ms/run", target=1.0, digits=3
    )
    raw_ms: list[float] = []
    with Runner() as runner, _spawn_pool() as pool:
        first_t0 = time.perf_counter()
        runner.run(_events.TrivialProcess, 0)
        first_ms = (time.perf_counter() - first_t0) * 1e3
        pool.submit(_events.trivial, 0).result()
        for _ in range(ctx.repeat):
            fig.samples.append(
                _per_call(functools.partial(runner.run, _events.TrivialProcess), n) * 1e3
            )
            raw_ms.append(_per_call(lambda i: pool.submit(_events.trivial, i).result(), n) * 1e3)
        _check_results(runner.run(_events.TrivialProcess, 77), [77], "repeated runs")
    fig.detail = (
        f"raw submit().result() {_median(raw_ms):.3f} ms; first run (creates the pool) "
        f"{first_ms:.0f} ms; {n} runs"
    )
    return [fig]


def _run_child(ctx: Context, kind: str, n: int) -> dict[str, Any]:
    """Run this script as ``--child KIND`` in a fresh interpreter; return its JSON report."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--n", str(n)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=ctx.timeout, check=False)
    if proc.returncode != 0:
        raise BenchmarkError(
            f"child {kind} exited with {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        )
    report: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


def bench_streaming(ctx: Context) -> list[Figure]:
    """Peak-RSS growth of Runner.imap over a generator of many inputs, in a fresh process."""
    n = ctx.sizes.streaming
    n_raw = ctx.sizes.streaming_raw
    fig = Figure("streaming", f"streaming: Runner.imap, {n:,} inputs", "MiB", target=20.0)
    raw = Figure("streaming", f"  raw TPE(4).map, {n_raw:,} inputs", "MiB", digits=1)
    seconds: list[float] = []
    sources: set[str] = set()
    for _ in range(ctx.repeat):
        report = _run_child(ctx, "streaming", n)
        fig.samples.append(report["growth_kib"] / 1024)
        seconds.append(report["seconds"])
        sources.add(report["source"])
    for _ in range(ctx.repeat):
        report = _run_child(ctx, "streaming-raw", n_raw)
        raw.samples.append(report["growth_kib"] / 1024)
    scale = n / n_raw
    fig.detail = (
        f"peak RSS growth ({'/'.join(sorted(sources))}), fresh process; "
        f"imap took {_median(seconds):.1f} s"
    )
    assert raw.value is not None
    raw.detail = (
        f"EXTRAPOLATED x{scale:g} to {n:,} inputs: ~{raw.value * scale:,.0f} MiB "
        "(Executor.map submits every input up front)"
    )
    return [fig, raw]


def _vm_hwm_kib() -> int | None:
    """The peak resident set size of this process's address space, in KiB (Linux only)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _child_streaming(n: int, kind: str) -> None:
    """Body of ``--child streaming[-raw]|flow-stream``: print one JSON line with the peak-RSS
    growth."""
    count = 0
    wrong = 0
    inputs = (i for i in range(n))
    if kind == "flow-stream":
        flow = _events.THREAD_FLOW
        with Runner() as runner:
            for _ in runner.imap(flow, range(100)):
                pass
            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_before = _vm_hwm_kib()
            t0 = time.perf_counter()
            for flow_run in runner.imap(flow, inputs):
                wrong += not flow_run.success or flow_run.output != count + 3
                count += 1
            seconds = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    elif kind == "streaming-raw":
        with ThreadPoolExecutor(_events.THREADS) as pool:
            list(pool.map(_events.trivial, range(100)))
            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_before = _vm_hwm_kib()
            t0 = time.perf_counter()
            for ok, value in pool.map(_events.trivial, inputs):
                wrong += not ok or value != count
                count += 1
            seconds = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    else:
        with Runner() as runner:
            for _ in runner.imap(_events.TrivialThread, range(100)):
                pass
            gc.collect()
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            peak_before = _vm_hwm_kib()
            t0 = time.perf_counter()
            for result in runner.imap(_events.TrivialThread, inputs):
                wrong += not result.success or result.content != count
                count += 1
            seconds = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_after = _vm_hwm_kib()
    if count != n or wrong:
        raise SystemExit(f"{kind} child: {count} results of {n}, {wrong} wrong or out of order")
    # ru_maxrss is in KiB on Linux (bytes on macOS).
    scale = 1024 if sys.platform == "darwin" else 1
    report: dict[str, Any] = {
        "maxrss_before_kib": before / scale,
        "maxrss_after_kib": after / scale,
        "maxrss_growth_kib": (after - before) / scale,
        "seconds": seconds,
        "count": count,
    }
    if peak_before is not None and peak_after is not None:
        # Linux carries ru_maxrss over fork and exec: a child started by a big parent begins
        # with the parent's peak, which can hide the child's own growth. VmHWM is the peak of
        # this process's own address space, so it is the figure when it is available.
        report["vmhwm_before_kib"] = peak_before
        report["vmhwm_after_kib"] = peak_after
        report["growth_kib"] = peak_after - peak_before
        report["source"] = "VmHWM"
    else:
        report["growth_kib"] = report["maxrss_growth_kib"]
        report["source"] = "ru_maxrss"
    print(json.dumps(report))


def bench_retries(ctx: Context) -> list[Figure]:
    """Wall time of a map where 30 % of the tasks fail once, divided by the ideal schedule."""
    n = ctx.sizes.retry_tasks
    fig = Figure(
        "retries", f"retries: {n} x 5 ms, 30 % fail once / ideal", "x", target=1.2, digits=3
    )
    failing = sum(1 for i in range(n) if _events.fails_first_attempt(i))
    ideal = (n + failing) * _events.WORK_SECONDS / _events.THREADS + _events.BACKOFF_SECONDS
    wall_s: list[float] = []
    with Runner() as runner:
        # Indices 3..6 never fail: this only creates the pool.
        runner.map(_events.FlakyThread, range(3, 7))
        for _ in range(ctx.repeat):
            _events.reset_attempts()
            _collect()
            t0 = time.perf_counter()
            result = runner.map(_events.FlakyThread, range(n))
            wall_s.append(time.perf_counter() - t0)
            _check_results(result, list(range(n)), "retries")
            attempts = [r.attempts for r in result.results]
            expected = [2 if _events.fails_first_attempt(i) else 1 for i in range(n)]
            if attempts != expected:
                raise BenchmarkError("retries: EventResult.attempts differ from the schedule")
            if sum(_events.ATTEMPTS.values()) != n + failing:
                raise BenchmarkError("retries: process() was not called once per attempt")
            fig.samples.append(wall_s[-1] / ideal)
    fig.detail = (
        f"wall {_median(wall_s) * 1e3:.0f} ms, ideal {ideal * 1e3:.0f} ms "
        f"= ({n}+{failing}) x 5 ms / {_events.THREADS} + 50 ms"
    )
    return [fig]


def bench_policy_overhead(ctx: Context) -> list[Figure]:
    """Per-task cost of a retry policy that is configured but never triggers (thread map)."""
    n = ctx.sizes.policy_map
    fig = Figure("policy-overhead", "idle retry policy: extra per task", "us/task")
    expected = list(range(n))
    without_us: list[float] = []
    with_us: list[float] = []
    with Runner() as runner:
        runner.map(_events.TrivialThread, range(1_000))
        runner.map(_events.TrivialThreadWithPolicy, range(1_000))
        for _ in range(ctx.repeat):
            without = _timed_map(
                lambda: runner.map(_events.TrivialThread, range(n)),
                expected,
                "policy overhead (without)",
            )
            with_policy = _timed_map(
                lambda: runner.map(_events.TrivialThreadWithPolicy, range(n)),
                expected,
                "policy overhead (with)",
            )
            without_us.append(without / n * 1e6)
            with_us.append(with_policy / n * 1e6)
            fig.samples.append(with_us[-1] - without_us[-1])
    fig.detail = (
        f"thread map of {n:,}: with RetryPolicy() {_median(with_us):.2f} us/task, "
        f"without {_median(without_us):.2f} us/task"
    )
    return [fig]


def bench_one_task_runs(ctx: Context) -> list[Figure]:
    """Runner.run of one task: DefaultExecutor (inline) versus a four-thread pool."""
    n = ctx.sizes.one_task_runs
    inline = Figure("one-task-runs", "one-task run: DefaultExecutor", "us/run")
    threaded = Figure("one-task-runs", "one-task run: ThreadPoolExecutor(4)", "us/run")
    raw_us: list[float] = []
    with Runner() as runner, ThreadPoolExecutor(_events.THREADS) as pool:
        for i in range(200):
            runner.run(_events.Trivial, i)
            runner.run(_events.TrivialThread, i)
            pool.submit(_events.trivial, i).result()
        for _ in range(ctx.repeat):
            inline.samples.append(
                _per_call(functools.partial(runner.run, _events.Trivial), n) * 1e6
            )
            threaded.samples.append(
                _per_call(functools.partial(runner.run, _events.TrivialThread), n) * 1e6
            )
            raw_us.append(_per_call(lambda i: pool.submit(_events.trivial, i).result(), n) * 1e6)
        _check_results(runner.run(_events.TrivialThread, 5), [5], "one-task run")
    inline.detail = f"{n:,} runs, warm runner"
    threaded.detail = f"raw TPE(4) submit().result() {_median(raw_us):.1f} us; {n:,} runs"
    return [inline, threaded]


def bench_result_memory(ctx: Context) -> list[Figure]:
    """Bytes retained per EventResult (tracemalloc) after Runner.map of the trivial inline event."""
    n = ctx.sizes.result_memory
    fig = Figure("result-memory", "memory per EventResult (retained)", "B", digits=0)
    peaks: list[float] = []
    expected = list(range(n))
    with Runner() as runner:
        runner.map(_events.Trivial, range(1_000))
        for _ in range(ctx.repeat):
            _collect()
            tracemalloc.start()
            try:
                before, _ = tracemalloc.get_traced_memory()
                result = runner.map(_events.Trivial, range(n))
                after, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            _check_results(result, expected, "result memory")
            del result
            fig.samples.append((after - before) / n)
            peaks.append((peak - before) / n)
    fig.detail = (
        f"tracemalloc over Runner.map(Trivial, range({n:,})); includes the EventRun's list slot, "
        f"the content int and task id; peak during the map {_median(peaks):.0f} B/result"
    )
    return [fig]


# --------------------------------------------------------------------------------------------
# Flows (SPEC §11.8)
# --------------------------------------------------------------------------------------------


def _check_flow_run(flow_run: Any, expected: Any, steps: int, what: str) -> None:
    """Raise BenchmarkError unless ``flow_run`` succeeded with ``expected`` as its output."""
    if not flow_run.success:
        raise BenchmarkError(f"{what}: flow run failed: {flow_run.summary()}")
    if flow_run.output != expected:
        raise BenchmarkError(f"{what}: output {flow_run.output!r}, expected {expected!r}")
    if len(flow_run.steps) != steps:
        raise BenchmarkError(f"{what}: {len(flow_run.steps)} steps, expected {steps}")


def bench_flow_inline(ctx: Context) -> list[Figure]:
    """Runner.run of a 10-step inline flow, minus calling the ten ``process`` methods directly."""
    n = ctx.sizes.flow_runs
    steps = len(_events.INLINE_STEPS)
    fig = Figure(
        "flow-inline", f"flow of {steps} inline steps: run - direct", "us/step", target=5.0
    )
    flow = _events.INLINE_FLOW
    processes = [event().process for event in _events.INLINE_STEPS]

    def direct(x: int) -> int:
        for process in processes:
            _, x = process(x)
        return x

    direct_us: list[float] = []
    runner_us: list[float] = []
    with Runner() as runner:
        run = runner.run
        for x in range(200):
            _check_flow_run(run(flow, x), direct(x), steps, "flow-inline")
        for _ in range(ctx.repeat):
            _collect()
            t0 = time.perf_counter()
            for x in range(n):
                direct(x)
            t1 = time.perf_counter()
            for x in range(n):
                run(flow, x)
            t2 = time.perf_counter()
            direct_us.append((t1 - t0) / n * 1e6)
            runner_us.append((t2 - t1) / n * 1e6)
            fig.samples.append((runner_us[-1] - direct_us[-1]) / steps)
        _check_flow_run(run(flow, 54321), 54321 + steps, steps, "flow-inline")
    fig.detail = (
        f"Runner.run(flow) {_median(runner_us):.1f} us/run, ten direct process() calls "
        f"{_median(direct_us):.2f} us; {n:,} runs of {flow}"
    )
    return [fig]


def bench_flow_stream(ctx: Context) -> list[Figure]:
    """Peak-RSS growth of Runner.imap of a 3-step thread-pool flow over a generator."""
    n = ctx.sizes.flow_stream
    fig = Figure(
        "flow-stream", f"flow stream: imap of 3-step flow, {n:,} inputs", "MiB", target=20.0
    )
    seconds: list[float] = []
    sources: set[str] = set()
    for _ in range(ctx.repeat):
        report = _run_child(ctx, "flow-stream", n)
        fig.samples.append(report["growth_kib"] / 1024)
        seconds.append(report["seconds"])
        sources.add(report["source"])
    fig.detail = (
        f"peak RSS growth ({'/'.join(sorted(sources))}), fresh process; flow "
        f"{_events.THREAD_FLOW} (TPE(4) each); imap took {_median(seconds):.1f} s "
        f"({_median(seconds) / n * 1e6:.0f} us/flow run)"
    )
    return [fig]


def bench_flow_map(ctx: Context) -> list[Figure]:
    """Runner.map of a 3-step thread-pool flow, divided by three maps of its events in turn."""
    n = ctx.sizes.flow_map
    fig = Figure("flow-map", "flow map: 3-step TPE(4) flow / 3 maps", "x", target=1.5, digits=3)
    flow = _events.THREAD_FLOW
    steps = len(_events.THREAD_STEPS)
    expected = [i + steps for i in range(n)]
    flow_s: list[float] = []
    maps_s: list[float] = []

    def three_maps() -> list[Any]:
        values: list[Any] = list(range(n))
        for event in _events.THREAD_STEPS:
            event_run = runner.map(event, values)
            _check_results(event_run, [v + 1 for v in values], f"flow-map ({event.__name__})")
            values = [r.content for r in event_run.results]
        return values

    with Runner() as runner:
        runner.map(flow, range(1_000))
        three_maps()
        for _ in range(ctx.repeat):
            _collect()
            t0 = time.perf_counter()
            flow_runs = runner.map(flow, range(n))
            flow_s.append(time.perf_counter() - t0)
            if len(flow_runs) != n:
                raise BenchmarkError(f"flow-map: {len(flow_runs)} flow runs, expected {n}")
            for flow_run, want in zip(flow_runs, expected, strict=True):
                _check_flow_run(flow_run, want, steps, "flow-map")
            del flow_runs
            _collect()
            t0 = time.perf_counter()
            values = three_maps()
            maps_s.append(time.perf_counter() - t0)
            if values != expected:
                raise BenchmarkError("flow-map: the three maps gave wrong values")
            fig.samples.append(flow_s[-1] / maps_s[-1])
    fig.detail = (
        f"flow map {_median(flow_s):.3f} s ({_median(flow_s) / n * 1e6:.1f} us/flow run), "
        f"three maps {_median(maps_s):.3f} s ({_median(maps_s) / n * 1e6:.1f} us/input, "
        f"results checked between maps); {n:,} inputs of {flow}"
    )
    return [fig]


# --------------------------------------------------------------------------------------------
# Hooks and progress (SPEC §13)
# --------------------------------------------------------------------------------------------


def _check_hook_called(runner_kwargs: dict[str, Any]) -> None:
    """Raise BenchmarkError unless a runner built like this calls its hooks as expected."""

    class Counting(_events.NullHook):
        def __init__(self) -> None:
            self.results = 0
            self.runs = 0

        def on_result(self, result: Any) -> None:
            self.results += 1

        def on_run(self, run: Any) -> None:
            self.runs += 1

    counting = Counting()
    with Runner(hooks=[counting], **runner_kwargs) as runner:
        runner.run(_events.Trivial, 1)
        runner.map(_events.TrivialThread, range(10))
    if (counting.results, counting.runs) != (11, 2):
        raise BenchmarkError(
            f"hooks: on_result called {counting.results} times (expected 11), on_run "
            f"{counting.runs} (expected 2)"
        )


def bench_hooks(ctx: Context) -> list[Figure]:
    """What one hook with five no-op methods, and a progress callable, add per run and task."""
    n_runs = ctx.sizes.hook_runs
    n_map = ctx.sizes.hook_map
    inline = Figure("hooks", "hook (5 no-op methods): inline run", "us/run", target=1.0)
    mapped = Figure("hooks", "hook (5 no-op methods): thread map", "us/task")
    progress = Figure("hooks", "progress=callable: thread map", "us/task")
    _check_hook_called({})
    expected = list(range(n_map))
    plain_run_us: list[float] = []
    hook_run_us: list[float] = []
    plain_map_us: list[float] = []
    hook_map_us: list[float] = []
    progress_map_us: list[float] = []
    sink = _events.ProgressSink()
    with (
        Runner() as plain,
        Runner(hooks=[_events.NullHook()]) as hooked,
        Runner(progress=sink) as tracked,
    ):
        for runner in (plain, hooked, tracked):
            for x in range(1_000):
                runner.run(_events.Trivial, x)
            runner.map(_events.TrivialThread, range(1_000))
        for _ in range(ctx.repeat):
            plain_run_us.append(_per_call(functools.partial(plain.run, _events.Trivial), n_runs))
            hook_run_us.append(_per_call(functools.partial(hooked.run, _events.Trivial), n_runs))
            inline.samples.append((hook_run_us[-1] - plain_run_us[-1]) * 1e6)
            plain_s = _timed_map(
                lambda: plain.map(_events.TrivialThread, range(n_map)), expected, "hooks (none)"
            )
            hook_s = _timed_map(
                lambda: hooked.map(_events.TrivialThread, range(n_map)), expected, "hooks (hook)"
            )
            sink.calls = 0
            progress_s = _timed_map(
                lambda: tracked.map(_events.TrivialThread, range(n_map)),
                expected,
                "hooks (progress)",
            )
            last = sink.last
            if sink.calls < 1 or last is None or last.done != n_map or last.total != n_map:
                raise BenchmarkError(f"progress: {sink.calls} snapshots, last {last!r}")
            plain_map_us.append(plain_s / n_map * 1e6)
            hook_map_us.append(hook_s / n_map * 1e6)
            progress_map_us.append(progress_s / n_map * 1e6)
            mapped.samples.append(hook_map_us[-1] - plain_map_us[-1])
            progress.samples.append(progress_map_us[-1] - plain_map_us[-1])
        _check_results(hooked.run(_events.Trivial, 9), [9], "hooks")
    inline.detail = (
        f"Runner(hooks=[hook]).run {_median(hook_run_us) * 1e6:.2f} us, Runner().run "
        f"{_median(plain_run_us) * 1e6:.2f} us (on_result + on_run per run); {n_runs:,} runs"
    )
    mapped.detail = (
        f"thread map of {n_map:,}: with hook {_median(hook_map_us):.2f} us/task, without "
        f"{_median(plain_map_us):.2f} us/task (on_result per task, on_run once)"
    )
    progress.detail = (
        f"thread map of {n_map:,}: with progress {_median(progress_map_us):.2f} us/task, "
        f"without {_median(plain_map_us):.2f} us/task; {sink.calls} snapshots in the last map"
    )
    return [inline, mapped, progress]


# --------------------------------------------------------------------------------------------
# Async events and timeouts (SPEC §14.3)
# --------------------------------------------------------------------------------------------


def _gather_seconds(n: int) -> float:
    """asyncio.gather over ``SleepAsync().process(i)`` under a semaphore, in a fresh loop."""
    process = _events.SleepAsync().process

    async def main() -> list[Any]:
        semaphore = asyncio.Semaphore(_events.ASYNC_WORKERS)

        async def one(i: int) -> Any:
            async with semaphore:
                return await process(i)

        return await asyncio.gather(*(one(i) for i in range(n)))

    loop = asyncio.new_event_loop()
    try:
        _collect()
        t0 = time.perf_counter()
        out = loop.run_until_complete(main())
        elapsed = time.perf_counter() - t0
    finally:
        loop.close()
    if out != [(True, i) for i in range(n)]:
        raise BenchmarkError("async: asyncio.gather gave wrong results")
    return elapsed


def bench_async(ctx: Context) -> list[Figure]:
    """Runner.map of an async sleeping event on AsyncExecutor, divided by asyncio.gather."""
    n = ctx.sizes.async_tasks
    workers = _events.ASYNC_WORKERS
    fig = Figure(
        "async",
        f"async: {n:,} x sleep({_events.ASYNC_SLEEP}) map / gather",
        "x",
        target=1.5,
        digits=3,
    )
    expected = list(range(n))
    runner_s: list[float] = []
    gather_s: list[float] = []
    with Runner() as runner:
        runner.map(_events.SleepAsync, range(workers))
        _gather_seconds(workers)
        for _ in range(ctx.repeat):
            runner_s.append(
                _timed_map(lambda: runner.map(_events.SleepAsync, range(n)), expected, "async")
            )
            gather_s.append(_gather_seconds(n))
            fig.samples.append(runner_s[-1] / gather_s[-1])
    ideal = n / workers * _events.ASYNC_SLEEP
    fig.detail = (
        f"Runner.map on AsyncExecutor(max_workers={workers}) {_median(runner_s):.3f} s, "
        f"gather + Semaphore({workers}) in a fresh loop {_median(gather_s):.3f} s; "
        f"ideal {ideal:.2f} s"
    )
    return [fig]


def _paired_cpu(
    runner: Runner, pair: tuple[type[EventBase], type[EventBase]], n: int, pairs: int
) -> tuple[list[float], list[float]]:
    """Per-task CPU of the driving thread (``time.thread_time``) for ``pairs`` pairs of
    maps of ``n`` trivial tasks, the two events alternating (each pair in the other order
    from the last), so that slow drifts of the machine fall on both. Returns the per-pair
    differences (second minus first) and the first event's figures, in us per task."""
    differences: list[float] = []
    first: list[float] = []
    for index in range(pairs):
        cpu = [0.0, 0.0]
        for which in (0, 1) if index % 2 == 0 else (1, 0):
            started = time.thread_time()
            run = runner.map(pair[which], range(n))
            cpu[which] = (time.thread_time() - started) / n * 1e6
            if not run.success or len(run.results) != n:
                raise BenchmarkError(f"timeout-overhead: {pair[which].__name__} map failed")
        differences.append(cpu[1] - cpu[0])
        first.append(cpu[0])
    return differences, first


def bench_timeout_overhead(ctx: Context) -> list[Figure]:
    """Per-task cost of a timeout that never fires, against an equally unbatched event.

    The cost is a few dozen bytecodes per attempt, well under a microsecond, while one
    unbatched thread-pool task costs the driving thread 20-30 us that swing by several us
    with GIL hand-offs. So the two events alternate in many short maps and the median of
    the paired differences is taken, on the driving thread's CPU time. The target row runs
    them on ``SubmitRunsPool``, a thread pool whose ``submit`` runs the work item in the
    calling thread: every cost of the machinery (the worker's start stamp included) and
    no hand-offs. The row below is the same on a real ``ThreadPoolExecutor(4)``.
    """
    n = ctx.sizes.timeout_map
    pairs = ctx.sizes.timeout_pairs
    fig = Figure(
        "timeout-overhead",
        "idle timeout: extra CPU per task (unbatched)",
        "us/task",
        target=0.5,
    )
    threads = Figure(
        "timeout-overhead", "  the same on ThreadPoolExecutor(4)", "us/task"
    )
    plain = Figure("timeout-overhead", "  timeout on a batched event: extra", "us/task")
    inline_base: list[float] = []
    thread_base: list[float] = []
    batched: dict[str, list[float]] = {"plain": [], "timeout": []}
    with Runner() as runner:
        submit_pair = (_events.TrivialSubmitStop, _events.TrivialSubmitStopTimeout)
        thread_pair = (_events.TrivialThreadStop, _events.TrivialThreadStopTimeout)
        for event in (*submit_pair, *thread_pair, _events.TrivialThread):
            runner.map(event, range(1_000))
        runner.map(_events.TrivialThreadTimeout, range(1_000))
        for _ in range(ctx.repeat):
            differences, base = _paired_cpu(runner, submit_pair, n, pairs)
            fig.samples.append(_median(differences))
            inline_base.append(_median(base))
            differences, base = _paired_cpu(runner, thread_pair, n, pairs)
            threads.samples.append(_median(differences))
            thread_base.append(_median(base))
            for name, event in (
                ("plain", _events.TrivialThread),
                ("timeout", _events.TrivialThreadTimeout),
            ):
                seconds = _timed_map(
                    lambda event=event: runner.map(event, range(n)),
                    list(range(n)),
                    f"timeout-overhead ({event.__name__})",
                )
                batched[name].append(seconds / n * 1e6)
            plain.samples.append(batched["timeout"][-1] - batched["plain"][-1])
    fig.detail = (
        f"median of {pairs} paired maps of {n:,} (driving thread's CPU), both "
        f"stop_on_exception=True (one task per work item), timeout={_events.TIMEOUT_SECONDS} "
        f"or none, on SubmitRunsPool (no thread hand-offs); without a timeout "
        f"{_median(inline_base):.2f} us/task"
    )
    threads.detail = (
        f"as above on ThreadPoolExecutor(4): without a timeout {_median(thread_base):.2f} "
        f"us/task, and GIL hand-offs swing each pair by several us"
    )
    plain.detail = (
        f"wall time, NOT like with like: a timeout also unbatches the event. TrivialThread "
        f"with timeout {_median(batched['timeout']):.2f} us/task, without "
        f"{_median(batched['plain']):.2f} us/task"
    )
    return [fig, threads, plain]


BENCHMARKS: dict[str, Callable[[Context], list[Figure]]] = {
    "inline": bench_inline,
    "thread-map": bench_thread_map,
    "process-map": bench_process_map,
    "repeated-runs": bench_repeated_runs,
    "streaming": bench_streaming,
    "retries": bench_retries,
    "policy-overhead": bench_policy_overhead,
    "one-task-runs": bench_one_task_runs,
    "result-memory": bench_result_memory,
    "flow-inline": bench_flow_inline,
    "flow-stream": bench_flow_stream,
    "flow-map": bench_flow_map,
    "hooks": bench_hooks,
    "async": bench_async,
    "timeout-overhead": bench_timeout_overhead,
}

DESCRIPTIONS: dict[str, str] = {
    "inline": (
        "`Runner().run(Trivial, x)` on the default (inline) executor, one warm runner, "
        "per call, minus a direct call of the same `process` (bound method of one instance)."
    ),
    "thread-map": (
        "`Runner.map(TrivialThread, range(N))` on `ThreadPoolExecutor` (max_workers=4) divided "
        "by `list(ThreadPoolExecutor(4).map(fn, range(N)))`, both pools created and warmed "
        "before timing."
    ),
    "process-map": (
        "`Runner.map(TrivialProcess, range(N))` on `ProcessPoolExecutor` (2 workers, spawn) "
        "divided by `list(ProcessPoolExecutor(2, mp_context=spawn).map(fn, range(N), "
        "chunksize=1))`, both pools warmed first."
    ),
    "repeated-runs": (
        "`Runner.run(TrivialProcess, i)` repeated after a first run that creates the pool; "
        "milliseconds per run, with raw `submit(fn, i).result()` on a warm pool for reference."
    ),
    "streaming": (
        "Peak-RSS growth (after minus before) of consuming `Runner.imap(TrivialThread, "
        "generator)` without keeping results, in a fresh interpreter (`run.py --child "
        "streaming`), after a 100-input warm-up. The peak is `VmHWM` from `/proc/self/status`: "
        "Linux carries `getrusage(RUSAGE_SELF).ru_maxrss` over fork and exec, so a child "
        "started by the (larger) benchmark process begins with the parent's peak and its own "
        "growth is hidden; `ru_maxrss` is used only where `VmHWM` is unavailable. The raw row "
        "runs `ThreadPoolExecutor(4).map` over fewer inputs; its scaled figure is an "
        "extrapolation, not a measurement."
    ),
    "retries": (
        "`Runner.map(FlakyThread, range(N))`: each task sleeps 5 ms, indices with "
        "`i % 10 < 3` raise on their first attempt, `RetryPolicy(max_attempts=2, "
        "backoff_factor=0.05, max_backoff=0.05)`, 4 threads; wall time divided by the ideal "
        "`(N + failing) * 5 ms / 4 + 50 ms`. Attempts are checked per result."
    ),
    "policy-overhead": (
        "Thread map of trivial tasks with `retry_policy = RetryPolicy()` (never triggered) "
        "minus the same map without a policy, microseconds per task. No target."
    ),
    "one-task-runs": (
        "`Runner.run` of one trivial task on `DefaultExecutor` and on a warm "
        "`ThreadPoolExecutor(4)`, microseconds per run. No target."
    ),
    "result-memory": (
        "tracemalloc bytes still allocated after `Runner.map(Trivial, range(N))`, divided by N, "
        "while the `EventRun` is alive. No target."
    ),
    "flow-inline": (
        "`Runner.run(flow, x)` of `Inc0 |-> Inc1 |-> ... |-> Inc9` (ten distinct events on "
        "`DefaultExecutor`, each returning `(True, x + 1)`), one warm runner, minus calling the "
        "ten `process` bound methods in a loop, divided by ten: microseconds per step (SPEC "
        "§11.8). Outputs and step counts are checked before and after timing."
    ),
    "flow-stream": (
        "Peak-RSS growth (`VmHWM`, as for **streaming**) of consuming `Runner.imap(flow, "
        "generator)` of `IncThreadA |-> IncThreadB |-> IncThreadC` (each a "
        "`ThreadPoolExecutor(4)` event) without keeping the `FlowRun`s, in a fresh interpreter "
        "(`run.py --child flow-stream`), after a 100-input warm-up; every output is checked "
        "(SPEC §11.8)."
    ),
    "flow-map": (
        "`Runner.map(flow, range(N))` of the same three-step thread-pool flow divided by three "
        "`Runner.map` calls of its events one after another (each mapping the previous one's "
        "contents; its results are checked between maps, inside the timing), paired within "
        "each repeat (SPEC §11.8)."
    ),
    "hooks": (
        "The cost of `Runner(hooks=[hook])`, with a hook whose five methods do nothing, over "
        "`Runner()`: per inline `Runner.run(Trivial, x)` (target, SPEC §13: on_result and "
        "on_run are called once each) and per task of a thread map (no target); and of "
        "`Runner(progress=callable)` per task of a thread map (no target). Warm runners, "
        "paired within each repeat. Every other figure runs with no hooks and no progress."
    ),
    "async": (
        "`Runner.map(SleepAsync, range(N))`, each task `await asyncio.sleep(0.01)` on "
        "`AsyncExecutor(max_workers=1000)` (warm), divided by `asyncio.gather` over the same "
        "coroutines (`SleepAsync().process(i)`) each under one `asyncio.Semaphore(1000)`, in "
        "a fresh event loop created before timing; same process, paired within each repeat "
        "(SPEC §14.3)."
    ),
    "timeout-overhead": (
        "Per-task cost of `timeout = 60` when nothing times out (SPEC §14.3). A timeout sends "
        "tasks unbatched (one per work item), so the compared events are both unbatched by "
        "`stop_on_exception=True` and differ only in `timeout`. The machinery costs a few "
        "dozen bytecodes per attempt, while an unbatched thread-pool task costs the driving "
        "thread 20-30 us that swing by several us with GIL hand-offs; so the two events "
        "alternate in many short maps (each pair in the other order from the last) and the "
        "median of the paired differences of the driving thread's CPU time is taken. The "
        "target row runs on `SubmitRunsPool` (benchmarks/_events.py), a `ThreadPoolExecutor` "
        "subclass whose `submit` runs the work item in the calling thread: every cost of the "
        "machinery, the worker's start stamp included, without the hand-offs. The next row "
        "(no target) is the same on a real `ThreadPoolExecutor(4)`; the last is a plain "
        "batched event with and without a timeout, i.e. what adding a timeout costs a user, "
        "batching included."
    ),
}


# --------------------------------------------------------------------------------------------
# Profiling
# --------------------------------------------------------------------------------------------


class _ThreadProfiles:
    """cProfile in every thread started while active, plus the calling thread.

    cProfile only sees the thread that enabled it; worker threads of a pool are where much of a
    runner's work happens, so each new thread gets its own profiler and the stats are merged.
    """

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, *_: Any) -> None:
        sys.setprofile(None)
        profile = cProfile.Profile()
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def __enter__(self) -> _ThreadProfiles:
        threading.setprofile(self._start_in_thread)
        self._start_in_thread()
        return self

    def __exit__(self, *_: object) -> None:
        threading.setprofile(None)
        self.profiles[0].disable()

    def stats(self) -> pstats.Stats:
        return pstats.Stats(*self.profiles)


def profile_figure(name: str, ctx: Context, top: int) -> None:
    """Run one figure once under cProfile; print event_pipeline's functions by tottime."""
    one = replace(ctx, repeat=1)
    with _ThreadProfiles() as profiles:
        figures = BENCHMARKS[name](one)
    for fig in figures:
        print(f"{fig.title}: {fig.median_text} ({fig.detail})")
    stats = profiles.stats()
    package = str(Path(event_pipeline.__file__).resolve().parent)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = [
        (tottime, cumtime, calls, f"{Path(file).name}:{line}({func})")
        for (file, line, func), (_, calls, tottime, cumtime, _) in raw.items()
        if str(file).startswith(package)
    ]
    rows.sort(reverse=True)
    total = sum(tt for (tt, _, _, _) in rows)
    all_total = sum(v[2] for v in raw.values())
    print(
        f"\ncProfile of {name} ({len(profiles.profiles)} threads profiled): "
        f"{total:.3f} s of {all_total:.3f} s total tottime is inside event_pipeline"
    )
    print(f"{'tottime s':>10} {'cumtime s':>10} {'calls':>10}  function")
    for tottime, cumtime, calls, where in rows[:top]:
        print(f"{tottime:10.3f} {cumtime:10.3f} {calls:10d}  {where}")
    print(
        f"\nTop {top} overall by tottime, all modules (this includes the raw executor's side "
        "of the figure, and the time idle workers spend blocked in queue.get):"
    )
    stats.sort_stats("tottime").print_stats(top)


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _git_revision() -> str:
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


def _load_text(at_start: tuple[float, float, float] | None) -> str:
    """1-minute load averages: other work on the machine makes every figure noisier."""
    try:
        at_end = os.getloadavg()
    except OSError:
        return "unknown"
    start = f"{at_start[0]:.2f}" if at_start is not None else "?"
    return f"1-min load average {start} at start, {at_end[0]:.2f} at end"


def machine_lines(
    command: str,
    ctx: Context,
    started: datetime.datetime,
    load_at_start: tuple[float, float, float] | None,
    revision_at_start: str,
) -> list[tuple[str, str]]:
    library = Path(event_pipeline.__file__).resolve().parent
    revision = revision_at_start
    revision_at_end = _git_revision()
    if revision_at_end != revision_at_start:
        # The tree changed while the figures ran: they may mix two versions of the library.
        revision = (
            f"{revision_at_start} at start, {revision_at_end} at end (CHANGED DURING THE RUN)"
        )
    try:
        library_text = str(library.relative_to(REPO))
    except ValueError:
        library_text = str(library)
    return [
        ("Command", command),
        ("Date", started.strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", cpu_model()),
        ("Cores", cores()),
        ("OS", f"{platform.system()} {platform.release()}"),
        (
            "Python",
            f"{platform.python_implementation()} {platform.python_version()} "
            f"({platform.python_build()[1]})",
        ),
        ("Library", f"event_pipeline from {library_text}, git {revision}"),
        ("Repeats", f"{ctx.repeat}; each figure is the median, spread is min - max"),
        ("Load", _load_text(load_at_start)),
    ]


def _table_rows(figures: list[Figure]) -> list[list[str]]:
    rows = []
    for fig in figures:
        detail = fig.error if fig.error is not None else fig.detail
        rows.append(
            [fig.title, fig.median_text, fig.spread_text, fig.target_text, fig.status, detail]
        )
    return rows


HEADER = ["figure", "median", "spread", "target", "status", "details"]


def render_text(figures: list[Figure]) -> str:
    rows = [HEADER, *_table_rows(figures)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]))
        if index == 0:
            lines.append("  ".join("-" * w for w in [*widths, len(HEADER[-1])]))
    return "\n".join(lines)


def render_markdown(
    figures: list[Figure], machine: list[tuple[str, str]], ctx: Context, elapsed: float
) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = [
        "# Benchmarks",
        "",
        "Written by `python benchmarks/run.py` (standard library only); rerun it instead of "
        "editing this file. The runner is measured against raw `concurrent.futures` in the "
        "same process, one after the other within each repeat; ratios are the median of the "
        "per-repeat ratios. Pools are created and warmed before timing on both sides.",
        "",
    ]
    if ctx.quick:
        out += [
            "**Quick run**: sizes are smaller than the targets assume; not a record.",
            "",
        ]
    out += [f"- **{key}:** {value if key != 'Command' else f'`{value}`'}" for key, value in machine]
    out += [f"- **Wall time:** {elapsed:.0f} s", ""]
    out += [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    out += ["| " + " | ".join(cell(c) for c in row) + " |" for row in _table_rows(figures)]
    out += ["", "## What each figure measures", ""]
    names = list(dict.fromkeys(fig.name for fig in figures))
    out += [f"- **{name}**: {DESCRIPTIONS[name]}" for name in names]
    out += [
        "",
        "Timings use `time.perf_counter`; the garbage collector stays enabled (its cost is part "
        "of what users pay) but is run before each timed section. Every timed run is checked "
        "for correct, in-order results, so a fast wrong answer reports an error, not a pass.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _parse_only(text: str) -> list[str]:
    names = [name.strip().replace("_", "-") for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown figure {', '.join(unknown) or repr(text)} "
            f"(expected one of {', '.join(BENCHMARKS)})"
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark event_pipeline's runner against raw concurrent.futures.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes for a smoke run (< 30 s); does not write docs/benchmarks.md",
    )
    parser.add_argument(
        "--repeat",
        type=_positive,
        default=3,
        metavar="N",
        help="runs per figure; the median is reported (default 3)",
    )
    parser.add_argument(
        "--only",
        type=_parse_only,
        metavar="NAME[,NAME]",
        help=f"run only these figures: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="write the Markdown report here (default: docs/benchmarks.md, full runs only)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="abort with a traceback of every thread if one figure takes longer (default 600)",
    )
    parser.add_argument(
        "--profile",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help="run one figure once under cProfile (all threads) and print the hottest "
        "event_pipeline functions instead of the table",
    )
    parser.add_argument("--top", type=_positive, default=10, help=argparse.SUPPRESS)
    parser.add_argument(
        "--child", choices=["streaming", "streaming-raw", "flow-stream"], help=argparse.SUPPRESS
    )
    parser.add_argument("--n", type=_positive, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_figures(names: list[str], ctx: Context) -> Iterator[Figure]:
    for name in names:
        print(f"[{name}] ...", end=" ", flush=True, file=sys.stderr)
        started = time.perf_counter()
        # A hang in the library must not hang the instrument: dump every thread and exit.
        faulthandler.dump_traceback_later(ctx.timeout, exit=True)
        try:
            figures = BENCHMARKS[name](ctx)
        except Exception as exc:
            # The table keeps one line; the traceback goes to stderr for whoever must fix it.
            traceback.print_exc(file=sys.stderr)
            figures = [Figure(name, name, "", error=f"{type(exc).__name__}: {exc}")]
        finally:
            faulthandler.cancel_dump_traceback_later()
        print(f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
        yield from figures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    ctx = Context(sizes=sizes, repeat=args.repeat, timeout=args.timeout, quick=args.quick)

    if args.child is not None:
        _child_streaming(args.n or sizes.streaming, args.child)
        return 0
    if args.profile is not None:
        profile_figure(args.profile, ctx, args.top)
        return 0

    names: list[str] = args.only or list(BENCHMARKS)
    argv_text = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "benchmarks/run.py", *argv_text])
    started = datetime.datetime.now(datetime.timezone.utc)
    try:
        load_at_start: tuple[float, float, float] | None = os.getloadavg()
    except OSError:
        load_at_start = None
    revision_at_start = _git_revision()
    t0 = time.perf_counter()
    figures = list(run_figures(names, ctx))
    elapsed = time.perf_counter() - t0
    machine = machine_lines(command, ctx, started, load_at_start, revision_at_start)

    print()
    for key, value in machine:
        print(f"{key + ':':<9} {value}")
    print(f"{'Wall:':<9} {elapsed:.1f} s" + ("  (QUICK: small sizes)" if ctx.quick else ""))
    print()
    print(render_text(figures))

    output: Path | None = args.output
    if output is None:
        reasons = []
        if args.quick:
            reasons.append("--quick")
        if args.only:
            reasons.append("--only")
        if args.repeat < 3:
            reasons.append("--repeat < 3")
        if reasons:
            print(
                f"\nnot writing {DEFAULT_OUTPUT.relative_to(REPO)} ({', '.join(reasons)}); "
                "use --output PATH to keep this report"
            )
        else:
            output = DEFAULT_OUTPUT
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(render_markdown(figures, machine, ctx, elapsed), encoding="utf-8")
        print(f"\nwrote {output}")

    return 1 if any(fig.status == "ERROR" for fig in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
