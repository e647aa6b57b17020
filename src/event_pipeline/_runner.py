"""The runner: the public calls, executor ownership and the default runner.

``run``, ``map`` and ``imap`` each build a :class:`Coordinator` (see ``_coordinator``) for
the call and drive it from the calling thread; the runner owns what outlives a call: its
executors, keyed by (executor class, effective configuration), and what it settled about
each event (a *plan*).
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import pickle
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor
from typing import Any

from . import _event as _event_module
from ._coordinator import ISOLATION, Clock, Coordinator, Group, Task, isolation_key
from ._evaluation import evaluate
from ._event import EventBase, EventSettings, settings_of
from ._executors import (
    DefaultExecutor,
    build_executor,
    executor_kwargs,
    sends_work_away,
    worker_count,
)
from ._results import EventResult, EventRun
from ._worker import OK, RETRY, attempt
from .exceptions import ImproperlyConfigured, StopProcessingError

__all__ = ["Clock", "Runner", "default_runner", "run"]

#: Default window per worker, and the ceiling of the default.
WINDOW_PER_WORKER = 64
MAX_DEFAULT_WINDOW = 10_000


def _stop_message(name: str, cause: BaseException | None) -> str:
    return f"{name} stopped: a task ended with {type(cause).__name__}: {cause}"


class _EventCall:
    """Drives the tasks of one event over its inputs: feeds the window, gathers results."""

    def __init__(
        self,
        runner: Runner,
        plan: _Plan,
        inputs: Iterator[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        streaming: bool,
    ) -> None:
        window = plan.window
        self.coordinator = Coordinator(runner, runner._clock)
        self.group = Group(
            plan.event,
            plan.settings,
            plan.executor,
            plan.key,
            window,
            f"{runner._next_call()}.",
        )
        self.coordinator.groups.append(self.group)
        self.inputs = inputs
        self.window = window
        self.streaming = streaming
        self.results: list[EventResult | None] = []
        self.buffer: dict[int, EventResult] = {}
        self.next_index = 0
        self.stop_error: BaseException | None = None
        self.started = runner._clock.monotonic()

    def _on_result(self, task: Task, result: EventResult) -> None:
        if self.streaming:
            self.buffer[task.index] = result
        else:
            self.results[task.index] = result
        if (
            result.exception is not None
            and self.stop_error is None
            and self.group.settings.stop_on_exception
        ):
            self.stop_error = result.exception

    def execute(self) -> Iterator[EventResult]:
        """Run every task; yields results in input order when streaming."""
        coordinator = self.coordinator
        group = self.group
        inputs = self.inputs
        exhausted = False
        index = 0
        on_result = self._on_result
        try:
            while True:
                if self.stop_error is not None:
                    self._stop()
                while not exhausted and coordinator.load + len(self.buffer) < self.window:
                    try:
                        args, kwargs = next(inputs)
                    except StopIteration:
                        exhausted = True
                        break
                    if not self.streaming:
                        self.results.append(None)
                    coordinator.add(Task(group, index, args, kwargs, on_result))
                    index += 1
                if self.stop_error is not None:
                    self._stop()
                if self.streaming:
                    buffer = self.buffer
                    while self.next_index in buffer:
                        result = buffer.pop(self.next_index)
                        self.next_index += 1
                        yield result
                if coordinator.idle():
                    if exhausted:
                        return
                    continue
                coordinator.step()
        except BaseException:
            coordinator.cancel()
            raise

    def _stop(self) -> None:
        cause = self.stop_error
        self.coordinator.cancel()
        if self.streaming:
            finished = [self.buffer[i] for i in sorted(self.buffer)]
        else:
            finished = [r for r in self.results if r is not None]
        run = EventRun(
            self.group.name, False, finished, self.coordinator.clock.monotonic() - self.started
        )
        raise StopProcessingError(_stop_message(self.group.name, cause), run) from cause

    def collect(self) -> EventRun:
        for _ in self.execute():
            pass  # pragma: no cover - not streaming, nothing is yielded
        results: list[EventResult] = self.results  # type: ignore[assignment]
        failures = sum(1 for r in results if r.error)
        success = evaluate(
            self.group.settings.execution_evaluation_state, len(results) - failures, failures
        )
        duration = self.coordinator.clock.monotonic() - self.started
        return EventRun(self.group.name, success, results, duration)


class _Plan:
    """What a runner settled about an event: its settings and executor, reused by calls."""

    __slots__ = ("event", "executor", "inline", "key", "name", "settings", "window")

    def __init__(
        self,
        event: type[EventBase],
        settings: EventSettings,
        executor: Executor,
        key: tuple[Any, ...] | None,
        window: int,
    ) -> None:
        self.event = event
        self.name = event.__name__
        self.settings = settings
        self.executor = executor
        self.key = key
        self.window = window
        # Exactly the library's inline executor: ``run`` may then call ``process`` itself
        # and skip futures altogether (a subclass may have its own ``submit``).
        self.inline = type(executor) is DefaultExecutor


def _check_event(event: object) -> type[EventBase]:
    if not (isinstance(event, type) and issubclass(event, EventBase)):
        raise TypeError(
            f"expected an EventBase subclass (a class-based or @event event), got {event!r}"
        )
    if inspect.isabstract(event):
        raise TypeError(f"{event.__name__} cannot run: it does not define process()")
    return event


def _zip_inputs(
    iterables: tuple[Iterable[Any], ...],
) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    no_kwargs: dict[str, Any] = {}
    for args in zip(*iterables, strict=False):
        yield args, no_kwargs


class Runner:
    """Runs events on their executors, with retries, windows and evaluation.

    A runner builds one executor per (executor class, effective configuration) and reuses it
    until :meth:`shutdown`. It is a context manager and may be shared by threads.

    Args:
        window: the most tasks of one call in flight, waiting for a retry, or (for
            :meth:`imap`) finished and buffered behind an earlier task. Default:
            64 per worker of the event's executor, at most 10,000.
    """

    def __init__(self, *, window: int | None = None, _clock: Clock | None = None) -> None:
        if window is not None and (
            not isinstance(window, int) or isinstance(window, bool) or window < 1
        ):
            raise ValueError(f"window must be an int greater than 0 or None, got {window!r}")
        self.window = window
        self._clock = _clock or Clock()
        self._lock = threading.Lock()
        self._executors: dict[tuple[Any, ...], Executor] = {}
        self._retired: list[Executor] = []
        self._portable: set[type[EventBase]] = set()
        self._plans: dict[type[EventBase], _Plan] = {}
        self._closed = False
        self._reapers: list[threading.Thread] = []
        self._calls = itertools.count(1)

    # -- the three calls -------------------------------------------------------------------
    def run(self, event: type[EventBase], /, *args: Any, **kwargs: Any) -> EventRun:
        """Run one task, ``process(*args, **kwargs)``.

        Returns:
            The :class:`EventRun` of that one task.

        Raises:
            TypeError: ``event`` is not an event class.
            ImproperlyConfigured: a setting reassigned since class creation is invalid, or
                the event cannot be sent to its process pool.
            StopProcessingError: the task ended with an exception and the event has
                ``stop_on_exception=True``.
        """
        # The common case in a handful of operations: a plan whose settings are current.
        try:
            plan = self._plans[event]
            settings = plan.settings
            current = settings.generation == _event_module._generation and not (
                settings.dict_snapshots
            )
        except (KeyError, TypeError):
            current = False
        if not current:
            plan = self._plan(event)
        if plan.inline and not plan.executor._shutdown:  # type: ignore[attr-defined]
            return self._run_inline(plan, args, kwargs)
        return _EventCall(self, plan, iter([(args, kwargs)]), streaming=False).collect()

    def _run_inline(
        self, plan: _Plan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> EventRun:
        """``run`` on the inline executor: the first attempt without futures or scheduling.

        A first attempt that calls for a retry hands the task to the coordinator, so
        retries have one implementation.
        """
        clock = self._clock
        started = clock.monotonic()
        kind, value = attempt(plan.event, args, kwargs, plan.settings.retry_on)
        if kind == RETRY:
            call = _EventCall(self, plan, iter(()), streaming=False)
            task = Task(call.group, 0, args, kwargs, call._on_result)
            task.attempts = 1
            task.started = call.started = started
            call.results.append(None)
            call.coordinator.resume(task, kind, value)
            return call.collect()
        duration = clock.monotonic() - started
        task_id = f"{next(self._calls)}.0"
        if kind == OK:
            ok, content = value
            result = EventResult(not ok, content, None, task_id, plan.name, 1, duration)
        else:
            result = EventResult(True, value, value, task_id, plan.name, 1, duration)
            if plan.settings.stop_on_exception:
                run = EventRun(plan.name, False, [result], duration)
                raise StopProcessingError(_stop_message(plan.name, value), run) from value
        # One task: every evaluation state says success exactly when the task succeeded.
        return EventRun(plan.name, not result.error, [result], duration)

    def map(self, event: type[EventBase], /, *iterables: Iterable[Any]) -> EventRun:
        """Run one task per item of ``zip(*iterables)``, like :meth:`Executor.map`.

        Returns:
            The :class:`EventRun`, with results in input order.
        """
        plan = self._plan(event)
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        return _EventCall(self, plan, _zip_inputs(iterables), streaming=False).collect()

    def imap(self, event: type[EventBase], /, *iterables: Iterable[Any]) -> Iterator[EventResult]:
        """Stream one result per item of ``zip(*iterables)``, in input order.

        Inputs are read lazily and at most ``window`` tasks are in flight or buffered, so
        memory stays flat whatever the input length. Closing the iterator early cancels
        the tasks that have not started.
        """
        plan = self._plan(event)
        if not iterables:
            raise TypeError("imap() needs at least one iterable")
        call = _EventCall(self, plan, _zip_inputs(iterables), streaming=True)
        return call.execute()

    # -- executors ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this Runner has been shut down")

    def _next_call(self) -> int:
        return next(self._calls)

    def _plan(self, event: type[EventBase]) -> _Plan:
        """The settled plan for ``event``, made again when its settings or executor changed."""
        if self._closed:
            self._check_open()
        try:
            plan = self._plans.get(event)
        except TypeError:  # unhashable: certainly not an event class
            plan = None
        if plan is not None and plan.settings is settings_of(event):
            return plan
        event = _check_event(event)
        settings = settings_of(event)
        executor, key = self._executor_for(event, settings)
        window = self.window or min(MAX_DEFAULT_WINDOW, WINDOW_PER_WORKER * worker_count(executor))
        plan = self._plans[event] = _Plan(event, settings, executor, key, window)
        return plan

    def _executor_for(
        self, event: type[EventBase], settings: EventSettings
    ) -> tuple[Executor, tuple[Any, ...] | None]:
        self._check_open()
        executor = settings.executor
        if sends_work_away(executor) and event not in self._portable:
            self._check_portable(event)
        if not isinstance(executor, type):
            return executor, None
        kwargs = executor_kwargs(executor, settings.executor_config)
        key = (executor, *sorted(kwargs.items()))
        with self._lock:
            self._check_open()
            cached = self._executors.get(key)
            if cached is None:
                cached = self._executors[key] = build_executor(executor, kwargs)
        return cached, key

    def _check_portable(self, event: type[EventBase]) -> None:
        try:
            portable = pickle.loads(pickle.dumps(event)) is event
            problem = "it pickles as a different object"
        except Exception as exc:
            portable = False
            problem = f"{type(exc).__name__}: {exc}"
        if not portable:
            raise ImproperlyConfigured(
                f"{event.__name__} cannot be sent to a worker process ({problem}); "
                "define the event at module level, importable by the workers"
            )
        self._portable.add(event)

    @staticmethod
    def _build(key: tuple[Any, ...]) -> Executor:
        return build_executor(key[0], dict(item for item in key[1:] if item != ISOLATION))

    def _isolation_executor(self, key: tuple[Any, ...]) -> Executor:
        """The one-worker pool that re-runs suspects of ``key``'s pool, one at a time."""
        key = isolation_key(key)
        with self._lock:
            self._check_open()
            executor = self._executors.get(key)
            if executor is None:
                executor = self._executors[key] = self._build(key)
        return executor

    def _replace_executor(self, key: tuple[Any, ...], broken: Executor) -> Executor:
        """Swap a broken pool for a fresh one (once, however many calls notice)."""
        with self._lock:
            self._check_open()
            current = self._executors.get(key)
            if current is None or current is broken:
                current = self._executors[key] = self._build(key)
                self._retired.append(broken)
                self._plans.clear()
        # A broken pool has already lost its workers; this only joins its threads.
        broken.shutdown(wait=True, cancel_futures=True)
        return current

    # -- lifetime ------------------------------------------------------------------------
    def shutdown(self, wait: bool = True) -> None:
        """Shut down every executor this runner created; executor instances are left alone.

        Work not yet started is cancelled. With ``wait=True`` (the default) this returns
        once no thread or process of those executors is left.
        """
        with self._lock:
            self._closed = True
            self._plans.clear()
            executors = [*self._executors.values(), *self._retired]
            self._executors.clear()
            self._retired.clear()
            reapers = list(self._reapers)

        def shut_down_all() -> None:
            for executor in executors:
                executor.shutdown(wait=True, cancel_futures=True)

        if wait:
            shut_down_all()
            for reaper in reapers:
                reaper.join()
        elif executors:
            # A process pool shut down without waiting forgets its own threads, so nothing
            # could wait for them later: the waiting happens here, in the background, and a
            # later shutdown() waits for that.
            reaper = threading.Thread(target=shut_down_all, name="event_pipeline-shutdown")
            reaper.start()
            with self._lock:
                self._reapers.append(reaper)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


_default_runner: Runner | None = None
_default_lock = threading.Lock()


def default_runner() -> Runner:
    """The process-wide runner behind ``MyEvent.run`` and friends; shut down at exit."""
    global _default_runner
    runner = _default_runner
    if runner is None:
        with _default_lock:
            if _default_runner is None:
                _default_runner = Runner()
                atexit.register(_default_runner.shutdown)
            runner = _default_runner
    return runner


def run(event: type[EventBase], /, *args: Any, **kwargs: Any) -> EventRun:
    """Run one task of ``event`` on the default runner: ``process(*args, **kwargs)``."""
    return default_runner().run(event, *args, **kwargs)
