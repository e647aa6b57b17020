"""What a run returns: one :class:`EventResult` per task, one :class:`EventRun` per call."""

from __future__ import annotations

from typing import Any

__all__ = ["EventResult", "EventRun", "IdParts", "first_try_results", "join_id", "task_result"]

#: The fixed parts of a task id around the task's number: the text before it (``"3:"``
#: makes ``3:7``), or the texts before and after it (``("3:", ":Fetch:0")`` makes
#: ``3:7:Fetch:0``, a step of the eighth run of a flow map).
IdParts = str | tuple[str, str]


def join_id(parts: IdParts, index: object) -> str:
    """The task id of task ``index`` with these fixed ``parts``."""
    if type(parts) is str:
        return f"{parts}{index}"
    return f"{parts[0]}{index}{parts[1]}"


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
    ) -> None:
        self.error = error
        self.content = content
        self.exception = exception
        #: The id, or the task's number to join to ``_prefix`` when the id is first read
        #: (see ``task_result``).
        self._id: str | int = task_id
        self._prefix: IdParts = ""
        self.event_name = event_name
        self.attempts = attempts
        self.duration = duration

    @property
    def task_id(self) -> str:
        """Identifies the task; unique within a run."""
        task_id = self._id
        if type(task_id) is int:
            # Threads that race here make equal strings: the prefix never changes.
            task_id = self._id = join_id(self._prefix, task_id)
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


def task_result(
    error: bool,
    content: Any,
    exception: BaseException | None,
    parts: IdParts,
    event_name: str,
    attempts: int,
    duration: float,
    index: int | str,
) -> EventResult:
    """The result of task ``index``, whose id joins ``index`` to ``parts``: a number when
    the id is first read (most results of a large map never have theirs read), anything
    else (a flow step's part) at once."""
    result = object.__new__(EventResult)
    result.error = error
    result.content = content
    result.exception = exception
    result._id = index if type(index) is int else join_id(parts, index)
    result._prefix = parts
    result.event_name = event_name
    result.attempts = attempts
    result.duration = duration
    return result


def first_try_results(
    values: list[tuple[bool, Any]],
    first: int,
    prefix: IdParts,
    event_name: str,
    duration: float,
) -> list[EventResult]:
    """The results of tasks ``first``, ``first + 1``, ... whose one attempt returned each
    ``(ok, content)`` of ``values``: what ``task_result(not ok, content, None, prefix,
    event_name, 1, duration, index)`` makes, without a call per result (a
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
