"""Module-level events for the runner tests: process pools need them importable.

Each base event below exists in one variant per executor kind, named ``<Base>_<kind>``.
"""

from __future__ import annotations

import builtins
import itertools
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

from event_pipeline import DefaultExecutor, EventBase, RetryPolicy

KINDS = {
    "inline": (DefaultExecutor, {}),
    "thread": (ThreadPoolExecutor, {"max_workers": 2}),
    "process": (ProcessPoolExecutor, {"max_workers": 2}),
}


class FlakyError(ConnectionError):
    """A subclass of a listed exception: retried too."""


def _count_attempt(path: str) -> int:
    """Append one mark to ``path`` and return how many there are: works across processes."""
    with open(path, "a") as f:
        f.write("x")
    return len(Path(path).read_text())


def _raise(name: str) -> None:
    exc_type = FlakyError if name == "FlakyError" else getattr(builtins, name)
    raise exc_type(f"planned {name}")


class Echo(EventBase):
    def process(self, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        return True, (args, kwargs)


class Square(EventBase):
    def process(self, x: int) -> tuple[bool, Any]:
        return x >= 0, x * x


class Flaky(EventBase):
    """Raises ``exc_name`` on its first ``failures`` attempts; any exception is retried."""

    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=0.001)

    def process(self, path: str, failures: int, exc_name: str) -> tuple[bool, Any]:
        attempt = _count_attempt(path)
        if exc_name == "return-false":
            return False, attempt
        if attempt <= failures:
            _raise(exc_name)
        return True, attempt


class Listed(Flaky):
    """Only connection errors (and subclasses) are retried."""

    retry_policy = {
        "max_attempts": 4,
        "backoff_factor": 0.001,
        "retry_on_exceptions": [ConnectionError],
    }


class NoRetry(Flaky):
    retry_policy = None


class BadShape(EventBase):
    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=0.001)

    def process(self, value: Any) -> Any:
        return value


class Interrupt(EventBase):
    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=0.001)

    def process(self, name: str) -> tuple[bool, Any]:
        _raise(name)
        return True, None  # pragma: no cover


class Stopper(EventBase):
    """Fails with ValueError on input 3; others take a little while."""

    stop_on_exception = True

    def process(self, x: int) -> tuple[bool, Any]:
        if x == 3:
            raise ValueError("three")
        time.sleep(0.01)
        return True, x


class Pid(EventBase):
    executor = ProcessPoolExecutor
    executor_config = {"max_workers": 1, "max_tasks_per_child": 2}

    def process(self, x: int) -> tuple[bool, Any]:
        return True, os.getpid()


def _variant(base: type[EventBase], kind: str) -> type[EventBase]:
    name = f"{base.__name__}_{kind}"
    executor, config = KINDS[kind]
    namespace = {
        "__module__": __name__,
        "__qualname__": name,
        "executor": executor,
        "executor_config": config,
    }
    return type(name, (base,), namespace)


for _base in (Echo, Square, Flaky, Listed, NoRetry, BadShape, Interrupt, Stopper):
    for _kind in KINDS:
        globals()[f"{_base.__name__}_{_kind}"] = _variant(_base, _kind)


def variant(base: type[EventBase], kind: str) -> type[EventBase]:
    """The module-level variant of ``base`` for executor ``kind``."""
    cls: type[EventBase] = globals()[f"{base.__name__}_{kind}"]
    return cls


class Outcome(NamedTuple):
    """A namedtuple is a valid return of ``process``."""

    ok: bool
    value: Any


class Backoff(EventBase):
    """Task 0 fails once and backs off 1 s; the others take 10 ms. Returns when it ran."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 1}
    retry_policy = RetryPolicy(max_attempts=2, backoff_factor=1.0)

    def process(self, path: str, i: int) -> tuple[bool, Any]:
        started = time.monotonic()
        if i == 0 and _count_attempt(path) == 1:
            raise ConnectionError("first attempt fails")
        time.sleep(0.01)
        return True, started if i == 0 else time.monotonic()


_rendezvous = threading.Barrier(4)


class Rendezvous(EventBase):
    """Tasks that succeed only in rounds of four running at the same time."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 4}

    def process(self, i: int) -> tuple[bool, Any]:
        _rendezvous.wait(timeout=10)
        return True, i


_counted = itertools.count()


class Counted(EventBase):
    """Counts its calls (in this process) and takes a little while."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, i: int) -> tuple[bool, Any]:
        next(_counted)
        time.sleep(0.005)
        return True, i


def counted_calls() -> int:
    """How many times ``Counted.process`` ran so far."""
    return next(_counted)
