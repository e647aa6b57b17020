"""Module-level events for tests/test_async_events.py and tests/test_timeouts.py.

Process-pool workers import this module, so every event that runs there is defined at module
level. Events that record what happened in-process (attempt times, cancellations, how many
coroutines ran at once) keep it in module-level tables keyed by a per-test key, so tests never
see each other's traces. Process-pool events record in files, since each attempt may run in
another process.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from event_pipeline import (
    EventBase,
    EventExecutionEvaluationState,
    ExecutorInitializerConfig,
    RetryPolicy,
    event,
)

_lock = threading.Lock()
#: (what, key, time.monotonic()) tuples, by test key.
TRACE: dict[str, list[tuple[str, Any, float]]] = defaultdict(list)
#: Attempts made per (test key, input).
ATTEMPTS: dict[tuple[str, Any], int] = defaultdict(int)
#: Coroutines of a test running right now, and the most seen at once.
RUNNING: dict[str, int] = defaultdict(int)
PEAK: dict[str, int] = defaultdict(int)


def trace(key: str, what: str, item: Any = None) -> None:
    with _lock:
        TRACE[key].append((what, item, time.monotonic()))


def count_attempt(key: str, item: Any) -> int:
    """Count an attempt of ``item`` under ``key``; return its number (1-based)."""
    with _lock:
        ATTEMPTS[key, item] += 1
        return ATTEMPTS[key, item]


def forget(key: str) -> None:
    """Drop every trace recorded under ``key``."""
    with _lock:
        TRACE.pop(key, None)
        RUNNING.pop(key, None)
        PEAK.pop(key, None)
        for k in [k for k in ATTEMPTS if k[0] == key]:
            del ATTEMPTS[k]


# -- async events (class-based and @event) ----------------------------------------------------


class Double(EventBase):
    """Twice its argument, after sleeping ``delay`` seconds on the loop."""

    async def process(self, x: int, delay: float = 0.0) -> tuple[bool, int]:
        await asyncio.sleep(delay)
        return True, 2 * x


@event
async def triple(x: int) -> tuple[bool, int]:
    """Three times its argument (a bare @event on an async def)."""
    await asyncio.sleep(0)
    return True, 3 * x


@event(max_workers=2, retry_policy={"max_attempts": 3, "backoff_factor": 0.01})
async def flaky_once(key: str, item: int) -> tuple[bool, int]:
    """Raises ConnectionError on the first attempt of each item, then succeeds."""
    if count_attempt(key, item) == 1:
        raise ConnectionError(f"first attempt of {item}")
    await asyncio.sleep(0)
    return True, item


class Judged(EventBase):
    """``(x >= 0, x)``: a negative input is a failed task (not an exception)."""

    async def process(self, x: int) -> tuple[bool, int]:
        await asyncio.sleep(0)
        return x >= 0, x


class JudgedPartial(Judged):
    execution_evaluation_state = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS


class StopsOnError(EventBase):
    """Raises ValueError for a negative input; the run stops there."""

    stop_on_exception = True
    executor_config = ExecutorInitializerConfig(max_workers=1)

    async def process(self, x: int, delay: float = 0.0) -> tuple[bool, int]:
        await asyncio.sleep(delay)
        if x < 0:
            raise ValueError(f"negative: {x}")
        return True, x


class BadShape(EventBase):
    """Returns something that is not ``(bool, value)``."""

    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=0.0)

    async def process(self) -> Any:
        return "not a pair"


class BacksOff(EventBase):
    """One coroutine at a time. The item ``"slow"`` fails once and backs off 1 s; the others
    take 10 ms. Every attempt's start and end is traced."""

    executor_config = ExecutorInitializerConfig(max_workers=1)
    retry_policy = RetryPolicy(max_attempts=2, backoff_factor=1.0)

    async def process(self, key: str, item: str) -> tuple[bool, str]:
        attempt = count_attempt(key, item)
        trace(key, "start", (item, attempt))
        if item == "slow" and attempt == 1:
            trace(key, "end", (item, attempt))
            raise ConnectionError("the first attempt fails")
        await asyncio.sleep(0.01)
        trace(key, "end", (item, attempt))
        return True, item


async def _counted(key: str, seconds: float) -> None:
    with _lock:
        RUNNING[key] += 1
        PEAK[key] = max(PEAK[key], RUNNING[key])
    try:
        await asyncio.sleep(seconds)
    finally:
        with _lock:
            RUNNING[key] -= 1


class ThreeAtOnce(EventBase):
    """Counts how many of its coroutines run at once (AsyncExecutor(max_workers=3))."""

    executor_config = ExecutorInitializerConfig(max_workers=3)

    async def process(self, key: str, seconds: float) -> tuple[bool, None]:
        await _counted(key, seconds)
        return True, None


class DefaultBound(EventBase):
    """The same on the default AsyncExecutor (max_workers left EMPTY: 100)."""

    async def process(self, key: str, seconds: float) -> tuple[bool, None]:
        await _counted(key, seconds)
        return True, None


# -- synchronous events for flows that mix both kinds ----------------------------------------


class Words(EventBase):
    """Splits a sentence (inline)."""

    def process(self, text: str) -> tuple[bool, list[str]]:
        return True, text.split()


class Upper(EventBase):
    """Upper-cases a word on a thread pool."""

    executor = ThreadPoolExecutor
    executor_config = ExecutorInitializerConfig(max_workers=2)

    def process(self, word: str) -> tuple[bool, str]:
        return True, word.upper()


class Decorate(EventBase):
    """Wraps a word in brackets on the loop."""

    async def process(self, word: str) -> tuple[bool, str]:
        await asyncio.sleep(0.001)
        return True, f"[{word}]"


class Join(EventBase):
    """Joins a list of words (inline)."""

    def process(self, words: list[str]) -> tuple[bool, str]:
        return True, " ".join(words)


class AsyncMeet(EventBase):
    """Traces when it runs on the loop."""

    async def process(self, key: str) -> tuple[bool, str]:
        trace(key, "async-start")
        await asyncio.sleep(0.2)
        trace(key, "async-end")
        return True, "async"


class ThreadMeet(EventBase):
    """Traces when it runs on a thread."""

    executor = ThreadPoolExecutor
    executor_config = ExecutorInitializerConfig(max_workers=1)

    def process(self, key: str) -> tuple[bool, str]:
        trace(key, "thread-start")
        time.sleep(0.2)
        trace(key, "thread-end")
        return True, "thread"


# -- timeouts -------------------------------------------------------------------------------


class SleepsOnLoop(EventBase):
    """Sleeps ``seconds`` on the loop (``timeout`` 0.2 s), tracing a cancellation it sees."""

    timeout = 0.2

    async def process(self, key: str, seconds: float) -> tuple[bool, float]:
        count_attempt(key, "attempt")
        trace(key, "start")
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            trace(key, "cancelled")
            raise
        trace(key, "end")
        return True, seconds


class SleepsOnLoopRetried(SleepsOnLoop):
    """The same, retried on any exception (TimeoutError included): 3 attempts."""

    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=0.01)


class SleepsOnLoopNotRetried(SleepsOnLoop):
    """The same, retried only on ConnectionError: a TimeoutError ends the task."""

    retry_policy = RetryPolicy(
        max_attempts=3, backoff_factor=0.01, retry_on_exceptions=[ConnectionError]
    )


@event(timeout=0.2)
async def sleeps_decorated(seconds: float) -> tuple[bool, float]:
    """@event(timeout=...) on an async def."""
    await asyncio.sleep(seconds)
    return True, seconds


class SlowOnLoop(EventBase):
    """An async event with no timeout of its own (flows give it one)."""

    async def process(self, seconds: float) -> tuple[bool, float]:
        await asyncio.sleep(seconds)
        return True, seconds


class SleepsInThread(EventBase):
    """Sleeps in a thread-pool worker past its 0.3 s timeout; traces when it really ends."""

    executor = ThreadPoolExecutor
    executor_config = ExecutorInitializerConfig(max_workers=1)
    timeout = 0.3

    def process(self, key: str, seconds: float) -> tuple[bool, float]:
        trace(key, "start")
        time.sleep(seconds)
        trace(key, "end")
        return True, seconds


PROCESSES = ExecutorInitializerConfig(max_workers=2)


class SleepsInProcess(EventBase):
    """Sleeps ``seconds`` in a worker process (timeout 1.5 s). Each attempt appends its pid
    to ``<directory>/<tag>`` so the test can tell attempts and workers apart."""

    executor = ProcessPoolExecutor
    executor_config = PROCESSES
    timeout = 1.5

    def process(self, directory: str, tag: str, seconds: float) -> tuple[bool, str]:
        with open(os.path.join(directory, tag), "a") as file:
            file.write(f"{os.getpid()}\n")
        time.sleep(seconds)
        return True, tag


class BesideInProcess(EventBase):
    """Shares SleepsInProcess's pool (same class and config) with no timeout of its own:
    sleeps ``innocent_seconds``, appending its pid to ``<directory>/innocent`` per attempt."""

    executor = ProcessPoolExecutor
    executor_config = PROCESSES

    def process(self, directory: str, innocent_seconds: float) -> tuple[bool, str]:
        with open(os.path.join(directory, "innocent"), "a") as file:
            file.write(f"{os.getpid()}\n")
        time.sleep(innocent_seconds)
        return True, "innocent"


class Inline(EventBase):
    """A synchronous event on DefaultExecutor, which cannot enforce a timeout."""

    def process(self, seconds: float) -> tuple[bool, float]:
        time.sleep(seconds)
        return True, seconds
