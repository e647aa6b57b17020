"""The event contract: base class, configuration objects and evaluation states."""

from __future__ import annotations

from ._config import ExecutorInitializerConfig, RetryPolicy
from ._evaluation import EventExecutionEvaluationState
from ._event import EventBase
from ._executors import DefaultExecutor
from ._sentinel import EMPTY

__all__ = [
    "EMPTY",
    "DefaultExecutor",
    "EventBase",
    "EventExecutionEvaluationState",
    "ExecutorInitializerConfig",
    "RetryPolicy",
]
