"""Event-run units: one event over its inputs, as the coordinator's owner of tasks.

A unit reads its inputs lazily, adding a task per input while its window has room (for a
stream, results finished behind an earlier one count against the window too), keeps the
results in input order, and when the last one settles evaluates the run and hands the
:class:`EventRun` to ``on_complete``. ``run``/``map``/``imap`` drive one unit each; a flow
opens one per step from the previous steps' ``on_complete``.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from ._coordinator import Coordinator, Lane
from ._evaluation import evaluate
from ._plan import Plan
from ._results import EventResult, EventRun, first_try_results
from ._tasks import Fresh, Task
from ._worker import describe_exception
from .exceptions import StopProcessingError

__all__ = ["EventRunUnit", "raise_stop", "stop_message"]

#: A result's ``error`` flag, read without a Python frame per result.
_error = operator.attrgetter("error")

Inputs = Iterator[tuple[tuple[Any, ...], dict[str, Any]]]


def stop_message(name: str, cause: BaseException | None) -> str:
    what = "an exception" if cause is None else describe_exception(cause)
    return f"{name} stopped: a task ended with {what}"


def raise_stop(run: EventRun | Any, name: str, cause: BaseException) -> NoReturn:
    """The one place that raises :class:`StopProcessingError`."""
    raise StopProcessingError(stop_message(name, cause), run) from cause


class EventRunUnit:
    """One event over its inputs: admission, ordering, evaluation and the stop rule.

    Args:
        coordinator: schedules the tasks.
        plan: the event as the runner runs it.
        inputs: ``(args, kwargs)`` per task, read lazily.
        streaming: keep only results not yet yielded (``imap``), not all of them.
        window: the most tasks in flight, waiting for a retry, or buffered.
        task_prefix: prefixed to each task's index to make its ``task_id``.
        eager: submit what is ready before each read of an input, batch or not: for inputs
            that may wait for earlier tasks to start (a queue fed by the tasks themselves).
        values: for a map over one iterable, the iterator ``inputs`` reads its items from:
            read in bulk, they are queued as they are, one argument per task.
        on_complete: called once with the :class:`EventRun` when every task settled.
        on_stop: called once with the exception that stopped the run
            (``stop_on_exception``), instead of ``on_complete``.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        plan: Plan,
        inputs: Inputs,
        *,
        streaming: bool,
        window: int,
        task_prefix: str,
        eager: bool = False,
        on_complete: Callable[[EventRun], None] | None = None,
        on_stop: Callable[[BaseException], None] | None = None,
        values: Iterator[Any] | None = None,
    ) -> None:
        self.coordinator = coordinator
        self.plan = plan
        self.inputs: Inputs | None = inputs
        self.values = values
        self.streaming = streaming
        self.window = window
        self.task_prefix = task_prefix
        self.eager = eager
        self.stops = plan.settings.stop_on_exception
        self.on_complete = on_complete
        self.on_stop = on_stop
        self.results: list[EventResult | None] = []
        self.buffer: dict[int, EventResult] = {}
        self.next_index = 0
        self.admitted = 0
        #: Tasks added and not settled (retries included).
        self.pending = 0
        self.stop_error: BaseException | None = None
        self.started = coordinator.clock.monotonic()
        self.run: EventRun | None = None

    # -- as the coordinator's owner --------------------------------------------------------
    def admit(self) -> bool:
        """Read inputs and add their tasks while the window has room."""
        inputs = self.inputs
        if inputs is None:
            return False
        coordinator = self.coordinator
        plan = self.plan
        window = self.window
        buffer = self.buffer
        eager = self.eager
        lane = coordinator.lane(plan)
        add = coordinator.add
        results = None if self.streaming else self.results
        if not eager and not lane.inline:
            return self._admit_many(lane)
        completed = coordinator.completed
        while self.pending + len(buffer) < window and self.stop_error is None:
            if eager and self.pending:
                coordinator.flush(plan, window)
            try:
                call = next(inputs)
            except StopIteration:
                self.inputs = None
                self._maybe_complete()
                return False
            index = self.admitted
            self.admitted = index + 1
            self.pending += 1
            if results is not None:
                results.append(None)
            task = Task(plan, self, index, call)
            add(task, window, lane)
            if completed:
                # An inline executor already ran it: a stop must be seen before the next
                # input is read (and, inline, run). Inside a delivery (a flow step opened
                # by another's result) deliver() waits for the outer loop, so look here.
                coordinator.deliver()
                if completed and completed[-1][0] is task and self._stops(completed[-1][1]):
                    return True
        return self.stop_error is None

    def _admit_many(self, lane: Lane) -> bool:
        """``admit`` for inputs that are all there to read, on an executor that runs work in
        the background: read what fits in the window at once, and queue it as one."""
        room = self.window - self.pending - len(self.buffer)
        if room <= 0 or self.stop_error is not None:
            return self.stop_error is None
        values = self.values
        source: Iterator[Any] | None = self.inputs if values is None else values
        assert source is not None
        calls = list(itertools.islice(source, room))
        if calls:
            start = self.admitted
            self.admitted = start + len(calls)
            self.pending += len(calls)
            if not self.streaming:
                self.results.extend(itertools.repeat(None, len(calls)))
            fresh = Fresh(self.plan, self, start, calls, single=values is not None)
            self.coordinator.add_fresh(fresh, self.window, lane)
        if len(calls) < room:
            self.inputs = None
            self._maybe_complete()
            return False
        return self.stop_error is None

    def _stops(self, result: EventResult) -> bool:
        return result.exception is not None and self.plan.settings.stop_on_exception

    def on_result(self, task: Task, result: EventResult) -> None:
        self.pending -= 1
        if self.streaming:
            self.buffer[task.index] = result
        else:
            self.results[task.index] = result
        if result.exception is not None and self.stops and self.stop_error is None:
            self.stop_error = result.exception
            self.coordinator.cancel(self)
            if self.on_stop is not None:
                self.on_stop(result.exception)
            return
        if not self.pending and self.inputs is None:
            self._maybe_complete()

    def on_plain(self, first: int, outcomes: list[tuple[bool, Any]], duration: float) -> None:
        self.on_results(
            first,
            first_try_results(outcomes, first, self.task_prefix, self.plan.name, duration),
        )

    def on_results(self, first: int, results: list[EventResult]) -> None:
        # None of these ended with an exception: no stop to look for.
        self.pending -= len(results)
        if self.streaming:
            self.buffer.update(zip(range(first, first + len(results)), results, strict=True))
        else:
            self.results[first : first + len(results)] = results
        if not self.pending and self.inputs is None:
            self._maybe_complete()

    # -- for the driver -------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        """No input left, nothing pending, nothing buffered."""
        return self.inputs is None and self.pending == 0 and not self.buffer

    def ordered(self) -> Iterator[EventResult]:
        """Pop the buffered results that are next in input order."""
        buffer = self.buffer
        while self.next_index in buffer:
            result = buffer.pop(self.next_index)
            self.next_index += 1
            yield result

    def elapsed(self) -> float:
        return self.coordinator.clock.monotonic() - self.started

    def partial_run(self) -> EventRun:
        """The results finished so far, in input order, as a failed run."""
        if self.streaming:
            finished = [self.buffer[i] for i in sorted(self.buffer)]
        else:
            finished = [r for r in self.results if r is not None]
        return EventRun(self.plan.name, False, finished, self.elapsed())

    def raise_stop(self) -> NoReturn:
        cause = self.stop_error
        assert cause is not None
        run = self.partial_run()
        hooks = self.coordinator.hooks
        if hooks is not None and hooks.on_run:
            hooks.emit_run(run)
        raise_stop(run, self.plan.name, cause)

    def _maybe_complete(self) -> None:
        if self.inputs is not None or self.pending or self.streaming or self.run is not None:
            return
        results: list[EventResult] = self.results  # type: ignore[assignment]
        failures = sum(map(_error, results))
        success = evaluate(
            self.plan.settings.execution_evaluation_state, len(results) - failures, failures
        )
        self.run = EventRun(self.plan.name, success, results, self.elapsed())
        hooks = self.coordinator.hooks
        if hooks is not None and hooks.on_run:
            hooks.emit_run(self.run)
        if self.on_complete is not None:
            self.on_complete(self.run)
