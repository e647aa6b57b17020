"""Module-level events for tests/test_observability.py and tests/test_opentelemetry.py.

Each kind of event exists three times, once per executor kind (inline, thread pool, process
pool), so process-pool workers can import them; :data:`EVENTS` finds them by kind and name
(``EVENTS["process"]["Flaky"]``). Nothing here keeps state in memory: a task that must
recover after a given number of attempts counts them in a file, which works across processes.
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from event_pipeline import EventBase, ExecutorInitializerConfig, RetryPolicy

KINDS = ("inline", "thread", "process")

#: Flaky's policy: three attempts with tiny, known waits.
FLAKY_POLICY = RetryPolicy(max_attempts=3, backoff_factor=0.001, max_backoff=0.0015)
#: Recover's policy: up to five attempts.
RECOVER_POLICY = RetryPolicy(max_attempts=5, backoff_factor=0.001, max_backoff=0.01)
#: Boom's policy (a flow step that always raises): two attempts.
BOOM_POLICY = RetryPolicy(max_attempts=2, backoff_factor=0.001)

THREADS = ExecutorInitializerConfig(max_workers=4)
PROCESSES = ExecutorInitializerConfig(max_workers=3)


# -- what the events do -----------------------------------------------------------------------


class SquareBase(EventBase):
    """Returns ``n * n``."""

    def process(self, n: int) -> tuple[bool, Any]:
        return True, n * n


class FlakyBase(EventBase):
    """Raises ``ValueError('bad n')`` on every attempt when ``n % 3 == 0``, else returns n."""

    retry_policy = FLAKY_POLICY

    def process(self, n: int) -> tuple[bool, Any]:
        if n % 3 == 0:
            raise ValueError(f"bad {n}")
        return True, n


class RefuseBase(EventBase):
    """Returns ``(False, n)`` for odd ``n``: a failure that is not retried."""

    retry_policy = FLAKY_POLICY

    def process(self, n: int) -> tuple[bool, Any]:
        return n % 2 == 0, n


class SleepyBase(EventBase):
    """Sleeps ``seconds``; returns ``(seconds, time.monotonic() at the end)``."""

    def process(self, seconds: float) -> tuple[bool, Any]:
        time.sleep(seconds)
        return True, (seconds, time.monotonic())


class RecoverBase(EventBase):
    """Raises ``OSError`` until its ``succeed_on``-th attempt (counted in the file ``path``)."""

    retry_policy = RECOVER_POLICY

    def process(self, path: str, succeed_on: int) -> tuple[bool, Any]:
        with open(path, "a", encoding="ascii") as f:
            f.write("x")
        attempt = len(Path(path).read_text(encoding="ascii"))
        if attempt < succeed_on:
            raise OSError(f"attempt {attempt} of {path}")
        return True, attempt


class StopBase(EventBase):
    """Sleeps ``delay``, then raises ``RuntimeError`` for ``n == 0`` (``stop_on_exception``)
    or returns n."""

    stop_on_exception = True

    def process(self, n: int = 0, delay: float = 0.0) -> tuple[bool, Any]:
        time.sleep(delay)
        if n == 0:
            raise RuntimeError("stop here")
        return True, n


# Flow steps: Start (0 -> Nope, 1 -> Yes) -> Boom -> Never.


class StartBase(EventBase):
    """A flow's entry step: succeeds with ``n``."""

    def process(self, n: int) -> tuple[bool, Any]:
        return True, n


class NopeBase(EventBase):
    """The arm that is not taken."""

    def process(self) -> tuple[bool, Any]:
        return True, "nope"


class YesBase(EventBase):
    """The arm that is taken."""

    def process(self) -> tuple[bool, Any]:
        return True, "yes"


class BoomBase(EventBase):
    """Always raises ``KeyError``; retried once."""

    retry_policy = BOOM_POLICY

    def process(self) -> tuple[bool, Any]:
        raise KeyError("boom")


class NeverBase(EventBase):
    """Follows Boom, so it is skipped."""

    def process(self) -> tuple[bool, Any]:
        return True, "never"


# -- one class per kind and base, importable by workers ----------------------------------------


class InlineSquare(SquareBase):
    pass


class ThreadSquare(SquareBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessSquare(SquareBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineFlaky(FlakyBase):
    pass


class ThreadFlaky(FlakyBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessFlaky(FlakyBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineRefuse(RefuseBase):
    pass


class ThreadRefuse(RefuseBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessRefuse(RefuseBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineSleepy(SleepyBase):
    pass


class ThreadSleepy(SleepyBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessSleepy(SleepyBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineRecover(RecoverBase):
    pass


class ThreadRecover(RecoverBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessRecover(RecoverBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineStop(StopBase):
    pass


class ThreadStop(StopBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessStop(StopBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineStart(StartBase):
    pass


class ThreadStart(StartBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessStart(StartBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineNope(NopeBase):
    pass


class ThreadNope(NopeBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessNope(NopeBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineYes(YesBase):
    pass


class ThreadYes(YesBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessYes(YesBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineBoom(BoomBase):
    pass


class ThreadBoom(BoomBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessBoom(BoomBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


class InlineNever(NeverBase):
    pass


class ThreadNever(NeverBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS


class ProcessNever(NeverBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES


_BASES = {
    "Square": SquareBase,
    "Flaky": FlakyBase,
    "Refuse": RefuseBase,
    "Sleepy": SleepyBase,
    "Recover": RecoverBase,
    "Stop": StopBase,
    "Start": StartBase,
    "Nope": NopeBase,
    "Yes": YesBase,
    "Boom": BoomBase,
    "Never": NeverBase,
}

#: kind -> base name -> the event class of that kind (``EVENTS["thread"]["Flaky"]``).
EVENTS: dict[str, dict[str, type[EventBase]]] = {
    kind: {name: globals()[kind.capitalize() + name] for name in _BASES} for kind in KINDS
}
