"""OpenTelemetryHook: spans, span events and metrics (SPEC §13).

First the hook is fed EventResult and EventRun objects directly, and stand-in StepRun/FlowRun
objects with the fields it reads; then (at the end) it is given to real runners that run
events and flows on inline, thread and process executors (tests/observability_events.py).
"""

from __future__ import annotations

import builtins
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from enum import Enum
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import observability_events as ev
from event_pipeline import Runner, StopProcessingError
from event_pipeline._hooks import Retry, resolve_hooks
from event_pipeline._results import EventResult, EventRun
from event_pipeline.contrib.opentelemetry import OpenTelemetryHook
from event_pipeline.flow import step as flow_step

TIMEOUT = 10


class Status(Enum):
    """Stands in for StepStatus: the hook reads only ``.name``."""

    SUCCEEDED = 1
    FAILED = 2
    SKIPPED = 3


class Telemetry:
    """An OpenTelemetryHook wired to in-memory span and metric collectors."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])
        self.hook = OpenTelemetryHook(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def span(self, name: str) -> ReadableSpan:
        found = [span for span in self.spans() if span.name == name]
        assert len(found) == 1, [span.name for span in self.spans()]
        return found[0]

    def metrics(self) -> dict[str, dict[tuple[tuple[str, Any], ...], Any]]:
        """metric name -> {sorted attributes: data point}."""
        data = self.reader.get_metrics_data()
        found: dict[str, dict[tuple[tuple[str, Any], ...], Any]] = {}
        if data is None:
            return found
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                assert scope_metrics.scope.name == "event_pipeline"
                for metric in scope_metrics.metrics:
                    points = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        points[tuple(sorted((point.attributes or {}).items()))] = point
        return found

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry()
    yield telemetry
    telemetry.shutdown()


def result(
    task_id: str,
    *,
    event: str = "Fetch",
    error: bool = False,
    attempts: int = 1,
    duration: float = 0.1,
) -> EventResult:
    exc = ValueError("bad") if error else None
    return EventResult(error, exc if error else task_id, exc, task_id, event, attempts, duration)


def step(
    name: str,
    status: Status,
    *,
    run: EventRun | None = None,
    started: float | None = None,
    duration: float = 0.0,
    reason: str | None = None,
) -> SimpleNamespace:
    attempts = sum(r.attempts for r in run.results) if run is not None else 0
    return SimpleNamespace(
        name=name,
        event_name=name.partition("#")[0],
        status=status,
        run=run,
        attempts=attempts,
        started=started,
        duration=duration,
        reason=reason,
    )


def flow_run(steps: list[SimpleNamespace], *, duration: float) -> SimpleNamespace:
    failed = [s for s in steps if s.status is Status.FAILED]
    return SimpleNamespace(
        success=not failed, steps=steps, duration=duration, output=None, failed=failed
    )


# Event runs


def test_event_run_span_has_name_attributes_and_times(otel: Telemetry) -> None:
    """An event run is one span named after the event, ending at on_run, run.duration long."""
    run = EventRun("Fetch", True, [result("1:0", attempts=2), result("1:1")], 1.5)
    before = time.time_ns()
    otel.hook.on_run(run)
    after = time.time_ns()
    span = otel.span("event_pipeline.run Fetch")
    assert dict(span.attributes or {}) == {
        "event_pipeline.event": "Fetch",
        "event_pipeline.tasks": 2,
        "event_pipeline.failed": 0,
        "event_pipeline.attempts": 3,
    }
    assert span.end_time is not None and span.start_time is not None
    assert before <= span.end_time <= after
    assert span.end_time - span.start_time == 1_500_000_000
    assert span.status.status_code is StatusCode.UNSET
    assert span.parent is None
    assert span.kind is trace.SpanKind.INTERNAL


def test_failed_event_run_has_error_status(otel: Telemetry) -> None:
    """A run whose evaluation failed gets status ERROR with a description of the failures."""
    run = EventRun("Fetch", False, [result("1:0", error=True), result("1:1")], 0.2)
    otel.hook.on_run(run)
    span = otel.span("event_pipeline.run Fetch")
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "Fetch failed: 1 of 2 tasks failed"
    assert (span.attributes or {})["event_pipeline.failed"] == 1


def test_run_span_is_a_child_of_the_current_span(otel: Telemetry) -> None:
    """Hooks run in the caller's thread, so a run span nests under the caller's current span."""
    tracer = otel.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("request") as outer:
        otel.hook.on_run(EventRun("Fetch", True, [result("1:0")], 0.01))
    span = otel.span("event_pipeline.run Fetch")
    assert span.parent is not None
    assert span.parent.span_id == outer.get_span_context().span_id


def test_retries_become_span_events_on_their_run(otel: Telemetry) -> None:
    """Retries heard before their run ends become 'retry' span events, stamped as they happened."""
    hook = otel.hook
    times = []
    for attempt in (1, 2):
        times.append(time.time_ns())
        hook.on_retry(Retry("Fetch", "1:0", attempt, TimeoutError("slow"), 0.5 * attempt))
    hook.on_retry(Retry("Fetch", "1:1", 1, KeyError("k"), 0.25))
    after = time.time_ns()
    hook.on_run(
        EventRun("Fetch", True, [result("1:0", attempts=3), result("1:1", attempts=2)], 2.0)
    )
    span = otel.span("event_pipeline.run Fetch")
    assert [event.name for event in span.events] == ["retry", "retry", "retry"]
    assert [dict(event.attributes or {}) for event in span.events] == [
        {
            "event_pipeline.task_id": "1:0",
            "event_pipeline.attempt": 1,
            "exception.type": "TimeoutError",
            "event_pipeline.delay": 0.5,
        },
        {
            "event_pipeline.task_id": "1:0",
            "event_pipeline.attempt": 2,
            "exception.type": "TimeoutError",
            "event_pipeline.delay": 1.0,
        },
        {
            "event_pipeline.task_id": "1:1",
            "event_pipeline.attempt": 1,
            "exception.type": "KeyError",
            "event_pipeline.delay": 0.25,
        },
    ]
    stamps = [event.timestamp for event in span.events]
    assert times[0] <= stamps[0] <= times[1] <= stamps[1] <= stamps[2] <= after


def test_retries_go_to_the_run_of_their_task(otel: Telemetry) -> None:
    """Two runs of one event under way at once each get only their own tasks' retries."""
    hook = otel.hook
    hook.on_retry(Retry("Fetch", "1:0", 1, ValueError("a"), 0.1))
    hook.on_retry(Retry("Fetch", "2:0", 1, ValueError("b"), 0.1))
    hook.on_retry(Retry("Other", "3:0", 1, ValueError("c"), 0.1))
    hook.on_run(EventRun("Fetch", True, [result("2:0", attempts=2)], 0.5))
    hook.on_run(EventRun("Fetch", True, [result("1:0", attempts=2)], 0.5))
    first, second = otel.spans()
    assert [(e.attributes or {})["event_pipeline.task_id"] for e in first.events] == ["2:0"]
    assert [(e.attributes or {})["event_pipeline.task_id"] for e in second.events] == ["1:0"]
    # A later run of that event starts clean; the other event's retry waits for its own run.
    hook.on_run(EventRun("Fetch", True, [result("1:0")], 0.5))
    assert otel.spans()[-1].events == ()
    hook.on_run(EventRun("Other", True, [result("3:0", event="Other", attempts=2)], 0.5))
    assert len(otel.spans()[-1].events) == 1


def test_exception_type_is_qualified(otel: Telemetry) -> None:
    """A retry's exception.type is the exception's module-qualified class name."""

    class Custom(Exception):
        pass

    otel.hook.on_retry(Retry("Fetch", "1:0", 1, Custom(), 0.1))
    otel.hook.on_run(EventRun("Fetch", True, [result("1:0")], 0.1))
    (event,) = otel.span("event_pipeline.run Fetch").events
    expected = f"{__name__}.test_exception_type_is_qualified.<locals>.Custom"
    assert (event.attributes or {})["exception.type"] == expected


# Flow runs


def test_flow_span_with_a_child_per_step(otel: Telemetry) -> None:
    """A flow run is a span with one child span per step, each placed by its own times."""
    fetch_run = EventRun("Fetch", True, [result("1:0", attempts=2)], 0.4)
    pack_run = EventRun(
        "Pack", False, [result("2:0", event="Pack", error=True), result("2:1", event="Pack")], 0.3
    )
    steps = [
        step("Fetch", Status.SUCCEEDED, run=fetch_run, started=0.0, duration=0.4),
        step("Pack", Status.FAILED, run=pack_run, started=0.5, duration=0.3, reason="bad input"),
        step("Ship", Status.SKIPPED, reason="upstream 'Pack' failed"),
    ]
    hook = otel.hook
    decided = []
    for s in steps:
        decided.append(time.time_ns())
        hook.on_step(s)
    before = time.time_ns()
    hook.on_flow(flow_run(steps, duration=1.0))
    after = time.time_ns()

    flow = otel.span("event_pipeline.flow")
    assert flow.start_time is not None and flow.end_time is not None
    assert before <= flow.end_time <= after
    assert flow.end_time - flow.start_time == 1_000_000_000
    assert dict(flow.attributes or {}) == {
        "event_pipeline.steps": ("Fetch", "Pack", "Ship"),
        "event_pipeline.failed_steps": ("Pack",),
        "event_pipeline.tasks": 3,
        "event_pipeline.failed": 1,
        "event_pipeline.attempts": 4,
    }
    assert flow.status.status_code is StatusCode.ERROR
    assert flow.status.description == "failed steps: Pack"

    children = [s for s in otel.spans() if s.parent is not None]
    assert [s.name for s in children] == [
        "event_pipeline.step Fetch",
        "event_pipeline.step Pack",
        "event_pipeline.step Ship",
    ]
    context = flow.get_span_context()
    assert context is not None
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == context.span_id
        assert child.context is not None and child.context.trace_id == context.trace_id

    fetch, pack, ship = children
    assert (fetch.start_time, fetch.end_time) == (flow.start_time, flow.start_time + 400_000_000)
    assert (pack.start_time, pack.end_time) == (
        flow.start_time + 500_000_000,
        flow.start_time + 800_000_000,
    )
    # A step that never ran is an instant: when its on_step came.
    assert ship.start_time == ship.end_time
    assert ship.start_time is not None and decided[2] <= ship.start_time <= before

    assert dict(fetch.attributes or {}) == {
        "event_pipeline.event": "Fetch",
        "event_pipeline.step": "Fetch",
        "event_pipeline.status": "SUCCEEDED",
        "event_pipeline.attempts": 2,
        "event_pipeline.tasks": 1,
        "event_pipeline.failed": 0,
    }
    assert (pack.attributes or {})["event_pipeline.reason"] == "bad input"
    assert pack.status.status_code is StatusCode.ERROR
    assert pack.status.description == "bad input"
    assert dict(ship.attributes or {}) == {
        "event_pipeline.event": "Ship",
        "event_pipeline.step": "Ship",
        "event_pipeline.status": "SKIPPED",
        "event_pipeline.attempts": 0,
        "event_pipeline.reason": "upstream 'Pack' failed",
    }
    assert fetch.status.status_code is StatusCode.UNSET
    assert ship.status.status_code is StatusCode.UNSET


def test_successful_flow_and_repeated_step_names(otel: Telemetry) -> None:
    """A flow that succeeded has no ERROR status; repeated steps keep their text names."""
    steps = [
        step(
            "Pack",
            Status.SUCCEEDED,
            run=EventRun("Pack", True, [result("1:0")], 0.1),
            started=0.0,
            duration=0.1,
        ),
        step(
            "Pack#2",
            Status.SUCCEEDED,
            run=EventRun("Pack", True, [result("2:0")], 0.1),
            started=0.1,
            duration=0.1,
        ),
    ]
    for s in steps:
        otel.hook.on_step(s)
    otel.hook.on_flow(flow_run(steps, duration=0.25))
    flow = otel.span("event_pipeline.flow")
    assert flow.status.status_code is StatusCode.UNSET
    second = otel.span("event_pipeline.step Pack#2")
    assert (second.attributes or {})["event_pipeline.event"] == "Pack"


def test_step_spans_stay_inside_the_flow_span(otel: Telemetry) -> None:
    """A step reported as ending after its flow (clock rounding) is cut at the flow's end."""
    steps = [
        step(
            "Fetch",
            Status.SUCCEEDED,
            run=EventRun("Fetch", True, [], 0.3),
            started=0.1,
            duration=0.3,
        )
    ]
    otel.hook.on_step(steps[0])
    otel.hook.on_flow(flow_run(steps, duration=0.3))
    flow = otel.span("event_pipeline.flow")
    child = otel.span("event_pipeline.step Fetch")
    assert child.end_time == flow.end_time
    assert child.start_time == (flow.start_time or 0) + 100_000_000


def test_flows_interleaved_in_one_thread(otel: Telemetry) -> None:
    """Steps of flow runs under way at once (a flow map) go to their own flow's span."""
    a = [
        step(
            "Fetch",
            Status.SUCCEEDED,
            run=EventRun("Fetch", True, [], 0.1),
            started=0.0,
            duration=0.1,
        )
    ]
    b = [step("Fetch", Status.SKIPPED, reason="b's reason")]
    otel.hook.on_step(a[0])
    otel.hook.on_step(b[0])
    otel.hook.on_flow(flow_run(b, duration=0.2))
    otel.hook.on_flow(flow_run(a, duration=0.3))
    flows = [s for s in otel.spans() if s.name == "event_pipeline.flow"]
    steps = [s for s in otel.spans() if s.name == "event_pipeline.step Fetch"]
    assert len(flows) == len(steps) == 2
    for flow, child in zip(flows, steps, strict=True):
        assert child.parent is not None
        assert child.parent.span_id == flow.context.span_id
    assert (steps[0].attributes or {})["event_pipeline.reason"] == "b's reason"
    assert (steps[1].attributes or {})["event_pipeline.status"] == "SUCCEEDED"


# Metrics


def test_results_feed_counters_and_histogram(otel: Telemetry) -> None:
    """on_result counts tasks and failures per event and records durations in seconds."""
    hook = otel.hook
    hook.on_result(result("1:0", duration=0.5))
    hook.on_result(result("1:1", error=True, duration=1.5))
    hook.on_result(result("2:0", event="Pack", duration=0.25))
    hook.on_retry(Retry("Fetch", "1:1", 1, ValueError("x"), 0.1))
    hook.on_retry(Retry("Fetch", "1:1", 2, ValueError("x"), 0.2))
    metrics = otel.metrics()
    fetch, pack = (("event", "Fetch"),), (("event", "Pack"),)
    assert {k: p.value for k, p in metrics["event_pipeline.tasks"].items()} == {fetch: 2, pack: 1}
    assert {k: p.value for k, p in metrics["event_pipeline.task_failures"].items()} == {fetch: 1}
    assert {k: p.value for k, p in metrics["event_pipeline.retries"].items()} == {fetch: 2}
    durations = metrics["event_pipeline.task.duration"]
    assert durations[fetch].count == 2
    assert durations[fetch].sum == pytest.approx(2.0)
    assert (durations[fetch].min, durations[fetch].max) == (0.5, 1.5)
    assert durations[pack].sum == pytest.approx(0.25)
    # Boundaries suited to seconds, not OpenTelemetry's default milliseconds.
    assert 1.0 in durations[fetch].explicit_bounds


def test_metric_units_and_kinds(otel: Telemetry) -> None:
    """The counters are monotonic sums; the duration histogram is in seconds."""
    otel.hook.on_result(result("1:0"))
    otel.hook.on_retry(Retry("Fetch", "1:0", 1, ValueError("x"), 0.1))
    data = otel.reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    assert metrics["event_pipeline.task.duration"].unit == "s"
    for name in ("event_pipeline.tasks", "event_pipeline.retries"):
        assert metrics[name].data.is_monotonic  # type: ignore[union-attr]


# Use as a hook, threads, a missing extra


def test_is_a_hook_with_all_five_methods(otel: Telemetry) -> None:
    """The hook resolves into all five kinds of a runner's plan."""
    hooks = resolve_hooks([otel.hook])
    assert all(
        len(kind) == 1
        for kind in (hooks.on_retry, hooks.on_result, hooks.on_run, hooks.on_step, hooks.on_flow)
    )
    hooks.emit_result(result("1:0"))
    assert otel.metrics()["event_pipeline.tasks"][(("event", "Fetch"),)].value == 1


def test_threads_driving_runs_at_once(otel: Telemetry) -> None:
    """Several threads reporting retries, results and runs at once lose nothing and mix nothing."""
    threads_count, runs = 8, 25
    barrier = threading.Barrier(threads_count)

    def drive(n: int) -> None:
        barrier.wait(timeout=TIMEOUT)
        for i in range(runs):
            task = f"{n}-{i}:0"
            otel.hook.on_retry(Retry("Fetch", task, 1, ValueError("x"), 0.0))
            res = result(task, attempts=2)
            otel.hook.on_result(res)
            otel.hook.on_run(EventRun("Fetch", True, [res], 0.01))

    threads = [threading.Thread(target=drive, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    spans = otel.spans()
    assert len(spans) == threads_count * runs
    # Each run span got exactly its own task's retry.
    task_ids = set()
    for span in spans:
        (event,) = span.events
        task_ids.add((event.attributes or {})["event_pipeline.task_id"])
    assert len(task_ids) == threads_count * runs
    total = threads_count * runs
    metrics = otel.metrics()
    assert metrics["event_pipeline.tasks"][(("event", "Fetch"),)].value == total
    assert metrics["event_pipeline.retries"][(("event", "Fetch"),)].value == total


def test_global_providers_are_the_default() -> None:
    """Without providers, the hook uses OpenTelemetry's global ones (no-op until set)."""
    hook = OpenTelemetryHook()
    hook.on_retry(Retry("Fetch", "1:0", 1, ValueError("x"), 0.1))
    hook.on_result(result("1:0"))
    hook.on_run(EventRun("Fetch", True, [result("1:0")], 0.1))
    s = step(
        "Fetch", Status.SUCCEEDED, run=EventRun("Fetch", True, [], 0.1), started=0.0, duration=0.1
    )
    hook.on_step(s)
    hook.on_flow(flow_run([s], duration=0.1))
    assert repr(hook) == "OpenTelemetryHook()"


def test_missing_opentelemetry_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry-api, creating the hook is an ImportError naming the extra."""
    real_import = builtins.__import__

    def no_otel(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_otel)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[otel\]"') as info:
        OpenTelemetryHook()
    assert info.value.name == "opentelemetry"
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_core_never_imports_opentelemetry() -> None:
    """Importing event_pipeline (and its hooks) loads no OpenTelemetry module by itself."""
    code = (
        "import sys, event_pipeline, event_pipeline._hooks, event_pipeline.contrib.opentelemetry;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


# With the real runner: events and flows run on inline, thread and process executors (the
# ``kind`` fixture of tests/conftest.py).


def _flow_of(kind: str) -> Any:
    """``Start (0 -> Nope, 1 -> Yes) -> Boom -> Never`` of ``kind``'s events."""
    e = ev.EVENTS[kind]
    return flow_step(e["Start"]).branch({0: e["Nope"], 1: e["Yes"]}).then(e["Boom"], e["Never"])


def _values(points: dict[tuple[tuple[str, Any], ...], Any]) -> dict[str, Any]:
    return {dict(key)["event"]: point.value for key, point in points.items()}


def test_real_event_runs_make_one_span_each(otel: Telemetry, kind: str) -> None:
    """map and run through the runner: a span per event run, with its attributes, times,
    status and a span event per retry."""
    flaky, square = ev.EVENTS[kind]["Flaky"], ev.EVENTS[kind]["Square"]
    with Runner(hooks=[otel.hook]) as runner:
        before = time.time_ns()
        run = runner.map(flaky, range(6))
        after = time.time_ns()
        ok = runner.run(square, 3)
    assert not run.success and ok.success
    span = otel.span(f"event_pipeline.run {flaky.__name__}")
    assert dict(span.attributes or {}) == {
        "event_pipeline.event": flaky.__name__,
        "event_pipeline.tasks": 6,
        "event_pipeline.failed": 2,  # 0 and 3
        "event_pipeline.attempts": 4 + 2 * 3,
    }
    assert span.status.status_code is StatusCode.ERROR
    assert span.start_time is not None and span.end_time is not None
    assert before <= span.start_time <= span.end_time <= after
    assert (span.end_time - span.start_time) / 1e9 == pytest.approx(run.duration, abs=1e-3)
    failed_ids = [r.task_id for r in run.results if r.error]
    retries = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert sorted(
        (a["event_pipeline.task_id"], a["event_pipeline.attempt"]) for _, a in retries
    ) == [(task_id, attempt) for task_id in sorted(failed_ids) for attempt in (1, 2)]
    assert {name for name, _ in retries} == {"retry"}
    assert {a["exception.type"] for _, a in retries} == {"ValueError"}
    assert sorted({a["event_pipeline.delay"] for _, a in retries}) == pytest.approx([0.001, 0.0015])
    assert all(span.start_time <= e.timestamp <= span.end_time for e in span.events)
    ok_span = otel.span(f"event_pipeline.run {square.__name__}")
    assert ok_span.status.status_code is StatusCode.UNSET
    assert dict(ok_span.attributes or {})["event_pipeline.tasks"] == 1
    assert not ok_span.events


def test_real_event_runs_feed_the_metrics(otel: Telemetry, kind: str) -> None:
    """Counters and the histogram add up to what the runs returned."""
    flaky, refuse = ev.EVENTS[kind]["Flaky"], ev.EVENTS[kind]["Refuse"]
    with Runner(hooks=[otel.hook]) as runner:
        runs = [runner.map(flaky, range(7)), runner.map(refuse, range(4))]
        list(runner.imap(flaky, [1, 2]))
    metrics = otel.metrics()
    f, r = flaky.__name__, refuse.__name__
    assert _values(metrics["event_pipeline.tasks"]) == {f: 9, r: 4}
    assert _values(metrics["event_pipeline.task_failures"]) == {f: 3, r: 2}  # 0, 3, 6; 1, 3
    assert _values(metrics["event_pipeline.retries"]) == {f: 6}
    durations = {dict(k)["event"]: p for k, p in metrics["event_pipeline.task.duration"].items()}
    assert durations[f].count == 9 and durations[r].count == 4
    assert durations[r].sum == pytest.approx(sum(x.duration for x in runs[1].results))
    assert durations[f].sum >= sum(x.duration for x in runs[0].results)


def test_real_flow_makes_a_flow_span_with_a_child_per_step(otel: Telemetry, kind: str) -> None:
    """A flow run: its span, a child span per step (not taken and skipped ones too) inside
    it, the run spans of the steps that ran, ERROR where something failed."""
    e = ev.EVENTS[kind]
    names = [e[n].__name__ for n in ("Start", "Nope", "Yes", "Boom", "Never")]
    with Runner(hooks=[otel.hook]) as runner:
        before = time.time_ns()
        flow_run = runner.run(_flow_of(kind), 1)
        after = time.time_ns()
    flow = otel.span("event_pipeline.flow")
    attributes = dict(flow.attributes or {})
    assert tuple(attributes["event_pipeline.steps"]) == tuple(names)
    assert tuple(attributes["event_pipeline.failed_steps"]) == (names[3],)
    assert (
        attributes["event_pipeline.tasks"],
        attributes["event_pipeline.failed"],
        attributes["event_pipeline.attempts"],
    ) == (3, 1, 1 + 1 + 2)
    assert flow.status.status_code is StatusCode.ERROR
    assert flow.start_time is not None and flow.end_time is not None
    assert before <= flow.start_time <= flow.end_time <= after
    assert (flow.end_time - flow.start_time) / 1e9 == pytest.approx(flow_run.duration, abs=1e-3)
    steps = {name: otel.span(f"event_pipeline.step {name}") for name in names}
    for name, span in steps.items():
        assert span.parent is not None and span.parent.span_id == flow.context.span_id
        assert span.context.trace_id == flow.context.trace_id
        assert span.start_time is not None and span.end_time is not None
        assert flow.start_time <= span.start_time <= span.end_time <= flow.end_time
        record = flow_run[name]
        assert dict(span.attributes or {})["event_pipeline.status"] == record.status.name
        assert dict(span.attributes or {})["event_pipeline.step"] == name
        if record.started is not None:
            assert (span.start_time - flow.start_time) / 1e9 == pytest.approx(
                record.started, abs=1e-3
            )
            assert (span.end_time - span.start_time) / 1e9 == pytest.approx(
                record.duration, abs=1e-3
            )
        else:
            assert span.start_time == span.end_time  # never ran: an instant
    assert [steps[n].status.status_code for n in names] == [
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.UNSET,
        StatusCode.ERROR,
        StatusCode.UNSET,
    ]
    assert "event_pipeline.reason" in dict(steps[names[4]].attributes or {})  # why skipped
    # The steps that ran have their run spans too; Boom's carries its retry.
    runs = {span.name for span in otel.spans() if span.name.startswith("event_pipeline.run ")}
    assert runs == {f"event_pipeline.run {names[i]}" for i in (0, 2, 3)}
    boom = otel.span(f"event_pipeline.run {names[3]}")
    (retry,) = boom.events
    assert (retry.name, dict(retry.attributes or {})["event_pipeline.attempt"]) == ("retry", 1)
    assert dict(retry.attributes or {})["exception.type"] == "KeyError"
    assert boom.status.status_code is StatusCode.ERROR


def test_real_runs_nest_under_the_callers_current_span(otel: Telemetry, kind: str) -> None:
    """Hooks run in the calling thread, so the spans are children of the caller's span,
    whatever executor the work ran on."""
    tracer = otel.tracer_provider.get_tracer("app")
    with Runner(hooks=[otel.hook]) as runner, tracer.start_as_current_span("request") as parent:
        runner.map(ev.EVENTS[kind]["Square"], range(3))
        runner.run(_flow_of(kind), 1)
    request_id = parent.get_span_context().span_id
    top = [
        s
        for s in otel.spans()
        if s.name != "request" and not s.name.startswith("event_pipeline.step")
    ]
    assert len(top) == 1 + 3 + 1  # the map, three step runs, the flow
    assert all(s.parent is not None and s.parent.span_id == request_id for s in top)


def test_a_stopped_flow_still_makes_its_span(otel: Telemetry, kind: str) -> None:
    """A flow run stopped by stop_on_exception: a flow span with status ERROR and a span per
    step."""
    e = ev.EVENTS[kind]
    with Runner(hooks=[otel.hook]) as runner, pytest.raises(StopProcessingError):
        runner.run(flow_step(e["Start"]).then(e["Stop"], e["Never"]), 1)
    flow = otel.span("event_pipeline.flow")
    assert flow.status.status_code is StatusCode.ERROR
    statuses = {
        dict(s.attributes or {})["event_pipeline.step"]: dict(s.attributes or {})[
            "event_pipeline.status"
        ]
        for s in otel.spans()
        if s.name.startswith("event_pipeline.step ")
    }
    assert statuses == {
        e["Start"].__name__: "SUCCEEDED",
        e["Stop"].__name__: "FAILED",
        e["Never"].__name__: "SKIPPED",
    }


def test_a_flow_map_makes_a_flow_span_per_run(otel: Telemetry) -> None:
    """map of a flow over three inputs: three flow spans, each with its own five steps."""
    with Runner(hooks=[otel.hook]) as runner:
        runner.map(_flow_of("thread"), [1, 2, 3])
    flows = [s for s in otel.spans() if s.name == "event_pipeline.flow"]
    assert len(flows) == 3
    for flow in flows:
        children = [
            s
            for s in otel.spans()
            if s.parent is not None and s.parent.span_id == flow.context.span_id
        ]
        assert len(children) == 5
    metrics = otel.metrics()
    assert _values(metrics["event_pipeline.retries"]) == {ev.ThreadBoom.__name__: 3}
    assert _values(metrics["event_pipeline.task_failures"]) == {ev.ThreadBoom.__name__: 3}
