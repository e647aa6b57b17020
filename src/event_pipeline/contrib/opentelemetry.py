"""An event_pipeline hook that reports runs as OpenTelemetry spans and metrics (SPEC §13).

Requires the optional extra ``otel`` (``pip install "event-pipeline-futures[otel]"``; from a
clone: ``pip install -e ".[otel]"``), which is ``opentelemetry-api`` only: the application
chooses the SDK, exporters and providers. OpenTelemetry is imported when a hook is created, so
importing this module costs nothing.

What each hook method turns into::

    on_retry(retry)   counter event_pipeline.retries += 1; the retry is kept, with its time,
                      until the run of its task ends
    on_result(result) counters event_pipeline.tasks, event_pipeline.task_failures;
                      histogram event_pipeline.task.duration
    on_run(run)       span "event_pipeline.run <Event>" from now - run.duration to now, with a
                      "retry" span event per kept retry of its tasks, at the time it happened
    on_step(step)     the time the step's status became final is noted
    on_flow(run)      span "event_pipeline.flow" from now - run.duration to now, and under it a
                      span "event_pipeline.step <Step>" per step, placed by step.started

Spans are made after the fact with explicit start and end times, because a hook hears of a run
only once it is over; they are children of whatever span is current in the thread that drives
the call (hooks are called there). An event run that is a step of a flow has its own run span
too (its ``on_run`` comes before the flow's span can exist), beside the step span.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .._hooks import Retry
from .._results import EventResult, EventRun

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

__all__ = ["OpenTelemetryHook"]

_INSTALL_HINT = (
    'OpenTelemetryHook needs the optional dependency "opentelemetry-api"; '
    'install it with: pip install "event-pipeline-futures[otel]" '
    '(from a clone of event_pipeline: pip install -e ".[otel]")'
)

_SCOPE = "event_pipeline"

# Retries wait for the span of their run; a run that never reports (a stream abandoned half
# way) must not make them pile up. SDKs keep 128 events per span by default anyway.
_MAX_PENDING_RETRIES = 1024
# Steps wait for their flow run the same way; a flow stopped before on_flow leaves its steps.
_MAX_PENDING_STEPS = 100_000

# Task durations are seconds from microseconds to hours: OpenTelemetry's default buckets are
# made for milliseconds (0 to 10,000), so suggest boundaries in seconds instead.
_DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0,
)  # fmt: skip


class _PendingRetry(NamedTuple):
    """What a retry's span event needs; not the exception itself, whose traceback holds frames."""

    task_id: str
    attempt: int
    exception_type: str
    delay: float
    time_ns: int


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


def _type_name(exc: BaseException) -> str:
    """The exception's fully qualified class name (OpenTelemetry's ``exception.type``)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _tally(results: list[EventResult]) -> tuple[int, int, int]:
    """(tasks, failed tasks, attempts) of a run's results."""
    failed = attempts = 0
    for result in results:
        failed += result.error
        attempts += result.attempts
    return len(results), failed, attempts


class OpenTelemetryHook:
    """A hook that reports event runs, flow runs and their steps as spans, and tasks as metrics.

    Add it to one runner (``Runner(hooks=[OpenTelemetryHook()])``) or to all
    (``event_pipeline.add_hook(OpenTelemetryHook())``).

    Spans: ``event_pipeline.run <Event>`` per event run, ``event_pipeline.flow`` per flow run
    with a child ``event_pipeline.step <Step>`` per step, each with the real start and end
    times of what it measures. Attributes: ``event_pipeline.event`` (the event's name),
    ``event_pipeline.tasks``, ``event_pipeline.failed`` (failed tasks),
    ``event_pipeline.attempts`` (calls of ``process``); on a flow span
    ``event_pipeline.steps`` and ``event_pipeline.failed_steps``; on a step span
    ``event_pipeline.step``, ``event_pipeline.status`` and ``event_pipeline.reason``. A failed
    run, flow or step gets status ERROR. Each retry is a span event ``retry`` on its run's
    span, with ``event_pipeline.task_id``, ``event_pipeline.attempt`` (the attempt that
    failed), ``exception.type`` and ``event_pipeline.delay`` (seconds).

    Metrics, each with the attribute ``event`` (the event's name): counters
    ``event_pipeline.tasks`` (tasks finished), ``event_pipeline.task_failures`` (tasks
    finished as failures), ``event_pipeline.retries`` (retries scheduled), and the histogram
    ``event_pipeline.task.duration`` (seconds from a task's first submission to its outcome).

    Safe to use from several threads driving calls at once.

    Args:
        tracer_provider: where spans go; default: OpenTelemetry's global tracer provider.
        meter_provider: where metrics go; default: OpenTelemetry's global meter provider.

    Raises:
        ImportError: ``opentelemetry-api`` is not installed.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT, name="opentelemetry") from exc
        from .. import __version__

        self._trace = trace
        self._tracer: Tracer = trace.get_tracer(
            _SCOPE, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._tasks = meter.create_counter(
            "event_pipeline.tasks", unit="{task}", description="Tasks finished, failed included"
        )
        self._failures = meter.create_counter(
            "event_pipeline.task_failures",
            unit="{task}",
            description="Tasks finished as failures",
        )
        self._retries = meter.create_counter(
            "event_pipeline.retries", unit="{retry}", description="Retries scheduled"
        )
        try:
            self._durations = meter.create_histogram(
                "event_pipeline.task.duration",
                unit="s",
                description="Seconds from a task's first submission to its final outcome",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
        except TypeError:  # opentelemetry-api before 1.23 takes no advice
            self._durations = meter.create_histogram(
                "event_pipeline.task.duration",
                unit="s",
                description="Seconds from a task's first submission to its final outcome",
            )
        # One lock for both buffers: each holding is a few dictionary operations.
        self._lock = threading.Lock()
        self._pending_retries: dict[str, deque[_PendingRetry]] = {}
        # id(StepRun) -> when its on_step came. Ids, not the steps: the FlowRun keeps its steps
        # alive until on_flow, and a step's own on_step always overwrites a stale entry.
        self._step_times: dict[int, int] = {}
        self._metric_attributes: dict[str, Mapping[str, str]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def _attributes(self, event_name: str) -> Mapping[str, str]:
        attributes = self._metric_attributes.get(event_name)
        if attributes is None:
            # A race here only builds the same small dict twice.
            attributes = self._metric_attributes[event_name] = {"event": event_name}
        return attributes

    def on_retry(self, retry: Retry) -> None:
        """Count the retry and keep it for the span of its run."""
        self._retries.add(1, self._attributes(retry.event_name))
        pending = _PendingRetry(
            retry.task_id,
            retry.attempt,
            _type_name(retry.exception),
            retry.delay,
            time.time_ns(),
        )
        with self._lock:
            queue = self._pending_retries.get(retry.event_name)
            if queue is None:
                queue = self._pending_retries[retry.event_name] = deque(maxlen=_MAX_PENDING_RETRIES)
            queue.append(pending)

    def on_result(self, result: EventResult) -> None:
        """Count the task and record its duration."""
        attributes = self._attributes(result.event_name)
        self._tasks.add(1, attributes)
        if result.error:
            self._failures.add(1, attributes)
        self._durations.record(result.duration, attributes)

    def on_run(self, run: EventRun) -> None:
        """Make the run's span, ending now, with its retries as span events."""
        end = time.time_ns()
        start = end - _ns(run.duration)
        retries = self._take_retries(run)
        tasks, failed, attempts = _tally(run.results)
        span = self._tracer.start_span(
            f"event_pipeline.run {run.event_name}",
            start_time=start,
            attributes={
                "event_pipeline.event": run.event_name,
                "event_pipeline.tasks": tasks,
                "event_pipeline.failed": failed,
                "event_pipeline.attempts": attempts,
            },
        )
        for retry in retries:
            span.add_event(
                "retry",
                {
                    "event_pipeline.task_id": retry.task_id,
                    "event_pipeline.attempt": retry.attempt,
                    "exception.type": retry.exception_type,
                    "event_pipeline.delay": retry.delay,
                },
                timestamp=retry.time_ns,
            )
        if not run.success:
            self._set_error(span, f"{run.event_name} failed: {failed} of {tasks} tasks failed")
        span.end(end_time=end)

    def _take_retries(self, run: EventRun) -> list[_PendingRetry]:
        """Remove and return the kept retries of ``run``'s tasks, oldest first."""
        with self._lock:
            queue = self._pending_retries.get(run.event_name)
            if not queue:
                return []
            # Several runs of one event may be under way (threads, parallel flow steps, a
            # flow map); task ids tell their retries apart.
            ids = {result.task_id for result in run.results}
            mine = [retry for retry in queue if retry.task_id in ids]
            if len(mine) == len(queue):
                del self._pending_retries[run.event_name]
            elif mine:
                rest = [retry for retry in queue if retry.task_id not in ids]
                queue.clear()
                queue.extend(rest)
            return mine

    def on_step(self, step: Any) -> None:
        """Note when the step's status became final; its span is made with its flow's."""
        now = time.time_ns()
        with self._lock:
            times = self._step_times
            times.pop(id(step), None)  # re-inserted last, so the oldest entry comes first
            times[id(step)] = now
            if len(times) > _MAX_PENDING_STEPS:
                del times[next(iter(times))]

    def on_flow(self, run: Any) -> None:
        """Make the flow run's span, ending now, and a child span per step."""
        end = time.time_ns()
        start = end - _ns(run.duration)
        steps = list(run.steps)
        with self._lock:
            decided = [self._step_times.pop(id(step), None) for step in steps]
        tasks = failed = attempts = 0
        for step in steps:
            if step.run is not None:
                step_tasks, step_failed, _ = _tally(step.run.results)
                tasks += step_tasks
                failed += step_failed
            attempts += step.attempts
        failed_steps = tuple(step.name for step in run.failed)
        flow_span = self._tracer.start_span(
            "event_pipeline.flow",
            start_time=start,
            attributes={
                "event_pipeline.steps": tuple(step.name for step in steps),
                "event_pipeline.failed_steps": failed_steps,
                "event_pipeline.tasks": tasks,
                "event_pipeline.failed": failed,
                "event_pipeline.attempts": attempts,
            },
        )
        context = self._trace.set_span_in_context(flow_span)
        for step, decided_at in zip(steps, decided, strict=True):
            self._step_span(step, context, start, end, decided_at)
        if not run.success:
            why = "failed steps: " + ", ".join(failed_steps) if failed_steps else "flow failed"
            self._set_error(flow_span, why)
        flow_span.end(end_time=end)

    def _step_span(
        self, step: Any, context: Any, flow_start: int, flow_end: int, decided_at: int | None
    ) -> None:
        """One step's span under its flow's, kept within the flow span's interval."""
        if step.started is not None:
            start = min(flow_start + _ns(step.started), flow_end)
            end = min(start + _ns(step.duration), flow_end)
        else:
            # A step that never ran is an instant: when its fate was decided, if known.
            moment = flow_end if decided_at is None else decided_at
            start = end = min(max(moment, flow_start), flow_end)
        attributes: dict[str, Any] = {
            "event_pipeline.event": step.event_name,
            "event_pipeline.step": step.name,
            "event_pipeline.status": step.status.name,
            "event_pipeline.attempts": step.attempts,
        }
        if step.run is not None:
            tasks, failed, _ = _tally(step.run.results)
            attributes["event_pipeline.tasks"] = tasks
            attributes["event_pipeline.failed"] = failed
        if step.reason is not None:
            attributes["event_pipeline.reason"] = str(step.reason)
        span = self._tracer.start_span(
            f"event_pipeline.step {step.name}",
            context=context,
            start_time=start,
            attributes=attributes,
        )
        if step.status.name == "FAILED":
            self._set_error(span, str(step.reason) if step.reason else f"{step.name} failed")
        span.end(end_time=end)

    def _set_error(self, span: Span, description: str) -> None:
        trace = self._trace
        span.set_status(trace.Status(trace.StatusCode.ERROR, description))
