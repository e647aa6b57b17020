"""Module-level events for the chain tests (flows of one-task pool steps in sequence).

Outcomes depend on the value alone (never on timing), so two runs over the same inputs,
one through the chain driver and one through the general driver, must report the same.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from event_pipeline import EventBase, RetryPolicy

THREADS = {"max_workers": 4}
PROCESSES = {"max_workers": 2}

#: Attempts seen per (tag, value) by Flake, to fail each value's first attempt.
_ATTEMPTS: dict[tuple[str, int], int] = {}
_LOCK = threading.Lock()


def forget_attempts() -> None:
    """Let Flake fail every first attempt again."""
    with _LOCK:
        _ATTEMPTS.clear()


class Inc(EventBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: int) -> tuple[bool, Any]:
        return True, x + 1


class Gate(EventBase):
    """Refuses multiples of 7, raises on multiples of 11, doubles the rest."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: int) -> tuple[bool, Any]:
        if x % 7 == 0:
            return False, f"no {x}"
        if x % 11 == 0:
            raise ValueError(f"eleven divides {x}")
        return True, 2 * x


class Flake(EventBase):
    """The first attempt for a multiple of 5 raises ConnectionError; retried at once."""

    executor = ThreadPoolExecutor
    executor_config = THREADS
    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=0.0)

    def process(self, x: int, *, tag: str) -> tuple[bool, Any]:
        with _LOCK:
            seen = _ATTEMPTS[tag, x] = _ATTEMPTS.get((tag, x), 0) + 1
        if x % 5 == 0 and seen == 1:
            raise ConnectionError(f"flaky {x}")
        return True, x - 1


class Label(EventBase):
    """Takes no positional argument: only the named input ``tag``."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, *, tag: str) -> tuple[bool, Any]:
        return True, f"<{tag}>"


class Pair(EventBase):
    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, value: Any, *, tag: str) -> tuple[bool, Any]:
        return True, (value, tag)


class Nap(EventBase):
    """Sleeps ``x`` seconds on a thread pool (for timeouts)."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: float) -> tuple[bool, Any]:
        time.sleep(x)
        return True, x


class Halt(EventBase):
    """Raises KeyboardInterrupt for 3, on a thread pool."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: int) -> tuple[bool, Any]:
        if x == 3:
            raise KeyboardInterrupt
        return True, x


class IncProc(EventBase):
    executor = ProcessPoolExecutor
    executor_config = PROCESSES

    def process(self, x: int) -> tuple[bool, Any]:
        return True, x + 1


class CrashProc(EventBase):
    """Kills its worker process for 13; passes anything else on."""

    executor = ProcessPoolExecutor
    executor_config = PROCESSES

    def process(self, x: int) -> tuple[bool, Any]:
        if x == 13:
            os._exit(1)
        return True, x


class AsyncHalve(EventBase):
    """An async event (on the library's loop): halves even numbers, refuses odd ones."""

    async def process(self, x: int) -> tuple[bool, Any]:
        await asyncio.sleep(0)
        if x % 2:
            return False, f"odd {x}"
        return True, x // 2


class Opaque(EventBase):
    """Returns a value that cannot be pickled (a lambda) for 3; else its input."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: int) -> tuple[bool, Any]:
        if x == 3:
            return True, lambda: x
        return True, x


#: A flow run whose steps Sneaky's repr reads (set by a test).
OTHER: list[Any] = []


class Sneaky:
    """A value whose repr reads the steps of another flow run (re-entrancy)."""

    def __repr__(self) -> str:
        return f"Sneaky({[len(run.steps) for run in OTHER]})"


class Refuse(EventBase):
    """Refuses everything: 2 with (False, Sneaky()), anything else with its value."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: int) -> tuple[bool, Any]:
        return False, Sneaky() if x == 2 else x


class Unshowable:
    """A value whose repr raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


class RefuseUnshowable(EventBase):
    """Returns (False, Unshowable())."""

    executor = ThreadPoolExecutor
    executor_config = THREADS

    def process(self, x: int) -> tuple[bool, Any]:
        return False, Unshowable()


class RouteUnshowable(EventBase):
    """Succeeds, then routes to a value whose repr raises."""

    def process(self, x: int) -> tuple[bool, Any]:
        return True, x

    @classmethod
    def route(cls, run: Any) -> int:
        return Unshowable()  # type: ignore[return-value]
