"""Module-level functions and events for tests/test_dask.py: Dask workers import them.

The workers of a local cluster inherit ``sys.path``; the external worker started by the tests
gets ``src/`` and ``tests/`` on its ``PYTHONPATH``. Attempts are counted in files, since every
attempt may run in a different process.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

from event_pipeline import EventBase, ExecutorInitializerConfig, RetryPolicy
from event_pipeline.executors.dask import DaskExecutor

# Created at import, also in every worker that imports this module: it must not connect
# before its first submission. The tests point it at their cluster with the environment
# variable, and shut it down themselves (the runner never shuts down an instance).
FROM_ENVIRONMENT = DaskExecutor()

TWO_WORKERS = ExecutorInitializerConfig(max_workers=2)


def echo(*args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return args, kwargs


def mark(path: str) -> str:
    """Append a line naming this call to ``path``; return the line."""
    line = f"{os.getpid()}-{uuid.uuid4().hex}"
    with open(path, "a") as f:
        f.write(line + "\n")
    return line


def count_attempt(path: str) -> int:
    """Append one mark to ``path`` and return how many there are now."""
    with open(path, "a") as f:
        f.write("x")
    return len(Path(path).read_text())


def fail(message: str) -> None:
    raise ValueError(message)


def exit_worker() -> None:
    os._exit(13)


# -- events ---------------------------------------------------------------------------------


class EchoBase(EventBase):
    def process(self, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        return True, (args, kwargs)


class Echo(EchoBase):
    """Runs on a Dask executor the runner creates (a local cluster, or the env var's)."""

    executor = DaskExecutor
    executor_config = TWO_WORKERS


class EchoFromEnvironment(EchoBase):
    executor = FROM_ENVIRONMENT


class EchoByAddress(EchoBase):
    """The tests set ``executor`` to ``DaskExecutor(address=...)`` once the cluster is up."""


class FlakyBase(EventBase):
    """Raises ConnectionError for the first ``failures`` attempts counted in ``path``."""

    retry_policy = RetryPolicy(max_attempts=3, backoff_factor=0.01, max_backoff=0.05)

    def process(self, path: str, failures: int) -> tuple[bool, Any]:
        attempt = count_attempt(path)
        if attempt <= failures:
            raise ConnectionError(f"attempt {attempt} of {path} failed")
        return True, attempt


class Flaky(FlakyBase):
    executor = DaskExecutor
    executor_config = TWO_WORKERS


class FlakyFromEnvironment(FlakyBase):
    executor = FROM_ENVIRONMENT


class Mark(EventBase):
    executor = DaskExecutor
    executor_config = TWO_WORKERS

    def process(self, path: str) -> tuple[bool, Any]:
        return True, mark(path)


class ExitWorkerBase(EventBase):
    def process(self) -> tuple[bool, Any]:
        exit_worker()
        return True, None  # never reached


class ExitWorker(ExitWorkerBase):
    executor = DaskExecutor
    executor_config = TWO_WORKERS


class ExitWorkerFromEnvironment(ExitWorkerBase):
    executor = FROM_ENVIRONMENT


class ExitWorkerIf(EventBase):
    """Kills its worker when told to; otherwise a short task."""

    executor = DaskExecutor
    executor_config = TWO_WORKERS

    def process(self, kill: bool) -> tuple[bool, Any]:
        if kill:
            exit_worker()
        time.sleep(0.05)
        return True, kill


class StopOnFailure(EventBase):
    """Fails for a negative number; otherwise sleeps that many seconds."""

    executor = DaskExecutor
    executor_config = TWO_WORKERS
    stop_on_exception = True

    def process(self, seconds: float) -> tuple[bool, Any]:
        if seconds < 0:
            raise ValueError("negative")
        time.sleep(seconds)
        return True, seconds


class ExitWorkerOnce(EventBase):
    """Kills its worker on the first attempt counted in ``path``; succeeds on the next."""

    executor = DaskExecutor
    executor_config = TWO_WORKERS
    retry_policy = RetryPolicy(max_attempts=2, backoff_factor=0.01)

    def process(self, path: str) -> tuple[bool, Any]:
        attempt = count_attempt(path)
        if attempt == 1:
            exit_worker()
        return True, attempt
