"""Module-level events and plain functions for ``benchmarks/run.py``.

They live in their own module, not in the script, so that process pools (which use the ``spawn``
start method) can import them by reference in the workers. ``run.py`` puts this directory on
``sys.path``; spawned workers inherit that path from the parent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from event_pipeline import AsyncExecutor, EventBase, Flow, Progress, RetryPolicy
from event_pipeline.flow import pipe, step

THREADS = 4
PROCESSES = 2

#: Seconds of "work" per attempt of the retries figure.
WORK_SECONDS = 0.005
#: The backoff before the one retry of a failing task of the retries figure.
BACKOFF_SECONDS = 0.05
#: Attempts of the async figure run at once, and how long each one sleeps.
ASYNC_WORKERS = 1000
ASYNC_SLEEP = 0.01
#: The timeout of the timeout-overhead figure's events: far beyond any trivial task.
TIMEOUT_SECONDS = 60


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


class TrivialThreadStop(EventBase):
    """``TrivialThread`` with ``stop_on_exception=True``: sent unbatched, one task per item."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}
    stop_on_exception = True

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialThreadStopTimeout(EventBase):
    """``TrivialThreadStop`` with a timeout that never fires: the only difference is ``timeout``."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}
    stop_on_exception = True
    timeout = TIMEOUT_SECONDS

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class SubmitRunsPool(ThreadPoolExecutor):
    """A thread pool whose ``submit`` runs the work item at once, in the calling thread.

    Benchmark-only: it keeps every cost of the coordinator (deadlines included: it is a
    thread pool, where timeouts are enforced) and removes the thread hand-offs, whose
    swings are many times larger than the timeout machinery being measured.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


class TrivialSubmitStop(EventBase):
    """Unbatched (``stop_on_exception``) on ``SubmitRunsPool``."""

    executor = SubmitRunsPool
    executor_config = {"max_workers": THREADS}
    stop_on_exception = True

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialSubmitStopTimeout(EventBase):
    """``TrivialSubmitStop`` with a timeout that never fires: the only difference."""

    executor = SubmitRunsPool
    executor_config = {"max_workers": THREADS}
    stop_on_exception = True
    timeout = TIMEOUT_SECONDS

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialThreadTimeout(EventBase):
    """``TrivialThread`` with a timeout that never fires (unbatched because of the timeout)."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}
    timeout = TIMEOUT_SECONDS

    def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialAsync(EventBase):
    """A trivial async event on ``AsyncExecutor(max_workers=THREADS)``."""

    executor = AsyncExecutor
    executor_config = {"max_workers": THREADS}

    async def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class TrivialAsyncTimeout(EventBase):
    """``TrivialAsync`` with a timeout that never fires."""

    executor = AsyncExecutor
    executor_config = {"max_workers": THREADS}
    timeout = TIMEOUT_SECONDS

    async def process(self, x: Any) -> tuple[bool, Any]:
        return True, x


class SleepAsync(EventBase):
    """Awaits ``asyncio.sleep(ASYNC_SLEEP)``; ``ASYNC_WORKERS`` attempts at once."""

    executor = AsyncExecutor
    executor_config = {"max_workers": ASYNC_WORKERS}

    async def process(self, x: Any) -> tuple[bool, Any]:
        await asyncio.sleep(ASYNC_SLEEP)
        return True, x


# ---- flows ------------------------------------------------------------------------------


class Inc(EventBase):
    """Adds one, inline: the body of every step of the inline flow."""

    def process(self, x: int) -> tuple[bool, int]:
        return True, x + 1


def _inline_step(index: int) -> type[EventBase]:
    # Ten distinct module-level classes (Inc0 .. Inc9), so the steps are ten events, as in a
    # real flow, and each pickles by reference.
    name = f"Inc{index}"
    cls = type(name, (Inc,), {"__module__": __name__, "__qualname__": name})
    globals()[name] = cls
    return cls


#: The ten events of the inline flow, in order.
INLINE_STEPS: tuple[type[EventBase], ...] = tuple(_inline_step(i) for i in range(10))
#: ``Inc0 |-> Inc1 |-> ... |-> Inc9``: x in, x + 10 out.
INLINE_FLOW: Flow = step(INLINE_STEPS[0]).then(*(pipe(e) for e in INLINE_STEPS[1:]))


class IncThreadA(EventBase):
    """Adds one on a four-thread pool (the first of the three thread-pool flow steps)."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": THREADS}

    def process(self, x: int) -> tuple[bool, int]:
        return True, x + 1


class IncThreadB(IncThreadA):
    """The second thread-pool flow step (same pool: same executor class and config)."""


class IncThreadC(IncThreadA):
    """The third thread-pool flow step."""


#: The three thread-pool events, in flow order.
THREAD_STEPS: tuple[type[EventBase], ...] = (IncThreadA, IncThreadB, IncThreadC)
#: ``IncThreadA |-> IncThreadB |-> IncThreadC``: x in, x + 3 out.
THREAD_FLOW: Flow = step(IncThreadA).then(pipe(IncThreadB), pipe(IncThreadC))
#: ``Inc0 |-> Inc1 |-> Inc2``: the inline three-step flow (x in, x + 3 out).
INLINE_FLOW3: Flow = step(INLINE_STEPS[0]).then(pipe(INLINE_STEPS[1]), pipe(INLINE_STEPS[2]))


# ---- hooks and progress -----------------------------------------------------------------


class NullHook:
    """A hook with all five methods, each doing nothing."""

    def on_retry(self, retry: Any) -> None:
        pass

    def on_result(self, result: Any) -> None:
        pass

    def on_run(self, run: Any) -> None:
        pass

    def on_step(self, step: Any) -> None:
        pass

    def on_flow(self, run: Any) -> None:
        pass


class ProgressSink:
    """A ``progress=`` callable that keeps the last snapshot and counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.last: Progress | None = None

    def __call__(self, snapshot: Progress) -> None:
        self.calls += 1
        self.last = snapshot
