"""event_pipeline: run units of work reliably on ``concurrent.futures`` executors."""

from __future__ import annotations

import logging

from ._async import AsyncExecutor
from ._config import ExecutorInitializerConfig, RetryPolicy
from ._evaluation import EventExecutionEvaluationState
from ._event import EventBase
from ._executors import DefaultExecutor
from ._flowrun import FlowRun, StepRun, StepStatus
from ._hooks import Retry, add_hook, remove_hook
from ._progress import Progress
from ._results import EventResult, EventRun
from ._runner import Runner, run
from ._sentinel import EMPTY
from .decorators import event
from .exceptions import FlowSyntaxError, ImproperlyConfigured, StopProcessingError
from .flow import Flow

# Written out rather than read from importlib.metadata, whose import would add about half again
# to ``import event_pipeline``; a test keeps it equal to pyproject.toml's version.
__version__ = "0.1.0"

__all__ = [
    "EMPTY",
    "AsyncExecutor",
    "DefaultExecutor",
    "EventBase",
    "EventExecutionEvaluationState",
    "EventResult",
    "EventRun",
    "ExecutorInitializerConfig",
    "Flow",
    "FlowRun",
    "FlowSyntaxError",
    "ImproperlyConfigured",
    "Progress",
    "Retry",
    "RetryPolicy",
    "Runner",
    "StepRun",
    "StepStatus",
    "StopProcessingError",
    "add_hook",
    "event",
    "remove_hook",
    "run",
]

# The library logs retries; what to do with them is the application's choice.
logging.getLogger("event_pipeline").addHandler(logging.NullHandler())

