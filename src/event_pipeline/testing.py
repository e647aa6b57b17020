"""Helpers for the test suites of applications that use event_pipeline.

:func:`instant_retries` makes every retry happen at once (and can cap attempts) for every
event and every runner, without touching event classes::

    from event_pipeline.testing import instant_retries

    with instant_retries():
        run = MyFlakyEvent.run()    # retries without waiting for its backoff

As a pytest fixture::

    @pytest.fixture
    def fast_retries():
        with instant_retries():
            yield
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ._retry import RetryOverride, retry_overrides
from .exceptions import ImproperlyConfigured

__all__ = ["instant_retries"]


@contextmanager
def instant_retries(max_attempts: int | None = None) -> Iterator[None]:
    """Make every backoff wait zero, and optionally cap attempts, while the block runs.

    Applies to every event and every runner in the process, threads included; nested
    blocks stack (the innermost wins). The previous behaviour is restored on exit, even
    when the block raises.

    Args:
        max_attempts: if given, no task makes more attempts than this, whatever its
            retry policy allows (a policy that allows fewer keeps its own limit).

    Raises:
        ImproperlyConfigured: ``max_attempts`` is not an int greater than 0.
    """
    if max_attempts is not None and (
        not isinstance(max_attempts, int) or isinstance(max_attempts, bool) or max_attempts < 1
    ):
        raise ImproperlyConfigured(
            f"instant_retries: max_attempts must be an int greater than 0, got {max_attempts!r}"
        )
    override = RetryOverride(max_attempts=max_attempts)
    retry_overrides.push(override)
    try:
        yield
    finally:
        retry_overrides.remove(override)
