"""How the outcomes of an event's tasks decide whether the event succeeded."""

from __future__ import annotations

import enum

__all__ = ["EventExecutionEvaluationState", "evaluate"]


class EventExecutionEvaluationState(enum.Enum):
    """The rule that turns task outcomes into the success of an event run."""

    #: Succeeds when every task succeeded and there was at least one (the default).
    SUCCESS_ON_ALL_EVENTS_SUCCESS = "SUCCESS_ON_ALL_EVENTS_SUCCESS"
    #: Fails as soon as one task failed; no tasks at all counts as success.
    FAILURE_FOR_PARTIAL_ERROR = "FAILURE_FOR_PARTIAL_ERROR"
    #: Succeeds when at least one task succeeded.
    SUCCESS_FOR_PARTIAL_SUCCESS = "SUCCESS_FOR_PARTIAL_SUCCESS"
    #: Fails only when there were tasks and every one of them failed.
    FAILURE_FOR_ALL_EVENTS_FAILURE = "FAILURE_FOR_ALL_EVENTS_FAILURE"


def evaluate(state: EventExecutionEvaluationState, successes: int, failures: int) -> bool:
    """Apply ``state`` to ``successes`` successful and ``failures`` failed tasks."""
    if state is EventExecutionEvaluationState.SUCCESS_ON_ALL_EVENTS_SUCCESS:
        return failures == 0 and successes > 0
    if state is EventExecutionEvaluationState.FAILURE_FOR_PARTIAL_ERROR:
        return failures == 0
    if state is EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS:
        return successes > 0
    return not (successes == 0 and failures > 0)
