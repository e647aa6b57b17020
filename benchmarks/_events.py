"""Module-level events and plain functions for ``benchmarks/run.py``.

They live in their own module, not in the script, so that process pools (which use the ``spawn``
start method) can import them by reference in the workers. ``run.py`` puts this directory on
``sys.path``; spawned workers inherit that path from the parent.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from event_pipeline import EventBase, RetryPolicy

THREADS = 4
PROCESSES = 2

#: Seconds of "work" per attempt of the retries figure.
WORK_SECONDS = 0.005
#: The backoff before the one retry of a failing task of the retries figure.
BACKOFF_SECONDS = 0.05


def trivial(x: Any) -> tuple[bool, Any]:
    """The raw function the executors run: the same body as every ``Trivial*.process``."""
    return True, x


class Trivial(EventBase):
    """A trivial event on the default (inline) executor."""

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialThread(EventBase):
    """A trivial event on a four-thread pool."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialThreadWithPolicy(EventBase):
    """``TrivialThread`` with a retry policy that is configured but never triggers."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}
    retry_policy = RetryPolicy()

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialProcess(EventBase):
    """A trivial event on a two-process pool (the runner uses the ``spawn`` start method)."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": PROCESSES}

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


# Attempts per input index of FlakyThread, so that each failing index fails exactly once.
# Guarded by a lock because four worker threads update it; reset between repeats.
ATTEMPTS: dict[int, int] = {}
ATTEMPTS_LOCK = threading.Lock()


def fails_first_attempt(index: int) -> bool:
    """Whether ``index`` belongs to the deterministic 30 % that fail on their first attempt."""
    return index % 10 < 3


def reset_attempts() -> None:
    """Forget every attempt recorded by ``FlakyThread``."""
    with ATTEMPTS_LOCK:
        ATTEMPTS.clear()


class FlakyThread(EventBase):
    """Works for ``WORK_SECONDS``; 30 % of the indices raise on their first attempt."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}
    retry_policy = RetryPolicy(
        max_attempts=2, backoff_factor=BACKOFF_SECONDS, max_backoff=BACKOFF_SECONDS
    )

    def process(self, index: int) -> tuple[bool, Any]:
        time.sleep(WORK_SECONDS)
        with ATTEMPTS_LOCK:
            attempt = ATTEMPTS.get(index, 0) + 1
            ATTEMPTS[index] = attempt
        if attempt == 1 and fails_first_attempt(index):
            raise ConnectionError(f"index {index} fails its first attempt")
        return True, index
