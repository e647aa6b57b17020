"""What a runner settled about an event: its settings, executor and what batching learnt."""

from __future__ import annotations

import weakref
from concurrent.futures import Executor

from ._event import EventBase, EventSettings
from ._executors import DefaultExecutor, ExecutorKey, sends_work_away
from ._retry import backoff, retry_overrides

__all__ = ["Plan"]


class Plan:
    """An event as a runner runs it, reused by every call until its settings change.

    The event class is held weakly, so a runner does not keep alive the classes it ran
    (events made per call, per tenant or in a closure).
    """

    __slots__ = (
        "__weakref__",
        "_event",
        "batch_size",
        "executor",
        "generation",
        "inline",
        "is_async",
        "key",
        "name",
        "per_task",
        "remote",
        "retry_on",
        "settings",
        "timeout",
        "unbatched",
        "window",
    )

    def __init__(
        self,
        event: type[EventBase],
        settings: EventSettings,
        executor: Executor,
        key: ExecutorKey | None,
        window: int,
        batch_size: int | None = None,
    ) -> None:
        self._event = weakref.ref(event)
        #: Tasks per work item chosen by the user, or None to let batching measure.
        self.batch_size = batch_size
        self.name = event.__name__
        self.settings = settings
        self.retry_on = settings.retry_on
        self.executor = executor
        self.key = key
        self.window = window
        self.remote = sends_work_away(executor)
        # Exactly the library's inline executor: ``run`` may then call ``process`` itself
        # and skip futures altogether (a subclass may have its own ``submit``).
        self.inline = type(executor) is DefaultExecutor
        #: Seconds per task as measured inside the workers; None until a batch came back.
        self.per_task: float | None = None
        # One task per work item for a run that must stop before further tasks start, and
        # for a pool that replaces its workers after so many work items.
        # A deadline per attempt needs an attempt per work item.
        self.timeout = settings.timeout
        self.is_async = settings.is_async
        self.unbatched = (
            settings.stop_on_exception
            or self.timeout is not None
            or (key is not None and key.recycles_workers)
        )

    @property
    def event(self) -> type[EventBase]:
        event = self._event()
        if event is None:  # pragma: no cover - a plan in use keeps its caller's class alive
            raise RuntimeError(f"the event class {self.name} no longer exists")
        return event

    def with_executor(self, executor: Executor) -> Plan:
        """This plan on another executor (one the runner does not own)."""
        return Plan(self.event, self.settings, executor, None, self.window, self.batch_size)

    def max_attempts(self) -> int:
        policy = self.settings.retry_policy
        attempts = 1 if policy is None else policy.max_attempts
        override = retry_overrides.current
        if override is not None and override.max_attempts is not None:
            attempts = min(attempts, override.max_attempts)
        return attempts

    def retry_wait(self, retry: int) -> float:
        if retry_overrides.current is not None:
            return 0.0
        policy = self.settings.retry_policy
        assert policy is not None
        return backoff(policy, retry)

    def __repr__(self) -> str:
        return f"<Plan {self.name} on {self.executor!r}>"
