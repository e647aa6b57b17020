"""Module-level events for tests/test_flow_run.py: process-pool and Dask workers import them.

Events that record what happened in-process (attempt times, side effects, rendezvous) keep it
in module-level dictionaries keyed by a per-test key, so tests never see each other's traces.
Every wait here is bounded by ``WAIT`` seconds.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from event_pipeline import (
    EventBase,
    EventExecutionEvaluationState,
    ExecutorInitializerConfig,
    RetryPolicy,
    event,
)
from event_pipeline.executors.dask import DaskExecutor

#: The longest any event here waits for another one.
WAIT = 20.0

THREADS = ExecutorInitializerConfig(max_workers=4)
ONE_THREAD = ExecutorInitializerConfig(max_workers=1)
PROCESSES = ExecutorInitializerConfig(max_workers=2)
TWO_DASK_WORKERS = ExecutorInitializerConfig(max_workers=2)

# -- in-process traces, by test key -----------------------------------------------------------

_lock = threading.Lock()
#: Barriers for thread members, by key (made by the test).
BARRIERS: dict[str, threading.Barrier] = {}
#: threading.Events by key (made by the test): ``started``/``release`` pairs.
SIGNALS: dict[str, threading.Event] = {}
#: Times (time.monotonic) of each attempt, by key.
ATTEMPTS: dict[str, list[float]] = defaultdict(list)
#: Calls recorded by Record and Inline events, by key.
CALLS: dict[str, list[Any]] = defaultdict(list)


def note(key: str, value: Any) -> int:
    """Append ``value`` to ``CALLS[key]``; return how many calls there are now."""
    with _lock:
        CALLS[key].append(value)
        return len(CALLS[key])


def stamp(key: str) -> int:
    """Record the time of an attempt under ``key``; return its number (1-based)."""
    with _lock:
        ATTEMPTS[key].append(time.monotonic())
        return len(ATTEMPTS[key])


# -- concurrency probes -----------------------------------------------------------------------


class MeetBase(EventBase):
    """Waits at the in-process barrier named by its argument; returns (start, end, thread)."""

    def process(self, key: str) -> tuple[bool, Any]:
        start = time.monotonic()
        try:
            BARRIERS[key].wait()
        except threading.BrokenBarrierError:
            return False, "the other member never arrived"
        return True, (start, time.monotonic(), threading.get_ident())


class MeetA(MeetBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class MeetB(MeetBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


def rendezvous(directory: str, me: str, others: tuple[str, ...]) -> tuple[float, float, int]:
    """Touch ``directory/me`` and wait (bounded) until every one of ``others`` exists."""
    start = time.monotonic()
    Path(directory, me).touch()
    deadline = start + WAIT
    while not all(Path(directory, other).exists() for other in others):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{me}: {others} never arrived")
        time.sleep(0.002)
    return start, time.monotonic(), os.getpid()


class MeetInThread(EventBase):
    """Meets MeetInProcess through files; runs on a thread pool."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, directory: str) -> tuple[bool, Any]:
        return True, rendezvous(directory, "thread", ("process",))


class MeetInProcess(EventBase):
    """Meets MeetInThread through files; runs on a process pool."""

    executor = ProcessPoolExecutor
    executor_config = PROCESSES

    def process(self, directory: str) -> tuple[bool, Any]:
        return True, rendezvous(directory, "process", ("thread",))


class InlineWaitsForThread(EventBase):
    """Inline: succeeds only when MeetInThread has touched its file within a second."""

    def process(self, directory: str) -> tuple[bool, Any]:
        try:
            deadline = time.monotonic() + 1.0
            while not Path(directory, "thread").exists():
                if time.monotonic() > deadline:
                    return False, "the thread member had not started"
                time.sleep(0.002)
            return True, "met"
        finally:
            Path(directory, "process").touch()  # lets MeetInThread finish


class Interval(EventBase):
    """Inline: records (start, end, thread) around a short busy spell."""

    def process(self, key: str) -> tuple[bool, Any]:
        start = time.monotonic()
        while time.monotonic() - start < 0.02:
            pass
        return True, (start, time.monotonic(), threading.get_ident())


class Interval2(Interval):
    pass


# -- backoff ----------------------------------------------------------------------------------


class BacksOff(EventBase):
    """Fails its first attempt; the retry waits 1 s. One-thread pool, shared with Quick."""

    executor = ThreadPoolExecutor
    executor_config = ONE_THREAD
    retry_policy = RetryPolicy(max_attempts=2, backoff_factor=1.0)

    def process(self, key: str) -> tuple[bool, Any]:
        if stamp(key) == 1:
            raise ConnectionError("first attempt fails")
        return True, "retried"


class Quick(EventBase):
    """Records when it finished; passes its key on. Same one-thread pool as BacksOff."""

    executor = ThreadPoolExecutor
    executor_config = ONE_THREAD

    def process(self, key: str) -> tuple[bool, Any]:
        note(key, time.monotonic())
        return True, key


class BacksOffInline(EventBase):
    """Inline: fails its first attempt; the retry waits 1 s."""

    retry_policy = RetryPolicy(max_attempts=2, backoff_factor=1.0)

    def process(self, key: str) -> tuple[bool, Any]:
        if stamp(key) == 1:
            raise ConnectionError("first attempt fails")
        return True, "retried"


class QuickInline(EventBase):
    def process(self, key: str) -> tuple[bool, Any]:
        note(key, time.monotonic())
        return True, key


# -- values, failures, routes (inline) -------------------------------------------------------


class Value(EventBase):
    """Returns its argument."""

    def process(self, value: Any) -> tuple[bool, Any]:
        return True, value


class Sink(EventBase):
    """Returns what it received (a handler for arm 0)."""

    def process(self, received: Any) -> tuple[bool, Any]:
        return True, ("sink", received)


class After(EventBase):
    """Takes nothing; records that it ran."""

    def process(self) -> tuple[bool, Any]:
        return True, "after"


class Refuse(EventBase):
    """Returns (False, value): a failure that is not an exception."""

    def process(self, *args: Any) -> tuple[bool, Any]:
        return False, "refused"


class Boom(EventBase):
    """Raises ValueError."""

    def process(self, *args: Any) -> tuple[bool, Any]:
        raise ValueError("boom")


class Router(EventBase):
    """Returns its argument; ``route`` notes its call under CALLS['route'] and returns that
    value (or raises for "raise")."""

    def process(self, code: Any) -> tuple[bool, Any]:
        return True, code

    @classmethod
    def route(cls, run: Any) -> int:
        code = run.results[0].content
        note("route", (os.getpid(), threading.get_ident(), code))
        if code == "raise":
            raise LookupError("no route for you")
        return code  # type: ignore[no-any-return]


class RouterInProcess(Router):
    """Router on a process pool: its ``route`` still runs in the calling process."""

    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class Record(EventBase):
    """Records its call under CALLS['record']."""

    def process(self, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        note("record", (args, kwargs))
        return True, args


class NeedsTable(EventBase):
    """A piped record and a required keyword-only named input ``table``."""

    def process(self, record: Any, *, table: str) -> tuple[bool, Any]:
        return True, (record, table)


class Piped(EventBase):
    """A piped ``record`` and an optional ``table``."""

    def process(self, record: Any, table: str = "none") -> tuple[bool, Any]:
        return True, (record, table)


class TakesAll(EventBase):
    """Only ``**kwargs``."""

    def process(self, **kwargs: Any) -> tuple[bool, Any]:
        return True, dict(kwargs)


class Nothing(EventBase):
    """Takes nothing."""

    def process(self) -> tuple[bool, Any]:
        return True, "nothing"


@event
def tagged(value: Any, *, tag: str = "untagged") -> tuple[bool, Any]:
    return True, (tag, value)


class Items(EventBase):
    """Returns ``list(range(n))``, or ``n`` itself when it is not an int."""

    def process(self, n: Any) -> tuple[bool, Any]:
        return True, list(range(n)) if isinstance(n, int) else n


class SlowSquare(EventBase):
    """Thread pool: squares ``x`` after a pause that makes later items finish first;
    a negative ``x`` fails."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: int) -> tuple[bool, Any]:
        time.sleep(0.002 * max(0, 10 - abs(x)))
        if x < 0:
            return False, f"negative {x}"
        return True, x * x


class LenientSquare(SlowSquare):
    execution_evaluation_state = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS


class Flappy(EventBase):
    """No retry policy: raises until its attempt number under ``key`` reaches ``succeed_on``."""

    def process(self, key: str, succeed_on: int) -> tuple[bool, Any]:
        number = stamp(key)
        if number < succeed_on:
            raise ConnectionError(f"attempt {number}")
        return True, number


class Stubborn(EventBase):
    """Its own policy: two attempts, retrying ConnectionError quickly."""

    retry_policy = RetryPolicy(
        max_attempts=2, backoff_factor=0.001, retry_on_exceptions=[ConnectionError]
    )

    def process(self, key: str, succeed_on: int) -> tuple[bool, Any]:
        number = stamp(key)
        if number < succeed_on:
            raise ConnectionError(f"attempt {number}")
        return True, number


# -- stopping ---------------------------------------------------------------------------------


class Hold(EventBase):
    """Thread pool: sets SIGNALS[key + ':started'], then waits for SIGNALS[key + ':release']."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, key: str) -> tuple[bool, Any]:
        SIGNALS[key + ":started"].set()
        released = SIGNALS[key + ":release"].wait(WAIT)
        return True, released


class Stopper(EventBase):
    """Thread pool, stop_on_exception: waits until Hold started, then raises."""

    executor = ThreadPoolExecutor
    executor_config = THREADS
    stop_on_exception = True

    def process(self, key: str) -> tuple[bool, Any]:
        SIGNALS[key + ":started"].wait(WAIT)
        raise RuntimeError("stop here")


class StopperInline(EventBase):
    """Inline, stop_on_exception: raises."""

    stop_on_exception = True

    def process(self, *args: Any) -> tuple[bool, Any]:
        raise RuntimeError("stop inline")


class Interrupt(EventBase):
    """Inline: raises KeyboardInterrupt."""

    def process(self, *args: Any) -> tuple[bool, Any]:
        raise KeyboardInterrupt


class InterruptInThread(EventBase):
    """Thread pool: raises KeyboardInterrupt."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, *args: Any) -> tuple[bool, Any]:
        raise KeyboardInterrupt


# -- one arithmetic flow over every executor kind ---------------------------------------------


class IncBase(EventBase):
    def process(self, x: int) -> tuple[bool, Any]:
        return True, x + 1


class TwiceBase(EventBase):
    def process(self, x: int) -> tuple[bool, Any]:
        return True, 2 * x


class SquareBase(EventBase):
    def process(self, x: int) -> tuple[bool, Any]:
        return True, x * x


class SumBase(EventBase):
    def process(self, values: tuple[int, ...]) -> tuple[bool, Any]:
        return True, sum(values)


class RangeBase(EventBase):
    def process(self, n: int) -> tuple[bool, Any]:
        return True, list(range(n))


class FailBase(EventBase):
    def process(self, *args: Any) -> tuple[bool, Any]:
        raise ValueError(f"failed on {args}")


class PidBase(EventBase):
    def process(self, *args: Any) -> tuple[bool, Any]:
        return True, (os.getpid(), threading.get_ident())


class IncInline(IncBase):
    pass


class TwiceInline(TwiceBase):
    pass


class SquareInline(SquareBase):
    pass


class SumInline(SumBase):
    pass


class RangeInline(RangeBase):
    pass


class FailInline(FailBase):
    pass


class PidInline(PidBase):
    pass


class IncThread(IncBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class TwiceThread(TwiceBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class SquareThread(SquareBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class SumThread(SumBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class RangeThread(RangeBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class FailThread(FailBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class PidThread(PidBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class IncProcess(IncBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class TwiceProcess(TwiceBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class SquareProcess(SquareBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class SumProcess(SumBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class RangeProcess(RangeBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class FailProcess(FailBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class PidProcess(PidBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class IncDask(IncBase):
    executor = DaskExecutor
    executor_config = TWO_DASK_WORKERS


class TwiceDask(TwiceBase):
    executor = DaskExecutor
    executor_config = TWO_DASK_WORKERS


class SquareDask(SquareBase):
    executor = DaskExecutor
    executor_config = TWO_DASK_WORKERS


class SumDask(SumBase):
    executor = DaskExecutor
    executor_config = TWO_DASK_WORKERS


class RangeDask(RangeBase):
    executor = DaskExecutor
    executor_config = TWO_DASK_WORKERS


class FailDask(FailBase):
    executor = DaskExecutor
    executor_config = TWO_DASK_WORKERS


class PidDask(PidBase):
    executor = DaskExecutor
    executor_config = TWO_DASK_WORKERS


#: The arithmetic events of each executor kind: Inc, Twice, Square, Sum, Range, Fail, Pid.
KINDS: dict[str, tuple[type[EventBase], ...]] = {
    "inline": (IncInline, TwiceInline, SquareInline, SumInline, RangeInline, FailInline, PidInline),
    "thread": (IncThread, TwiceThread, SquareThread, SumThread, RangeThread, FailThread, PidThread),
    "process": (
        IncProcess,
        TwiceProcess,
        SquareProcess,
        SumProcess,
        RangeProcess,
        FailProcess,
        PidProcess,
    ),
    "dask": (IncDask, TwiceDask, SquareDask, SumDask, RangeDask, FailDask, PidDask),
}
