"""The progress pieces: snapshots, pacing and the drawn line, all on a clock the tests drive."""

from __future__ import annotations

import dataclasses
import io
import itertools
from pathlib import Path

import pytest

from event_pipeline._progress import (
    Progress,
    ProgressLine,
    ProgressTracker,
    count_lines,
    eta,
    format_duration,
    render,
)


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    done: int = 0,
    failed: int = 0,
    retried: int = 0,
    in_flight: int = 0,
    total: int | None = None,
    elapsed: float = 0.0,
    rate: float = 0.0,
) -> Progress:
    return Progress(done, failed, retried, in_flight, total, elapsed, rate)


# -- Progress -----------------------------------------------------------------------------
def test_progress_is_a_frozen_slotted_record() -> None:
    """A snapshot cannot be changed after the fact and carries no per-instance dict."""
    progress = make(done=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        progress.done = 2  # type: ignore[misc]
    assert not hasattr(progress, "__dict__")
    assert [f.name for f in dataclasses.fields(Progress)] == [
        "done", "failed", "retried", "in_flight", "total", "elapsed", "rate",
    ]


def test_progress_compares_by_value() -> None:
    """Two snapshots with the same numbers are equal, so tests can compare them whole."""
    assert make(done=3, total=5) == make(done=3, total=5)
    assert Progress.__doc__ and "done" in Progress.__doc__


# -- ProgressTracker ----------------------------------------------------------------------
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def seen() -> list[Progress]:
    return []


@pytest.fixture
def tracker(clock: FakeClock, seen: list[Progress]) -> ProgressTracker:
    return ProgressTracker(seen.append, total=10, monotonic=clock)


def test_tracker_counts_tasks(tracker: ProgressTracker, clock: FakeClock) -> None:
    """done counts failures too; in_flight is what was submitted and has not finished."""
    tracker.submitted(4)
    tracker.task_done(failed=False)
    tracker.task_done(failed=True)
    tracker.task_retried()
    tracker.task_retried(2)
    clock.advance(2.0)
    assert tracker.snapshot() == Progress(
        done=2, failed=1, retried=3, in_flight=2, total=10, elapsed=2.0, rate=1.0
    )


def test_tracker_snapshot_at_start_has_zero_rate(tracker: ProgressTracker) -> None:
    """Before any time passes the rate is 0.0, not a division error."""
    assert tracker.snapshot() == make(total=10)


def test_tracker_in_flight_never_goes_negative(tracker: ProgressTracker) -> None:
    """A caller that never reports submissions still gets sane numbers."""
    tracker.task_done()
    assert tracker.snapshot().in_flight == 0


def test_tracker_sends_at_most_ten_snapshots_a_second(
    tracker: ProgressTracker, clock: FakeClock, seen: list[Progress]
) -> None:
    """A thousand tasks finishing within one second give at most ten snapshots."""
    for _ in range(1000):
        clock.advance(0.001)
        tracker.task_done()
        tracker.tick()
    assert 9 <= len(seen) <= 10
    times = [p.elapsed for p in seen]
    assert all(b - a >= 0.1 - 1e-9 for a, b in itertools.pairwise(times))


def test_tracker_first_snapshot_waits_a_tenth_of_a_second(
    tracker: ProgressTracker, clock: FakeClock, seen: list[Progress]
) -> None:
    """A task finishing at once is reported on the tick 0.1 s after the start, not before."""
    tracker.task_done()
    clock.advance(0.05)
    tracker.tick()
    assert seen == []
    clock.advance(0.05)
    tracker.tick()
    assert [p.done for p in seen] == [1]


def test_tracker_reports_a_change_on_the_next_tick(
    tracker: ProgressTracker, clock: FakeClock, seen: list[Progress]
) -> None:
    """A change held back by the rate limit goes out on the first tick allowed to send it."""
    clock.advance(0.5)
    tracker.task_done()  # sent: 0.5 s since the start
    clock.advance(0.01)
    tracker.task_done()  # held back: 0.01 s since the last snapshot
    assert [p.done for p in seen] == [1]
    clock.advance(0.2)
    tracker.tick()
    assert [p.done for p in seen] == [1, 2]


def test_tracker_ticks_at_least_once_a_second_without_changes(
    tracker: ProgressTracker, clock: FakeClock, seen: list[Progress]
) -> None:
    """While nothing finishes, ticks every 0.1 s still give a snapshot each second."""
    for _ in range(50):
        clock.advance(0.1)
        tracker.tick()
    times = [0.0] + [p.elapsed for p in seen]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(seen) == 5
    assert all(0.9 - 1e-6 <= gap <= 1.0 for gap in gaps)


def test_tracker_does_not_tick_more_often_than_needed_without_changes(
    tracker: ProgressTracker, clock: FakeClock, seen: list[Progress]
) -> None:
    """Unchanged counts are not resent ten times a second: once a second is enough."""
    clock.advance(0.5)
    tracker.task_done()
    for _ in range(8):
        clock.advance(0.1)
        tracker.tick()
    assert len(seen) == 1


def test_tracker_finish_sends_once_and_stops(
    tracker: ProgressTracker, clock: FakeClock, seen: list[Progress]
) -> None:
    """finish() sends the final snapshot however recent the last one; then nothing more."""
    clock.advance(0.3)
    tracker.task_done()
    clock.advance(0.01)
    tracker.task_done()
    final = tracker.finish()
    assert seen[-1] == final and final.done == 2
    count = len(seen)
    assert tracker.finish() == final
    clock.advance(5)
    tracker.task_done()
    tracker.tick()
    assert len(seen) == count


def test_tracker_without_total(clock: FakeClock, seen: list[Progress]) -> None:
    """The total defaults to unknown."""
    tracker = ProgressTracker(seen.append, monotonic=clock)
    assert tracker.finish().total is None


def test_tracker_sink_errors_propagate(clock: FakeClock) -> None:
    """A sink that raises is the caller's business: the error reaches it."""

    def sink(progress: Progress) -> None:
        raise RuntimeError("sink broke")

    tracker = ProgressTracker(sink, monotonic=clock)
    with pytest.raises(RuntimeError, match="sink broke"):
        tracker.finish()


# -- rendering ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0:00"), (9.99, "0:09"), (61, "1:01"), (3599, "59:59"), (3600, "1:00:00"),
     (90061, "25:01:01")],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Durations read as a clock: M:SS, or H:MM:SS from an hour."""
    assert format_duration(seconds) == text


def test_eta() -> None:
    """ETA is what is left over the rate; unknown without a total or a rate; 0 when done."""
    assert eta(make(done=10, total=30, rate=5.0)) == 4.0
    assert eta(make(done=10, total=None, rate=5.0)) is None
    assert eta(make(done=0, total=30, rate=0.0)) is None
    assert eta(make(done=30, total=30, rate=0.0)) == 0.0


def test_render_with_total() -> None:
    """With a total: done/total and share, failures, retries, rate, elapsed and ETA."""
    progress = make(done=1200, failed=3, retried=7, total=5000, elapsed=2.9, rate=412.5)
    assert render(progress) == (
        "done 1,200/5,000 (24%) | failed 3 | retried 7 | 412.5/s | elapsed 0:02 | ETA 0:09"
    )


def test_render_without_total() -> None:
    """Without a total there is no share and no ETA."""
    progress = make(done=12, failed=0, retried=0, elapsed=61.0, rate=0.2)
    assert render(progress) == "done 12 | failed 0 | retried 0 | 0.2/s | elapsed 1:01"


def test_render_unknown_eta_and_empty_total() -> None:
    """No rate yet shows '?' for the ETA; an empty input is 100% done."""
    assert render(make(total=4)).endswith("ETA ?")
    assert render(make(total=0)).startswith("done 0/0 (100%)")


# -- ProgressLine ---------------------------------------------------------------------------
def test_line_redraws_at_most_ten_times_a_second(clock: FakeClock) -> None:
    """Updates every millisecond for a second draw at most ten times."""
    stream = io.StringIO()
    line = ProgressLine(stream, monotonic=clock)
    for n in range(1000):
        line.update(make(done=n))
        clock.advance(0.001)
    assert stream.getvalue().count("\r") == 10


def test_line_update_is_cheap_when_not_drawing(clock: FakeClock) -> None:
    """An update inside the interval reads the clock once and writes nothing."""
    stream = io.StringIO()
    line = ProgressLine(stream, monotonic=clock)
    line.update(make(done=1))
    written, reads = stream.getvalue(), clock.reads
    line.update(make(done=2))
    assert stream.getvalue() == written
    assert clock.reads == reads + 1


def test_line_overwrites_and_clears_leftovers(clock: FakeClock) -> None:
    """Each redraw starts with a carriage return and blanks what a longer line left."""
    stream = io.StringIO()
    line = ProgressLine(stream, monotonic=clock)
    line.update(make(done=123456, failed=123456, retried=123456, rate=99999.0))
    first = stream.getvalue()
    clock.advance(0.2)
    line.update(make(done=1))
    second = stream.getvalue()[len(first):]
    assert first.startswith("\r") and second.startswith("\r")
    assert len(second) == len(first)
    assert second.rstrip(" ") == "\r" + render(make(done=1))
    assert "\n" not in first + second


def test_line_close_draws_final_line_once(clock: FakeClock) -> None:
    """close() draws at once, ends the line, and ignores later updates and closes."""
    stream = io.StringIO()
    line = ProgressLine(stream, monotonic=clock)
    line.update(make(done=1))
    line.close(make(done=2, total=2))
    clock.advance(1)
    line.update(make(done=3))
    line.close(make(done=4))
    text = stream.getvalue()
    assert text.endswith(render(make(done=2, total=2)) + "\n")
    assert text.count("\n") == 1
    assert "done 3" not in text and "done 4" not in text


def test_line_fed_by_tracker(clock: FakeClock) -> None:
    """A tracker feeding a line: a few redraws while work goes on, one final line."""
    stream = io.StringIO()
    line = ProgressLine(stream, monotonic=clock)
    tracker = ProgressTracker(line.update, total=100, monotonic=clock)
    for _ in range(100):
        tracker.submitted()
        clock.advance(0.02)
        tracker.task_done()
        tracker.tick()
    line.close(tracker.finish())
    text = stream.getvalue()
    assert text.count("\r") <= 21
    assert text.endswith("\n")
    last = text.rsplit("\r", 1)[1]
    assert last.startswith("done 100/100 (100%) | failed 0 | retried 0 | 50.0/s")
    assert "ETA 0:00" in last


# -- count_lines ------------------------------------------------------------------------------
def test_count_lines(tmp_path: Path) -> None:
    """Non-blank lines are counted, across chunk boundaries, with or without a final newline."""
    path = tmp_path / "inputs.jsonl"
    path.write_bytes(b"1\n\n  \n[2, 3]\n\"x\"\r\n4")
    assert count_lines(str(path)) == 4
    for size in (1, 2, 3, 5, 7):
        assert count_lines(str(path), chunk_size=size) == 4
    path.write_bytes(b"")
    assert count_lines(str(path)) == 0
    path.write_bytes(b"1\n" * 10_000)
    assert count_lines(str(path), chunk_size=4096) == 10_000
