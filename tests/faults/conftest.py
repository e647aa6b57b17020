"""Fixtures of the fault-injection suite: a runner per test, and a check for leftovers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fault_events
import pytest
from fault_helpers import Leaks

from event_pipeline import Runner


@pytest.fixture
def leaks() -> Leaks:
    """A snapshot of threads and child processes, taken before anything else of the test."""
    return Leaks()


@pytest.fixture
def runner(leaks: Leaks) -> Iterator[Runner]:
    """A fresh runner; shut down (again) and checked for leftovers after the test."""
    runner = Runner()
    yield runner
    runner.shutdown()
    leaks.check()


@pytest.fixture
def log(tmp_path: Path) -> str:
    """A directory for call counts, markers and gates that worker processes can see."""
    return str(tmp_path)


@pytest.fixture
def mem_log(request: pytest.FixtureRequest) -> str:
    """A key for in-process call counts, markers and gates (fast, no files)."""
    return f"mem:{request.node.nodeid}"


@pytest.fixture(autouse=True)
def _forget_memory() -> Iterator[None]:
    fault_events.reset_memory()
    yield
    fault_events.reset_memory()
