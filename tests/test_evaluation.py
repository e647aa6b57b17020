"""Evaluation states (SPEC §8): every row and column of the table, through the runner."""

from __future__ import annotations

from typing import Any

import pytest

from event_pipeline import EventBase, EventExecutionEvaluationState, Runner
from event_pipeline._evaluation import evaluate

State = EventExecutionEvaluationState

# (successes, failures) per column: S>0,F=0 | S>0,F>0 | S=0,F>0 | no tasks
COLUMNS = [(2, 0), (2, 1), (0, 2), (0, 0)]
TABLE = {
    State.SUCCESS_ON_ALL_EVENTS_SUCCESS: [True, False, False, False],
    State.FAILURE_FOR_PARTIAL_ERROR: [True, False, False, True],
    State.SUCCESS_FOR_PARTIAL_SUCCESS: [True, True, False, False],
    State.FAILURE_FOR_ALL_EVENTS_FAILURE: [True, True, False, True],
}
CASES = [
    (state, successes, failures, expected)
    for state, row in TABLE.items()
    for (successes, failures), expected in zip(COLUMNS, row, strict=True)
]


@pytest.mark.parametrize(("state", "successes", "failures", "expected"), CASES)
def test_evaluate(state: State, successes: int, failures: int, expected: bool) -> None:
    """The pure rule."""
    assert evaluate(state, successes, failures) is expected


@pytest.mark.parametrize(("state", "successes", "failures", "expected"), CASES)
def test_event_run_success(state: State, successes: int, failures: int, expected: bool) -> None:
    """The same table through ``Runner.map``, failures being a raise and a ``(False, x)``."""

    class Judged(EventBase):
        execution_evaluation_state = state

        def process(self, outcome: str) -> tuple[bool, Any]:
            if outcome == "raise":
                raise RuntimeError("task failed")
            return outcome == "ok", outcome

    inputs = ["ok"] * successes + ["raise", "false"][:failures] + ["false"] * (failures - 2)
    with Runner() as runner:
        run = runner.map(Judged, inputs)
    assert len(run.results) == successes + failures
    assert run.success is expected


def test_default_state() -> None:
    """The default is SUCCESS_ON_ALL_EVENTS_SUCCESS."""
    assert EventBase.execution_evaluation_state is State.SUCCESS_ON_ALL_EVENTS_SUCCESS
