"""Retry schedules asserted exactly, with an injected clock and no real waiting."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from event_pipeline import EventBase, RetryPolicy, Runner
from event_pipeline._runner import Clock


class FakeClock(Clock):
    """Time moves only when the runner sleeps; every sleep is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float, wake: object = None) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wait(self, wake: threading.Event, timeout: float) -> None:
        raise AssertionError("with DefaultExecutor every work item is done when submitted")


calls: list[tuple[str, float]] = []
clock = FakeClock()


class AlwaysFails(EventBase):
    retry_policy = RetryPolicy(max_attempts=6, backoff_factor=0.1, max_backoff=0.3)

    def process(self, name: str) -> tuple[bool, Any]:
        calls.append((name, clock.now))
        raise ConnectionError(name)


@pytest.fixture(autouse=True)
def fresh_clock() -> None:
    clock.now = 1000.0
    clock.sleeps.clear()
    calls.clear()


def test_retry_schedule_is_exact() -> None:
    """Waits 0.1, 0.2, 0.3, 0.3, 0.3 between six attempts; duration is their sum."""
    with Runner._with_clock(clock) as runner:
        [result] = runner.run(AlwaysFails, "a").results
    assert [t - 1000.0 for _, t in calls] == pytest.approx([0, 0.1, 0.3, 0.6, 0.9, 1.2])
    assert clock.sleeps == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3])
    assert result.attempts == 6
    assert result.duration == pytest.approx(1.2)


def test_backoffs_interleave_across_tasks() -> None:
    """Two backing-off tasks share the waits: the runner sleeps only until the next due retry."""
    with Runner._with_clock(clock) as runner:
        run = runner.map(AlwaysFails, ["a", "b"])
    assert [r.attempts for r in run.results] == [6, 6]
    times = {name: [t - 1000.0 for n, t in calls if n == name] for name in "ab"}
    assert times["a"] == pytest.approx(times["b"])
    assert sum(clock.sleeps) == pytest.approx(1.2)


def test_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Every retry is logged with event, task id, attempt, exception type and delay."""
    runner = Runner._with_clock(clock)
    with caplog.at_level(logging.INFO, logger="event_pipeline"), runner:
        runner.run(AlwaysFails, "a")
    records = [r for r in caplog.records if r.name == "event_pipeline"]
    assert len(records) == 5
    first = records[0]
    assert first.event_name == "AlwaysFails"  # type: ignore[attr-defined]
    assert first.attempt == 1  # type: ignore[attr-defined]
    assert first.exception_type == "ConnectionError"  # type: ignore[attr-defined]
    assert first.delay == pytest.approx(0.1)  # type: ignore[attr-defined]
    assert "AlwaysFails" in first.getMessage() and "ConnectionError" in first.getMessage()
    assert first.task_id.endswith(":0")  # type: ignore[attr-defined]


def test_library_installs_only_a_null_handler() -> None:
    """The library adds no handler beyond a NullHandler."""
    handlers = logging.getLogger("event_pipeline").handlers
    assert handlers and all(type(h) is logging.NullHandler for h in handlers)
