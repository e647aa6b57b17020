"""What a flow run returns: one :class:`StepRun` per step in a :class:`FlowRun` (SPEC §11.6).

Both are plain records the runtime fills in; they pickle, print readably and draw
themselves: :meth:`FlowRun.to_dot` colours the flow's graph by step status and
:meth:`FlowRun.to_svg` draws a timeline, one row per step.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._results import EventResult, EventRun, task_result
from ._worker import describe_exception

if TYPE_CHECKING:
    from .flow._model import Flow

__all__ = [
    "ChainInfo",
    "FlowRun",
    "StepRun",
    "StepStatus",
    "chain_run",
    "chain_successes",
    "failure_reason",
    "show",
]


def escape(text: str) -> str:
    """``text`` safe inside an XML element."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoteattr(text: str) -> str:
    """``text`` as a double-quoted XML attribute value."""
    return '"' + escape(text).replace('"', "&quot;") + '"'


class StepStatus(enum.Enum):
    """Where a step of a flow run ended up."""

    #: It ran and its event run succeeded.
    SUCCEEDED = "succeeded"
    #: It ran and failed, or could not start (a bad route, a non-iterable ``|=>`` value).
    FAILED = "failed"
    #: It did not run: something it depends on failed, or the run stopped first.
    SKIPPED = "skipped"
    #: It did not run: it is in a branch arm that was not chosen.
    NOT_TAKEN = "not taken"
    #: It had started when the run stopped, and its outcome was not waited for.
    CANCELLED = "cancelled"


# Fill colours, chosen to read apart for the common kinds of colour blindness too.
_COLOURS = {
    StepStatus.SUCCEEDED: "#3a9d5d",
    StepStatus.FAILED: "#d1495b",
    StepStatus.SKIPPED: "#b8b8b8",
    StepStatus.NOT_TAKEN: "#e6e6e6",
    StepStatus.CANCELLED: "#8e6cc0",
}
_TOLERATED_COLOUR = "#f2a541"


def _colour(step: StepRun) -> str:
    if step.status is StepStatus.FAILED and step.handled:
        return _TOLERATED_COLOUR
    return _COLOURS[step.status]


class StepRun:
    """One step of a flow run.

    Attributes:
        name: the event's ``__name__``; its later uses in text order are ``Name#2``,
            ``Name#3``...
        event_name: the event class's ``__name__``.
        status: a :class:`StepStatus`.
        run: the step's :class:`EventRun`, present exactly when the step ran.
        value: the step's value: its task's content (after ``|=>``, the list of contents).
        route: the route code chosen after it, or ``None``.
        handled: its failure is tolerated (``?``, or a group that succeeded anyway).
        reason: why it failed, was skipped or not taken; ``None`` when it succeeded.
        attempts: calls of ``process``, summed over its tasks.
        started: seconds from the flow run's start to the step's, or ``None``.
        duration: seconds the step took (0.0 when it did not run).
    """

    __slots__ = (
        "_run",
        "attempts",
        "duration",
        "event_name",
        "handled",
        "name",
        "reason",
        "route",
        "started",
        "status",
        "value",
    )

    #: The step's event run, or (as the runtime leaves it for a one-task step) its one
    #: :class:`EventResult`, from which ``run`` makes the :class:`EventRun` when first
    #: asked: most flow runs are never looked at that closely.
    _run: EventRun | EventResult | None

    def __init__(
        self,
        name: str,
        event_name: str,
        status: StepStatus,
        *,
        run: EventRun | None = None,
        value: Any = None,
        route: int | None = None,
        handled: bool = False,
        reason: str | None = None,
        attempts: int = 0,
        started: float | None = None,
        duration: float = 0.0,
    ) -> None:
        self.name = name
        self.event_name = event_name
        self.status = status
        self._run = run
        self.value = value
        self.route = route
        self.handled = handled
        self.reason = reason
        self.attempts = attempts
        self.started = started
        self.duration = duration

    @property
    def run(self) -> EventRun | None:
        """The step's :class:`EventRun`, present exactly when the step ran."""
        run = self._run
        if isinstance(run, EventResult):
            # A one-task step: its run is that task's result, judged as every evaluation
            # state judges one task, over the step's duration.
            run = self._run = EventRun(self.event_name, not run.error, [run], self.duration)
        return run

    @run.setter
    def run(self, run: EventRun | None) -> None:
        self._run = run

    def __repr__(self) -> str:
        parts = [f"{self.name} {self.status.name}"]
        if self.handled:
            parts.append("handled")
        if self.route is not None:
            parts.append(f"route={self.route}")
        parts.append(f"attempts={self.attempts}")
        parts.append(f"duration={self.duration:.6f}")
        if self.reason is not None:
            parts.append(f"reason={self.reason!r}")
        return f"StepRun({', '.join(parts)})"

    def __reduce__(self) -> tuple[Any, ...]:
        return _step_run, (
            self.name,
            self.event_name,
            self.status,
            self.run,
            self.value,
            self.route,
            self.handled,
            self.reason,
            self.attempts,
            self.started,
            self.duration,
        )


def _step_run(
    name: str,
    event_name: str,
    status: StepStatus,
    run: EventRun | EventResult | None,
    value: Any,
    route: int | None,
    handled: bool,
    reason: str | None,
    attempts: int,
    started: float | None,
    duration: float,
) -> StepRun:
    """A :class:`StepRun` from every field, positionally, in ``__init__``'s order.

    Unpickling and the runtime (one per step of every flow run) use it: calling the class
    with keywords costs about three times as much. For a one-task step ``run`` may be the
    task's :class:`EventResult`: the :class:`EventRun` is made from it when asked for."""
    step = StepRun.__new__(StepRun)
    step.name = name
    step.event_name = event_name
    step.status = status
    step._run = run
    step.value = value
    step.route = route
    step.handled = handled
    step.reason = reason
    step.attempts = attempts
    step.started = started
    step.duration = duration
    return step


#: For the runtime: ``make_step_run(name, event_name, status, run, value, route, handled,
#: reason, attempts, started, duration)``.
make_step_run = _step_run


_making_steps = threading.Lock()


def failure_reason(event_name: str, first: EventResult) -> str:
    """Why a step failed, ``first`` being its first failed result. Never raises."""
    if first.exception is not None:
        return f"{event_name} failed: {describe_exception(first.exception)}"
    return f"{event_name} failed: returned (False, {show(first.content)})"


def show(value: object) -> str:
    """``repr(value)`` for a message; never raises (a failing repr gives the type)."""
    try:
        shown = repr(value)
        if not isinstance(shown, str):
            raise TypeError("__repr__ returned a non-string")
    except Exception:
        shown = f"<{type(value).__name__} whose repr failed>"
    return shown


class ChainInfo:
    """What the runs of one call of a chain share (see ``chain_run``): per step its name,
    event name and task id parts, and the flow."""

    __slots__ = ("flow", "names", "parts")

    def __init__(
        self,
        names: tuple[tuple[str, str], ...],
        parts: tuple[tuple[str, str], ...],
        flow: Flow | None,
    ) -> None:
        self.names = names
        self.parts = parts
        self.flow = flow


def chain_run(
    info: ChainInfo,
    index: int,
    record: tuple[Any, ...],
    odd: dict[int, EventResult | EventRun] | None,
    success: bool,
) -> FlowRun:
    """Run ``index`` of a chain (steps one after another, each one task), which ran steps
    0 to k: every step before k succeeded, and the steps after it were skipped.

    ``record`` is ``(v0, ..., vk, t0, ..., tk+1)``: each step's value, when the run (and so
    step 0) began, when each later step began, and when step k ended. ``odd`` holds the
    outcome (EventResult, or the EventRun made for hooks) of each step that did not simply
    succeed at its first attempt; the others' results are made from their value. The
    :class:`StepRun` s are made when ``steps`` is first read: most runs of a large map are
    only asked whether they succeeded and for their output.
    """
    (run,) = chain_successes(info, index, (record,))
    run.success = success
    run._odd = odd
    return run


def chain_successes(
    info: ChainInfo, first: int, records: Iterable[tuple[Any, ...]]
) -> list[FlowRun]:
    """``chain_run(info, index, record, None, True)`` for runs ``first``, ``first + 1``...
    and ``records``: every step of each succeeded at its first attempt. One loop, with no
    call per run: a large map of a chain makes one per input."""
    runs: list[FlowRun] = []
    append = runs.append
    new = FlowRun.__new__
    flow = info.flow
    for index, record in enumerate(records, first):
        run = new(FlowRun)
        run.success = True
        run._steps = None
        run._chain = info
        run._index = index
        run._record = record
        run._odd = None
        ran = (len(record) - 1) // 2
        run.output = record[ran - 1]
        run.duration = record[-1] - record[ran]
        run.flow = flow
        run._by_name = None
        append(run)
    return runs


def _chain_steps(
    info: ChainInfo,
    index: int,
    record: tuple[Any, ...],
    odd: dict[int, EventResult | EventRun] | None,
) -> list[StepRun]:
    ran = (len(record) - 1) // 2
    times = record[ran:]
    start = times[0]
    steps: list[StepRun] = []
    for j in range(ran):
        name, event_name = info.names[j]
        began = times[j]
        duration = times[j + 1] - began
        outcome = None if odd is None else odd.get(j)
        if outcome is None:
            result = outcome = task_result(
                False, record[j], None, info.parts[j], event_name, 1, duration, index
            )
        else:
            result = outcome if type(outcome) is EventResult else outcome.results[0]  # type: ignore[union-attr]
        if result.error:
            steps.append(_step_run(
                name, event_name, StepStatus.FAILED, outcome, result.content, None, False,
                failure_reason(event_name, result), result.attempts, began - start, duration,
            ))  # fmt: skip
            reason = f"upstream {name!r} failed"
            steps.extend(
                _step_run(later, event, StepStatus.SKIPPED, None, None, None, False, reason, 0,
                          None, 0.0)
                for later, event in info.names[j + 1 :]
            )  # fmt: skip
            break
        steps.append(_step_run(
            name, event_name, StepStatus.SUCCEEDED, outcome, result.content, None, False,
            None, result.attempts, began - start, duration,
        ))  # fmt: skip
    return steps


class FlowRun:
    """One run of a flow.

    Attributes:
        success: nothing failed untolerated.
        steps: every step, in text order, each with its status.
        output: the flow's value (the value of its last node that ran).
        duration: seconds the run took.
        flow: the flow that ran, when known (used to draw it).
    """

    __slots__ = (
        "_by_name",
        "_chain",
        "_index",
        "_odd",
        "_record",
        "_steps",
        "duration",
        "flow",
        "output",
        "success",
    )

    def __init__(
        self,
        success: bool,
        steps: list[StepRun],
        output: Any,
        duration: float,
        flow: Flow | None = None,
    ) -> None:
        self.success = success
        self._steps: list[StepRun] | None = steps
        #: Until ``steps`` is first read, for a run of a chain (see ``chain_run``).
        self._chain: ChainInfo | None = None
        self._index = 0
        self._record: tuple[Any, ...] = ()
        self._odd: dict[int, EventResult | EventRun] | None = None
        self.output = output
        self.duration = duration
        self.flow = flow
        self._by_name: dict[str, StepRun] | None = None

    @property
    def steps(self) -> list[StepRun]:
        """Every step, in text order, each with its status."""
        steps = self._steps
        if steps is None:
            # Made with no lock held (a failure's reason may call a user's __repr__), from
            # fields that never change; the first thread to finish gives every reader its
            # list.
            assert self._chain is not None
            made = _chain_steps(self._chain, self._index, self._record, self._odd)
            with _making_steps:
                steps = self._steps
                if steps is None:
                    steps = self._steps = made
        return steps

    @steps.setter
    def steps(self, steps: list[StepRun]) -> None:
        self._steps = steps

    @property
    def failed(self) -> list[StepRun]:
        """The ``FAILED`` steps whose failure was not tolerated, in text order."""
        return [s for s in self.steps if s.status is StepStatus.FAILED and not s.handled]

    def __getitem__(self, name: str) -> StepRun:
        """The step called ``name`` (``run["Pack#2"]``).

        Raises:
            KeyError: no step has that name; the message lists the names.
        """
        if self._by_name is None or len(self._by_name) != len(self.steps):
            self._by_name = {s.name: s for s in self.steps}
        try:
            return self._by_name[name]
        except KeyError:
            names = ", ".join(s.name for s in self.steps) or "none"
            raise KeyError(f"no step named {name!r} in this flow run (steps: {names})") from None

    def summary(self) -> str:
        """One line per step: name, status, attempts, duration and reason."""
        if not self.steps:
            return ""
        width = max(len(s.name) for s in self.steps)
        lines = []
        for s in self.steps:
            status = s.status.name + (" (handled)" if s.handled else "")
            attempts = f"{s.attempts} attempt{'' if s.attempts == 1 else 's'}"
            line = f"{s.name:<{width}}  {status:<20}  {attempts:<12}  {s.duration:9.3f}s"
            if s.reason:
                line += f"  {s.reason}"
            lines.append(line.rstrip())
        return "\n".join(lines)

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.status.value] = counts.get(s.status.value, 0) + 1
        detail = ", ".join(f"{n} {status}" for status, n in counts.items())
        return (
            f"FlowRun({'success' if self.success else 'failure'}, {len(self.steps)} steps"
            f"{': ' + detail if detail else ''}, duration={self.duration:.6f})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return FlowRun, (self.success, self.steps, self.output, self.duration, self.flow)

    # -- pictures --------------------------------------------------------------------------
    def to_dot(self) -> str:
        """The flow's graph in Graphviz DOT, each step filled by its status.

        Without the flow (``flow`` is None), the steps are drawn in text order, unlinked.
        """
        from .flow._model import render_dot

        fills = [_colour(s) for s in self.steps]
        notes = [s.status.value + (" (handled)" if s.handled else "") for s in self.steps]
        if self.flow is not None and self.flow.step_count == len(self.steps):
            return render_dot(self.flow, fills, notes)
        lines = [
            "digraph flow_run {",
            "  rankdir=LR;",
            '  node [shape=box, style="rounded,filled"];',
        ]
        for index, (s, fill, note) in enumerate(zip(self.steps, fills, notes, strict=True)):
            label = (s.name + "\n" + note).replace("\\", "\\\\").replace('"', '\\"')
            label = label.replace("\n", "\\n")
            lines.append(f'  s{index} [label="{label}", fillcolor="{fill}"];')
        lines.append("}")
        return "\n".join(lines) + "\n"

    def to_svg(self) -> str:
        """A self-contained SVG timeline: one row per step in text order, a bar from its
        start for its duration coloured by status, a tooltip with attempts and duration,
        a time axis in seconds and a legend."""
        return _Timeline(self).render()


class _Timeline:
    """The geometry of :meth:`FlowRun.to_svg`.

    Rows are ``ROW`` pixels apart; in a long run, a band repeating the axis' labels comes
    before every ``EVERY``-th row, so a screenful of rows always shows the time scale.
    """

    ROW = 20
    BAR = 12
    TOP = 52
    TRACK = 640
    EVERY = 25
    BAND = 16
    CHAR = 7  # an estimate of one character's width at 12px, for the label column

    def __init__(self, run: FlowRun) -> None:
        self.run = run
        longest = max((len(s.name) for s in run.steps), default=4)
        self.label_width = min(max(self.CHAR * longest + 24, 90), 320)
        # Longer names are cut to fit, with an ellipsis; the tooltip has them whole.
        self.max_label = (self.label_width - 16) // self.CHAR
        ends = [s.started + s.duration for s in run.steps if s.started is not None]
        self.span = max([run.duration, *ends, 1e-9])
        self.tick = _tick_step(self.span)
        self.span = max(self.span, self.tick)  # at least one tick past zero
        self.width = self.label_width + self.TRACK + 40
        rows = len(run.steps)
        self.axis_bottom = self.y(rows - 1) + self.ROW if rows else self.TOP
        self.height = self.axis_bottom + 70

    def y(self, row: int) -> int:
        """The top of row ``row`` (the bands before it included)."""
        return self.TOP + row * self.ROW + self.BAND * (row // self.EVERY)

    def x(self, seconds: float) -> float:
        return self.label_width + self.TRACK * seconds / self.span

    def ticks(self) -> list[tuple[float, str]]:
        """Each tick's x and its label, in seconds."""
        count = math.floor(self.span / self.tick + 1e-9)
        return [
            (self.x(n * self.tick), escape(f"{_round(n * self.tick):g} s"))
            for n in range(count + 1)
        ]

    def render(self) -> str:
        run = self.run
        status = "succeeded" if run.success else "failed"
        title = f"Flow run {status} in {run.duration:.3f} s, {len(run.steps)} steps"
        out = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.width}" '
            f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" '
            'font-family="Helvetica, Arial, sans-serif" font-size="12">',
            f"<title>{escape(title)}</title>",
            f'<rect width="{self.width}" height="{self.height}" fill="#ffffff"/>',
            f'<text x="10" y="20" font-size="14" font-weight="bold">{escape(title)}</text>',
        ]
        # Stripes first, then the grid over them, then the steps' labels and bars on top.
        out.append('<g class="stripes" fill="#f4f4f4">')
        out.extend(
            f'<rect x="0" y="{self.y(row)}" width="{self.width}" height="{self.ROW}"/>'
            for row in range(1, len(run.steps), 2)
        )
        out.append("</g>")
        out.extend(self.axis())
        out.extend(self.bands())
        for row, step in enumerate(run.steps):
            out.extend(self.row(row, step))
        out.extend(self.legend())
        out.append("</svg>")
        return "\n".join(out) + "\n"

    def axis(self) -> list[str]:
        out = ['<g class="axis" stroke="#d9d9d9" font-size="10">']
        for x, label in self.ticks():
            out.append(
                f'<line x1="{x:.1f}" y1="{self.TOP - 6}" x2="{x:.1f}" y2="{self.axis_bottom}"/>'
            )
            for y in (self.TOP - 10, self.axis_bottom + 14):
                out.append(
                    f'<text x="{x:.1f}" y="{y}" text-anchor="middle" stroke="none" '
                    f'fill="#555555">{label}</text>'
                )
        out.append("</g>")
        return out

    def bands(self) -> list[str]:
        """The axis' labels again before every ``EVERY``-th row of a long run."""
        rows = range(self.EVERY, len(self.run.steps), self.EVERY)
        if not rows:
            return []
        out = ['<g class="axis-repeat" font-size="10" fill="#555555">']
        for row in rows:
            top = self.y(row) - self.BAND
            out.append(
                f'<rect x="{self.label_width}" y="{top}" width="{self.TRACK}" '
                f'height="{self.BAND}" fill="#ffffff" opacity="0.85"/>'
            )
            out.extend(
                f'<text x="{x:.1f}" y="{top + 12}" text-anchor="middle">{label}</text>'
                for x, label in self.ticks()
            )
        out.append("</g>")
        return out

    def row(self, row: int, step: StepRun) -> list[str]:
        top = self.y(row)
        middle = top + self.ROW / 2
        label = step.name
        if len(label) > self.max_label:
            label = label[: self.max_label - 1] + "\u2026"
        handled = " (handled)" if step.handled else ""
        tooltip = f"{step.name}: {step.status.value}{handled}, {step.attempts} attempt"
        tooltip += "" if step.attempts == 1 else "s"
        tooltip += f", {step.duration:.3f} s"
        if step.started is not None:
            tooltip += f", started at {step.started:.3f} s"
        if step.reason:
            tooltip += f" ({step.reason})"
        out = [
            f'<g class="step" data-status={quoteattr(step.status.name)}>',
            f"<title>{escape(tooltip)}</title>",
            f'<text x="{self.label_width - 8}" y="{middle + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>",
        ]
        if step.started is None:
            # Not run: an empty bar at the start keeps one bar per row, and a word says why.
            x, width = self.x(0), 0.0
            out.append(
                f'<text x="{x + 4:.1f}" y="{middle + 4:.1f}" fill="#777777" '
                f'font-style="italic">{escape(step.status.value)}</text>'
            )
        else:
            x = self.x(step.started)
            width = max(self.x(step.started + step.duration) - x, 1.0)
            if step.attempts > 1:
                # Retries (or one task per item after |=>) show beside the bar.
                out.append(
                    f'<text class="attempts" x="{x + width + 4:.1f}" y="{middle + 4:.1f}" '
                    f'font-size="10" fill="#555555">\u00d7{step.attempts}</text>'
                )
        out.append(
            f'<rect class="bar" x="{x:.1f}" y="{middle - self.BAR / 2:.1f}" '
            f'width="{width:.1f}" height="{self.BAR}" rx="2" fill="{_colour(step)}"/>'
        )
        out.append("</g>")
        return out

    def legend(self) -> list[str]:
        y = self.axis_bottom + 40
        entries = [(status.value, colour) for status, colour in _COLOURS.items()]
        entries.insert(2, ("failed (handled)", _TOLERATED_COLOUR))
        out = ['<g class="legend">']
        x = 10.0
        for label, colour in entries:
            out.append(f'<rect x="{x:.0f}" y="{y}" width="12" height="12" fill="{colour}"/>')
            out.append(f'<text x="{x + 17:.0f}" y="{y + 10}">{escape(label)}</text>')
            x += 32 + 6.5 * len(label)
        out.append("</g>")
        return out


def _tick_step(span: float) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving at most about 10 ticks."""
    raw = span / 8
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return factor * power
    return 10 * power  # pragma: no cover - the loop always returns


def _round(value: float) -> float:
    """``value`` without the float noise a multiplication leaves (0.30000000000000004)."""
    return float(f"{value:.6g}")
