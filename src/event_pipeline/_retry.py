"""Retry arithmetic: pure functions of (policy, retry number), plus the testing override.

Kept apart from the runner so the schedule can be tested as a table, with no executor.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from ._config import RetryPolicy

__all__ = ["RetryOverride", "backoff", "is_retryable", "retry_overrides"]

# ``2.0 ** 1024`` overflows a float, and from there on ``backoff_factor * 2 ** n`` is beyond
# any finite ``max_backoff`` for every positive factor a float can hold.
_MAX_EXPONENT = 1023


def backoff(policy: RetryPolicy, retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first retry).

    ``min(max_backoff, backoff_factor * 2 ** (retry - 1))``, computed without overflow for
    any retry number.
    """
    factor = policy.backoff_factor
    if factor == 0:
        return 0.0
    exponent = retry - 1
    if exponent > _MAX_EXPONENT:
        return float(policy.max_backoff)
    # A float product never raises: past the float range it is inf, and min() caps it.
    return float(min(policy.max_backoff, factor * 2.0**exponent))


def is_retryable(retry_on: tuple[type[BaseException], ...], exc: BaseException) -> bool:
    """Whether ``exc`` is worth a retry under a policy's ``retry_on_exceptions``.

    An empty tuple means any :class:`Exception`; subclasses of an entry count.
    """
    if not isinstance(exc, Exception):
        return False
    return not retry_on or isinstance(exc, retry_on)


@dataclass(frozen=True)
class RetryOverride:
    """An active testing mode: every backoff wait is zero, and attempts may be capped."""

    max_attempts: int | None = None


class _Overrides:
    """Process-wide stack of active testing overrides; the innermost one wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stack: list[RetryOverride] = []
        # Read without the lock on the hot path: a plain attribute read is atomic.
        self.current: RetryOverride | None = None

    def push(self, override: RetryOverride) -> None:
        with self._lock:
            self._stack.append(override)
            self.current = override

    def remove(self, override: RetryOverride) -> None:
        with self._lock:
            # Remove this very entry even if contexts were exited out of order.
            for i in range(len(self._stack) - 1, -1, -1):
                if self._stack[i] is override:
                    del self._stack[i]
                    break
            self.current = self._stack[-1] if self._stack else None


retry_overrides = _Overrides()
