"""Module-level events for the command-line tests (process pools need them importable)."""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from event_pipeline import EventBase, event


@event
def square(x: int) -> tuple[bool, Any]:
    """Squares ``x``; a negative ``x`` is a failed task."""
    return x >= 0, x * x


@event
def add(a: Any, b: Any = 0, *, scale: int = 1) -> tuple[bool, Any]:
    """Adds two arguments and multiplies by ``scale``."""
    return True, (a + b) * scale


@event
def echo(*args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """Returns what it was given, to show how arguments were parsed."""
    return True, {"args": list(args), "kwargs": kwargs}


@event(retry_policy={"max_attempts": 3, "backoff_factor": 0.0})
def boom(x: Any) -> tuple[bool, Any]:
    """Always raises: three attempts, then a failed task."""
    raise ValueError(f"bad {x}")


@event
def opaque(x: Any) -> tuple[bool, Any]:
    """Returns a value JSON cannot hold."""
    return True, {x}


@event(stop_on_exception=True)
def stopper(x: int) -> tuple[bool, Any]:
    """Raises on a negative ``x`` and stops the run."""
    if x < 0:
        raise RuntimeError("negative")
    return True, x


@event(executor=ProcessPoolExecutor, max_workers=2)
def slow_in_process(x: int) -> tuple[bool, Any]:
    """Marks its worker's pid in the directory $CLI_PIDS, then takes a while.

    Every third task is slower, so later tasks often finish before earlier ones.
    """
    pids = os.environ.get("CLI_PIDS")
    if pids:
        Path(pids, str(os.getpid())).touch()
    time.sleep(0.04 if x % 3 == 0 else 0.005)
    return True, x


class Abstract(EventBase):
    """Defines no process()."""


def plain(x: Any) -> Any:
    """A function that is not an event."""
    return x


NOT_AN_EVENT = 42
