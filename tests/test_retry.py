"""Backoff arithmetic and exception matching (SPEC §7.3), with no executor."""

from __future__ import annotations

import pytest

from event_pipeline import RetryPolicy
from event_pipeline._retry import backoff, is_retryable


@pytest.mark.parametrize(
    ("retry", "wait"),
    [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.6), (6, 3.2), (7, 5.0), (8, 5.0), (50, 5.0)],
)
def test_backoff_table(retry: int, wait: float) -> None:
    """min(max_backoff, backoff_factor * 2 ** (n - 1)), the spec's worked example."""
    assert backoff(RetryPolicy(backoff_factor=0.1, max_backoff=5.0), retry) == pytest.approx(wait)


@pytest.mark.parametrize("retry", [1023, 1024, 1025, 10_000, 10**18])
def test_backoff_never_overflows(retry: int) -> None:
    """A huge retry number waits max_backoff, without OverflowError or big numbers."""
    assert backoff(RetryPolicy(backoff_factor=7.0, max_backoff=100.0), retry) == 100.0


def test_huge_max_backoff_still_finite() -> None:
    """Even a max_backoff near the float limit gives a finite wait."""
    policy = RetryPolicy(backoff_factor=1e300, max_backoff=1.7e308)
    assert backoff(policy, 2000) == 1.7e308
    assert backoff(policy, 5) == pytest.approx(1.6e301)


def test_zero_factor_means_no_wait() -> None:
    """backoff_factor=0 retries at once."""
    assert backoff(RetryPolicy(backoff_factor=0), 10_000) == 0.0


def test_retryable_matching() -> None:
    """Empty list: any Exception; entries match subclasses; BaseExceptions never retried."""
    assert is_retryable((), ValueError())
    assert not is_retryable((), KeyboardInterrupt())
    assert is_retryable((ConnectionError,), ConnectionResetError())
    assert not is_retryable((ConnectionError,), ValueError())
    assert not is_retryable((Exception,), SystemExit())
