from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator

import pytest

from event_pipeline import Runner

KIND_NAMES = ["inline", "thread", "process"]


@pytest.fixture(scope="module")
def runners() -> Iterator[dict[str, Runner]]:
    """One runner per executor kind for a whole module, so process pools start once."""
    made: dict[str, Runner] = {}
    yield made
    for runner in made.values():
        runner.shutdown()


@pytest.fixture(params=KIND_NAMES)
def kind(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def runner(runners: dict[str, Runner], kind: str) -> Runner:
    if kind not in runners:
        runners[kind] = Runner()
    return runners[kind]


def leftovers(
    threads_before: set[threading.Thread],
    children_before: set[multiprocessing.process.BaseProcess] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[str], list[str]]:
    """Threads and child processes started since the snapshots and still alive."""
    threads = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    children = [repr(p) for p in multiprocessing.active_children() if p not in children_before]
    return threads, children
