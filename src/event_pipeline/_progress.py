"""Progress of a long call: a snapshot record, a counter that paces snapshots, a line drawer.

Three small pieces, each usable alone::

    runner loop ─► ProgressTracker ─(Progress, paced)─► sink
                     submitted(n)                        a user's callable, or
                     task_done(failed)                   ProgressLine.update ─► stderr
                     task_retried()
                     tick()   (every wake-up of the loop)
                     finish() (once, at the end)

The tracker owns the pacing (at most 10 snapshots a second, at least one a second while work
goes on, one at the end); :class:`ProgressLine` also refuses to redraw more than 10 times a
second, so it can be fed directly by anything. Both take their clock as a ``monotonic``
callable, so tests drive time and never sleep.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

__all__ = ["Progress", "ProgressLine", "ProgressTracker", "count_lines"]

#: The shortest time between two snapshots or redraws: at most 10 a second.
MIN_INTERVAL = 0.1
#: The longest time between two snapshots while work goes on: at least one a second.
MAX_INTERVAL = 1.0
# A tick that finds this much time gone sends a snapshot: with ticks at most 0.1 s apart,
# the next snapshot can then come no later than MAX_INTERVAL after the previous one.
_HEARTBEAT = MAX_INTERVAL - MIN_INTERVAL
# Clock readings are floats: 0.1 added ten times is a hair under 1.0.
_SLACK = 1e-9


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot of a call's progress, as passed to ``Runner(progress=callable)``.

    Attributes:
        done: tasks finished so far, failed ones included.
        failed: tasks finished as failures (an exception after the last attempt, or a
            ``(False, value)`` return).
        retried: retries scheduled so far (every attempt after a task's first).
        in_flight: tasks taken from the input and not finished yet: running, waiting for
            their retry, or waiting for a worker.
        total: the number of tasks of the call when known in advance (the input has a
            ``len()``), else ``None``.
        elapsed: seconds since the call started.
        rate: tasks finished per second since the call started (``done / elapsed``;
            0.0 before any time has passed).
    """

    done: int
    failed: int
    retried: int
    in_flight: int
    total: int | None
    elapsed: float
    rate: float


class ProgressTracker:
    """Counts a call's tasks and hands paced :class:`Progress` snapshots to a sink.

    The runner calls :meth:`submitted` when it takes tasks from the input, :meth:`task_done`
    when a task's final outcome is known, :meth:`task_retried` when it schedules a retry,
    :meth:`tick` on every wake-up of its loop and :meth:`finish` once at the end.

    Pacing: a snapshot goes to ``sink`` when the counts changed and at least 0.1 s passed
    since the previous one (so at most 10 a second), and on :meth:`tick` when 0.9 s passed
    with no snapshot (so at least one a second, counts changed or not). Only
    :meth:`tick` can keep the second promise when no task finishes for a while: the caller
    must call it at least every 0.1 s while work goes on — the runner's loop wakes at least
    that often. :meth:`finish` always sends one last snapshot and turns later calls into
    no-ops.

    Not thread-safe: call it from one thread (the runner's driving thread), or guard it.
    An exception raised by ``sink`` propagates to the caller of the method that called it.

    Args:
        sink: receives each snapshot (a user's callable, or :meth:`ProgressLine.update`).
        total: the number of tasks when known in advance, else ``None``.
        monotonic: the clock, in seconds (default :func:`time.monotonic`).
    """

    __slots__ = (
        "_changed",
        "_finished",
        "_last",
        "_monotonic",
        "_sink",
        "_started",
        "done",
        "failed",
        "in_flight",
        "retried",
        "total",
    )

    def __init__(
        self,
        sink: Callable[[Progress], object],
        *,
        total: int | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sink = sink
        self._monotonic = monotonic
        self.total = total
        self.done = 0
        self.failed = 0
        self.retried = 0
        self.in_flight = 0
        self._started = monotonic()
        # The call's start counts as the last snapshot: the first comes 0.1 s after a
        # change, or after a second of nothing.
        self._last = self._started
        self._changed = False
        self._finished = False

    def submitted(self, n: int = 1) -> None:
        """Record ``n`` tasks taken from the input (now in flight)."""
        self.in_flight += n
        self._changed = True

    def task_done(self, failed: bool = False) -> None:
        """Record one task's final outcome (``failed``: it ended as a failure)."""
        self.done += 1
        if failed:
            self.failed += 1
        if self.in_flight > 0:
            self.in_flight -= 1
        self._changed = True
        now = self._monotonic()
        if now - self._last >= MIN_INTERVAL - _SLACK:
            self._emit(now)

    def task_retried(self, n: int = 1) -> None:
        """Record ``n`` retries scheduled."""
        self.retried += n
        self._changed = True

    def tick(self) -> None:
        """Send a snapshot if one is due: call at least every 0.1 s while work goes on."""
        if self._finished:
            return
        now = self._monotonic()
        since = now - self._last
        if since >= _HEARTBEAT - _SLACK or (self._changed and since >= MIN_INTERVAL - _SLACK):
            self._emit(now)

    def finish(self) -> Progress:
        """Send the final snapshot (once; later calls only return it) and return it."""
        snapshot = self.snapshot()
        if not self._finished:
            self._finished = True
            self._sink(snapshot)
        return snapshot

    def snapshot(self) -> Progress:
        """The progress now, without sending it anywhere."""
        elapsed = max(0.0, self._monotonic() - self._started)
        return Progress(
            done=self.done,
            failed=self.failed,
            retried=self.retried,
            in_flight=self.in_flight,
            total=self.total,
            elapsed=elapsed,
            rate=self.done / elapsed if elapsed > 0 else 0.0,
        )

    def _emit(self, now: float) -> None:
        if self._finished:
            return
        self._last = now
        self._changed = False
        self._sink(self.snapshot())


def eta(progress: Progress) -> float | None:
    """Seconds left at the current rate, or ``None`` when the total or the rate is unknown."""
    if progress.total is None:
        return None
    left = max(0, progress.total - progress.done)
    if left == 0:
        return 0.0
    if progress.rate <= 0:
        return None
    return left / progress.rate


def format_duration(seconds: float) -> str:
    """``seconds`` as ``M:SS`` or ``H:MM:SS`` (whole seconds)."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def render(progress: Progress) -> str:
    """The progress line's text (without ``\\r`` or padding).

    ``done 1,200/5,000 (24%) | failed 3 | retried 7 | 412.5/s | elapsed 0:02 | ETA 0:09``;
    without a known total, ``done 1,200 | failed 3 | ...`` with no percentage or ETA.
    """
    if progress.total is not None:
        share = progress.done / progress.total if progress.total else 1.0
        done = f"done {progress.done:,}/{progress.total:,} ({share:.0%})"
    else:
        done = f"done {progress.done:,}"
    parts = [
        done,
        f"failed {progress.failed:,}",
        f"retried {progress.retried:,}",
        f"{progress.rate:,.1f}/s",
        f"elapsed {format_duration(progress.elapsed)}",
    ]
    if progress.total is not None:
        left = eta(progress)
        parts.append("ETA " + ("?" if left is None else format_duration(left)))
    return " | ".join(parts)


class ProgressLine:
    """Draws :class:`Progress` snapshots as one line on a text stream, rewritten in place.

    Each redraw writes ``\\r``, the line, and enough spaces to blank what is left of a longer
    previous line, then flushes. :meth:`update` redraws at most 10 times a second and costs
    one clock reading when it does not; :meth:`close` draws the final line once and ends it
    with a newline.

    Args:
        stream: where to draw (usually ``sys.stderr``).
        monotonic: the clock, in seconds (default :func:`time.monotonic`).
    """

    __slots__ = ("_closed", "_monotonic", "_next", "_stream", "_width")

    def __init__(
        self, stream: TextIO, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._monotonic = monotonic
        self._next = float("-inf")
        self._width = 0
        self._closed = False

    def update(self, progress: Progress) -> None:
        """Redraw with ``progress`` unless the last redraw was less than 0.1 s ago."""
        now = self._monotonic()
        if now < self._next - _SLACK or self._closed:
            return
        self._next = now + MIN_INTERVAL
        self._draw(progress, end="")

    def close(self, progress: Progress) -> None:
        """Draw the final line and a newline; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self._draw(progress, end="\n")

    def _draw(self, progress: Progress, *, end: str) -> None:
        text = render(progress)
        padding = " " * max(0, self._width - len(text))
        self._width = len(text)
        self._stream.write(f"\r{text}{padding}{end}")
        self._stream.flush()


_BLANK_LINE = re.compile(rb"^[ \t\r\f\v]*\n", re.MULTILINE)


def count_lines(path: str, *, chunk_size: int = 1 << 20) -> int:
    """How many non-blank lines the file at ``path`` holds, read in chunks (flat memory).

    Raises:
        OSError: the file cannot be read.
    """
    count = 0
    carry = b""
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            # Only whole lines are counted here, so '^' always sits at a real line start.
            whole, carry = data[:cut], data[cut:]
            count += whole.count(b"\n") - len(_BLANK_LINE.findall(whole))
    if carry.strip():
        count += 1
    return count
