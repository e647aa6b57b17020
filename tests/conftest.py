from __future__ import annotations

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
