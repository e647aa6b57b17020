"""The testing mode users put in their own suites."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from event_pipeline import EventBase, ImproperlyConfigured, RetryPolicy, Runner
from event_pipeline._retry import retry_overrides
from event_pipeline._runner import Clock
from event_pipeline.testing import instant_retries


class RecordingClock(Clock):
    """Real time, but remembers every backoff the runner asks for."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float, wake: object = None) -> None:
        self.sleeps.append(seconds)


class SlowRetry(EventBase):
    retry_policy = RetryPolicy(max_attempts=4, backoff_factor=60.0)

    def process(self) -> tuple[bool, Any]:
        raise TimeoutError("always")


@pytest.fixture
def fast_retries() -> Any:
    with instant_retries():
        yield


def test_waits_become_zero(fast_retries: None) -> None:
    """A 60 s backoff costs nothing inside the block: all four attempts are made."""
    clock = RecordingClock()
    with Runner._with_clock(clock) as runner:
        [result] = runner.run(SlowRetry).results
    assert result.attempts == 4
    assert all(s == 0 for s in clock.sleeps)


def test_attempts_can_be_capped() -> None:
    """max_attempts caps every policy, but never raises a lower limit."""
    with instant_retries(max_attempts=2), Runner() as runner:
        assert runner.run(SlowRetry).results[0].attempts == 2
    with instant_retries(max_attempts=10), Runner() as runner:
        assert runner.run(SlowRetry).results[0].attempts == 4


def test_restored_after_an_exception() -> None:
    """Leaving the block by an exception restores normal behaviour."""
    with pytest.raises(KeyError), instant_retries():
        raise KeyError("boom")
    assert retry_overrides.current is None


def test_nesting_and_threads() -> None:
    """Blocks nest; the setting is process-wide, seen by other threads."""
    seen: list[Any] = []
    with instant_retries():
        with instant_retries(max_attempts=1):
            thread = threading.Thread(target=lambda: seen.append(retry_overrides.current))
            thread.start()
            thread.join(timeout=10)
            assert seen[0].max_attempts == 1
        assert retry_overrides.current is not None
        assert retry_overrides.current.max_attempts is None
    assert retry_overrides.current is None


def test_bad_cap_is_refused() -> None:
    """The cap must be a positive int."""
    with pytest.raises(ImproperlyConfigured, match="max_attempts"), instant_retries(max_attempts=0):
        pass  # pragma: no cover
