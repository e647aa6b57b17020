"""Module-level events and plain functions for ``benchmarks/peers.py``.

They live in their own module, not in the script, so that process pools (``spawn`` for the
runner, ``multiprocessing`` and ``concurrent.futures``; loky for joblib) can import them by
reference in their workers. ``peers.py`` puts this directory on ``sys.path``; workers inherit
that path from the parent. Peers (joblib, tenacity) are never imported here.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from event_pipeline import EventBase, RetryPolicy

THREADS = 4
PROCESSES = 2

#: Attempts of every task of the retries workload: it fails twice, then succeeds.
RETRY_ATTEMPTS = 3
#: ``backoff_factor`` of the retries workload: waits of 0.01 s, then 0.02 s.
RETRY_BACKOFF = 0.01
#: Seconds of work (a sleep) per attempt of the retries workload.
RETRY_WORK = 0.005


# --------------------------------------------------------------------------------------------
# Plain functions: what the peers run
# --------------------------------------------------------------------------------------------


def trivial(x: Any) -> tuple[bool, Any]:
    """The body of every trivial event, as a plain function for the peers."""
    return True, x


def nap(seconds: float) -> float:
    """Sleep; two of these at once make a process pool start both of its workers."""
    time.sleep(seconds)
    return seconds


def spin(loops: int) -> None:
    """A busy loop: CPU work that holds the GIL, with no allocation."""
    for _ in range(loops):
        pass


def busy(x: Any, loops: int) -> tuple[bool, Any]:
    """About 1 ms of CPU once ``loops`` is calibrated (see ``peers.py``)."""
    spin(loops)
    return True, x


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------


class MyEvent(EventBase):
    """A trivial event on the default (inline) executor."""

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialThread(EventBase):
    """A trivial event on a four-thread pool."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialProcess(EventBase):
    """A trivial event on a two-process pool (the runner uses the ``spawn`` start method)."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": PROCESSES}

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class NapProcess(EventBase):
    """Sleeps; used only to make the runner's two-process pool start both workers."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": PROCESSES}

    def process(self, seconds: float) -> tuple[bool, Any]:
        time.sleep(seconds)
        return True, seconds


class BusyProcess(EventBase):
    """``busy`` as an event on the two-process pool."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": PROCESSES}

    def process(self, x: Any, loops: int) -> tuple[bool, Any]:
        spin(loops)
        return True, x


class CrashProcess(EventBase):
    """Trivial, except the task whose input equals ``crash_at`` kills its worker process."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": PROCESSES}

    def process(self, x: int, crash_at: int) -> tuple[bool, Any]:
        if x == crash_at:
            os._exit(1)
        return True, x


# --------------------------------------------------------------------------------------------
# Retries: every task fails twice, then succeeds
# --------------------------------------------------------------------------------------------

# Attempts per input index, one table for the runner and one for tenacity, so that each index
# fails exactly twice on each side. Four worker threads update them; reset between repeats.
RUNNER_ATTEMPTS: dict[int, int] = {}
PEER_ATTEMPTS: dict[int, int] = {}
_ATTEMPTS_LOCK = threading.Lock()


def reset_attempts() -> None:
    """Forget every attempt recorded by ``FlakyThread`` and ``flaky``."""
    with _ATTEMPTS_LOCK:
        RUNNER_ATTEMPTS.clear()
        PEER_ATTEMPTS.clear()


def _attempt(table: dict[int, int], index: int) -> int:
    time.sleep(RETRY_WORK)
    with _ATTEMPTS_LOCK:
        attempt = table.get(index, 0) + 1
        table[index] = attempt
    if attempt < RETRY_ATTEMPTS:
        raise ConnectionError(f"index {index} fails attempt {attempt}")
    return attempt


def flaky(index: int) -> tuple[bool, Any]:
    """The peers' task: works ``RETRY_WORK`` s, raises on its first two attempts."""
    _attempt(PEER_ATTEMPTS, index)
    return True, index


class FlakyThread(EventBase):
    """``flaky`` as an event on four threads, retried with exponential backoff 0.01, 0.02 s."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}
    retry_policy = RetryPolicy(
        max_attempts=RETRY_ATTEMPTS, backoff_factor=RETRY_BACKOFF, max_backoff=1.0
    )

    def process(self, index: int) -> tuple[bool, Any]:
        _attempt(RUNNER_ATTEMPTS, index)
        return True, index
