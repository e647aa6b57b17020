"""What a run returns: one :class:`EventResult` per task, one :class:`EventRun` per call."""

from __future__ import annotations

from typing import Any

__all__ = ["EventResult", "EventRun"]


class EventResult:
    """The outcome of one task.

    Attributes:
        error: True when the task failed: ``process`` returned ``(False, value)`` or the
            task ended with an exception.
        content: the value ``process`` returned; for a task that ended with an exception,
            that exception.
        exception: the exception that ended the task, else ``None``.
        task_id: identifies the task; unique within a run.
        event_name: the event class's ``__name__``.
        attempts: calls of ``process`` charged to this task.
        duration: seconds from the task's first submission to its final outcome.
    """

    # Slots keep a result small: a million of them flow through ``imap``.
    __slots__ = (
        "_id",
        "_prefix",
        "attempts",
        "content",
        "duration",
        "error",
        "event_name",
        "exception",
    )

    #: What equality compares.
    _FIELDS = (
        "error",
        "content",
        "exception",
        "task_id",
        "event_name",
        "attempts",
        "duration",
    )

    def __init__(
        self,
        error: bool,
        content: Any,
        exception: BaseException | None,
        task_id: str,
        event_name: str,
        attempts: int,
        duration: float,
        index: int | str | None = None,
    ) -> None:
        self.error = error
        self.content = content
        self.exception = exception
        # With ``index``, ``task_id`` is only the id's prefix. A number is joined to it
        # when the id is first read (most results of a large map never have theirs read);
        # anything else (a flow step's part) at once.
        self._id: str | int = (
            task_id if index is None
            else index if type(index) is int
            else f"{task_id}{index}"
        )  # fmt: skip
        self._prefix = task_id
        self.event_name = event_name
        self.attempts = attempts
        self.duration = duration

    @property
    def task_id(self) -> str:
        """Identifies the task; unique within a run."""
        task_id = self._id
        if type(task_id) is int:
            # Threads that race here make equal strings: the prefix never changes.
            task_id = self._id = f"{self._prefix}{task_id}"
        return task_id  # type: ignore[return-value]

    @task_id.setter
    def task_id(self, value: str) -> None:
        self._id = value

    @property
    def success(self) -> bool:
        """``not error``."""
        return not self.error

    def __repr__(self) -> str:
        outcome = f"exception={self.exception!r}" if self.exception else f"content={self.content!r}"
        return (
            f"EventResult({self.event_name} task {self.task_id}: "
            f"{'error' if self.error else 'success'}, {outcome}, "
            f"attempts={self.attempts}, duration={self.duration:.6f})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventResult):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self._FIELDS)

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type[EventResult], tuple[Any, ...]]:
        return EventResult, (
            self.error,
            self.content,
            self.exception,
            self.task_id,
            self.event_name,
            self.attempts,
            self.duration,
        )


def first_try_results(
    values: list[tuple[bool, Any]], first: int, prefix: str, event_name: str, duration: float
) -> list[EventResult]:
    """The results of tasks ``first``, ``first + 1``, ... whose one attempt returned each
    ``(ok, content)`` of ``values``: what ``EventResult(not ok, content, None, prefix,
    event_name, 1, duration, index)`` makes, without an ``__init__`` call per result (a
    large map makes one per task, and the call was a tenth of the calling thread's work).
    """
    results: list[EventResult] = []
    append = results.append
    new = object.__new__
    for index, (ok, content) in enumerate(values, first):
        result = new(EventResult)
        result.error = not ok
        result.content = content
        result.exception = None
        result._id = index
        result._prefix = prefix
        result.event_name = event_name
        result.attempts = 1
        result.duration = duration
        append(result)
    return results


class EventRun:
    """One execution of an event over its tasks.

    Attributes:
        event_name: the event class's ``__name__``.
        success: the event's evaluation state applied to the task outcomes.
        results: one :class:`EventResult` per task, in input order.
        duration: seconds the call took.
    """

    __slots__ = ("duration", "event_name", "results", "success")

    def __init__(
        self, event_name: str, success: bool, results: list[EventResult], duration: float
    ) -> None:
        self.event_name = event_name
        self.success = success
        self.results = results
        self.duration = duration

    @property
    def errors(self) -> list[EventResult]:
        """The failed results, in input order."""
        return [r for r in self.results if r.error]

    def __repr__(self) -> str:
        return (
            f"EventRun({self.event_name}: {'success' if self.success else 'failure'}, "
            f"{len(self.results)} tasks, {len(self.errors)} failed, "
            f"duration={self.duration:.6f})"
        )

    def __reduce__(self) -> tuple[type[EventRun], tuple[Any, ...]]:
        return EventRun, (self.event_name, self.success, self.results, self.duration)
