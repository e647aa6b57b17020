"""The runner: how events are run.

One call (``run``, ``map`` or ``imap``) is driven by a :class:`_Coordinator` in the calling
thread; workers only ever run single attempts. The flow of a task::

    inputs ─► _Task ─► group.ready ─► batch ─► executor.submit ─► future in flight
                           ▲                                          │
                           │ when due                                 │ wait(FIRST_COMPLETED,
                           │                                          │      timeout=next due)
                      retry heap ◄── RETRY, attempts left ◄── classify each outcome
                                                                      │ otherwise
                                                                      ▼
                                               EventResult ─► the unit's on_result callback

The coordinator knows nothing of ``map`` or ``imap``: it schedules *tasks* of any number
of events and calls back when each one settles, so later drivers (flows) can decide from a
callback what to submit next, on the same executors, window and retry heap. A task
waiting for its retry sits in the heap, never on a worker; meanwhile the executors are fed
other ready work.

Tasks of one event are sent in batches (one work item, one future, many tasks) once the
runner has measured that they are short; each task in a batch keeps its own attempts,
retries, result and timing. A group never has more than two batches per worker in
flight, so a handful of slow tasks still run one per worker.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import heapq
import inspect
import itertools
import logging
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import (
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
)
from typing import Any

from . import _event as _event_module
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
from ._retry import backoff, is_retryable, retry_overrides
from ._sentinel import EMPTY
from ._worker import FATAL, OK, RETRY, attempt, load_outcome, run_batch, run_pickled
from .exceptions import ImproperlyConfigured, StopProcessingError

__all__ = ["Clock", "Runner", "default_runner", "run"]

logger = logging.getLogger("event_pipeline")

#: Default window per worker, and the ceiling of the default.
WINDOW_PER_WORKER = 64
MAX_DEFAULT_WINDOW = 10_000
#: A batch aims to keep a worker busy this long; longer tasks go one per work item.
BATCH_TARGET_SECONDS = 0.002
MAX_BATCH = 1024
#: The longest single wait. Python acts on a signal (Ctrl-C) that lands just before a wait
#: starts only when the wait returns, and externally cancelled futures never end one.
WAIT_SLICE = 0.1


class Clock:
    """Time as the runner sees it: a seam so tests can drive retries without sleeping."""

    # The real functions themselves, not wrappers: ``run`` reads the clock twice per call.
    monotonic: Callable[[], float] = staticmethod(time.monotonic)
    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def wait(self, futures: Iterable[Future[Any]], timeout: float | None) -> set[Future[Any]]:
        """Block until one of ``futures`` is done or ``timeout`` seconds passed."""
        done, _ = concurrent.futures.wait(
            futures, timeout, return_when=concurrent.futures.FIRST_COMPLETED
        )
        return done


class _SigintDeferred:
    """Holds Ctrl-C back while a standard pool records a work item, then acts on it.

    A ``KeyboardInterrupt`` raised inside ``ThreadPoolExecutor.submit`` can land between
    starting a worker thread and recording it, and ``shutdown()`` then never joins that
    thread. Deferred to just after ``submit``, the interrupt finds the work item on record,
    where the coordinator can cancel it. Only the main thread receives signals, and only it
    may install handlers.
    """

    __slots__ = ("pending", "previous")

    def __enter__(self) -> None:
        self.pending: tuple[int, Any] | None = None
        self.previous = signal.getsignal(signal.SIGINT)
        if callable(self.previous):
            signal.signal(signal.SIGINT, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self.pending = (signum, frame)

    def __exit__(self, *exc_info: object) -> None:
        previous = self.previous
        if callable(previous):
            signal.signal(signal.SIGINT, previous)
            if self.pending is not None:
                previous(*self.pending)


class _Task:
    """One unit of work: one set of arguments for one event, over all its attempts."""

    __slots__ = (
        "args",
        "attempts",
        "group",
        "index",
        "isolate",
        "kwargs",
        "on_result",
        "payload",
        "started",
    )

    def __init__(
        self,
        group: _Group,
        index: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_result: Callable[[_Task, EventResult], None],
    ) -> None:
        self.group = group
        self.index = index
        self.args = args
        self.kwargs = kwargs
        self.on_result = on_result
        self.attempts = 0
        self.started: float | None = None
        self.payload: bytes | None = None
        #: Run alone on the isolation pool: it was in a pool that broke.
        self.isolate = False


class _Group:
    """The tasks of one event class going to one executor, with what batching has learnt."""

    __slots__ = (
        "batches_in_flight",
        "event",
        "executor",
        "executor_key",
        "isolating",
        "max_batches",
        "name",
        "per_task",
        "pool",
        "ready",
        "remote",
        "settings",
        "suspects",
        "task_prefix",
        "window",
    )

    def __init__(
        self,
        event: type[EventBase],
        settings: EventSettings,
        executor: Executor,
        executor_key: tuple[Any, ...] | None,
        window: int,
        task_prefix: str,
    ) -> None:
        self.event = event
        self.name = event.__name__
        self.settings = settings
        self.executor = executor
        self.executor_key = executor_key
        self.remote = sends_work_away(executor)
        #: A standard pool, whose submit() Ctrl-C must not interrupt (see _SigintDeferred).
        self.pool = isinstance(executor, (ThreadPoolExecutor, ProcessPoolExecutor))
        self.window = window
        self.task_prefix = task_prefix
        self.ready: deque[_Task] = deque()
        self.batches_in_flight = 0
        # Tasks that were in a pool when it broke, waiting to be re-run one at a time.
        self.suspects: deque[_Task] = deque()
        self.isolating = False
        # Two work items per worker keep every worker busy between completions; an inline
        # executor runs one at a time, so a stop takes effect before the next task starts.
        self.max_batches = 1 if type(executor) is DefaultExecutor else 2 * worker_count(executor)
        # Seconds per task as measured inside the workers; None until a batch came back.
        self.per_task: float | None = None

    def batch_size(self) -> int:
        if (
            self.per_task is None
            or self.settings.stop_on_exception
            or self.settings.executor_config.max_tasks_per_child is not EMPTY
        ):
            # Unknown durations; a run that must stop before further tasks start; a pool
            # that counts work items per worker process: one task per work item.
            return 1
        by_time = int(BATCH_TARGET_SECONDS / max(self.per_task, 1e-9))
        return max(1, min(MAX_BATCH, by_time, self.window // self.max_batches))

    def max_attempts(self) -> int:
        policy = self.settings.retry_policy
        attempts = 1 if policy is None else policy.max_attempts
        override = retry_overrides.current
        if override is not None and override.max_attempts is not None:
            attempts = min(attempts, override.max_attempts)
        return attempts

    def retry_wait(self, retry: int) -> float:
        override = retry_overrides.current
        if override is not None and override.zero_waits:
            return 0.0
        policy = self.settings.retry_policy
        assert policy is not None
        return backoff(policy, retry)


def _isolation_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The cache key of the one-worker pool where suspects of ``key``'s pool are re-run."""
    kwargs = dict(key[1:])
    if "max_workers" in kwargs:
        kwargs["max_workers"] = 1
    return (key[0], *sorted(kwargs.items()), _ISOLATION)


_ISOLATION = ("isolation", True)


class _Coordinator:
    """Schedules tasks on executors for one call, in the calling thread."""

    def __init__(self, runner: Runner, clock: Clock) -> None:
        self.runner = runner
        self.clock = clock
        #: Future -> (group, its tasks, the executor it went to, whether run in isolation).
        self.in_flight: dict[Future[Any], tuple[_Group, list[_Task], Executor, bool]] = {}
        self.retries: list[tuple[float, int, _Task]] = []
        self.groups: list[_Group] = []
        self.on_main_thread = threading.current_thread() is threading.main_thread()
        self._sequence = itertools.count()
        #: Tasks submitted and not settled, or waiting for a retry.
        self.load = 0

    # -- adding work ---------------------------------------------------------------------
    def add(self, task: _Task) -> None:
        group = task.group
        self.load += 1
        if group.remote:
            try:
                task.payload = pickle.dumps((task.args, task.kwargs), pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                error = TypeError(
                    f"{group.name}: the arguments of task {group.task_prefix}{task.index} "
                    f"cannot be sent to a worker process ({type(exc).__name__}: {exc}); "
                    "pass picklable values, with classes and functions defined at module level"
                )
                error.__cause__ = exc
                self._settle(task, FATAL, error, self.clock.monotonic())
                return
        group.ready.append(task)

    def resume(self, task: _Task, kind: int, value: Any) -> None:
        """Take over a task whose attempt already ran elsewhere, with its outcome."""
        self.load += 1
        self._settle(task, kind, value, self.clock.monotonic())

    def idle(self) -> bool:
        return self.load == 0

    # -- the loop ------------------------------------------------------------------------
    def step(self) -> None:
        """Submit what is ready, then wait for one completion or the next due retry."""
        clock = self.clock
        now = clock.monotonic()
        retries = self.retries
        while retries and retries[0][0] <= now:
            task = heapq.heappop(retries)[2]
            if task.isolate:
                task.group.suspects.append(task)
            else:
                task.group.ready.appendleft(task)
        for group in self.groups:
            if group.ready or group.suspects:
                self._dispatch(group)
        if self.in_flight:
            timeout = WAIT_SLICE
            if retries:
                timeout = min(timeout, max(0.0, retries[0][0] - clock.monotonic()))
            done = clock.wait(self.in_flight, timeout)
            if not done:
                # A future cancelled by its executor's shutdown(cancel_futures=True) never
                # wakes concurrent.futures.wait(): look for them at each slice's end.
                done = {future for future in self.in_flight if future.cancelled()}
            for future in done:
                self._complete(future)
        elif retries:
            delay = retries[0][0] - clock.monotonic()
            if delay > 0:
                clock.sleep(delay)

    def cancel(self) -> None:
        """Cancel every work item that has not started; running ones are not waited for."""
        for future in self.in_flight:
            future.cancel()

    # -- submitting ----------------------------------------------------------------------
    def _dispatch(self, group: _Group) -> None:
        if group.suspects and not group.isolating:
            self._submit(group, [group.suspects.popleft()], isolated=True)
        ready = group.ready
        while ready and group.batches_in_flight < group.max_batches:
            size = group.batch_size()
            if size == 1:
                tasks = [ready.popleft()]
            else:
                tasks = [ready.popleft() for _ in range(min(size, len(ready)))]
            self._submit(group, tasks)

    def _submit(self, group: _Group, tasks: list[_Task], isolated: bool = False) -> None:
        now = self.clock.monotonic()
        for task in tasks:
            if task.started is None:
                task.started = now
        retry_on = group.settings.retry_on
        if isolated:
            assert group.executor_key is not None
            executor = self.runner._isolation_executor(group.executor_key)
        else:
            executor = group.executor
        if group.remote:
            function: Callable[..., Any] = run_pickled
            work: list[Any] = [task.payload for task in tasks]
        else:
            function = run_batch
            work = [(task.args, task.kwargs) for task in tasks]
        future: Future[Any]
        try:
            if group.pool and self.on_main_thread:
                with _SigintDeferred():
                    future = executor.submit(function, group.event, work, retry_on)
            else:
                future = executor.submit(function, group.event, work, retry_on)
        except BrokenExecutor as exc:
            # The pool broke before it took these tasks: they never ran, so they are not
            # suspects and are charged nothing. They wait for the fresh pool, or, when the
            # pool is the user's own and will not be replaced, end with the error.
            if group.executor_key is not None:
                self._replace(group, executor, isolated)
                (group.suspects if isolated else group.ready).extendleft(reversed(tasks))
                return
            failure: Exception = exc
        except Exception as exc:
            failure = exc
        else:
            if isolated:
                group.isolating = True
            else:
                group.batches_in_flight += 1
            self.in_flight[future] = (group, tasks, executor, isolated)
            return
        # Shut down by its owner, broken, or unable to reach its workers: the tasks never
        # ran; they end failed and uncharged, each with its one result.
        self.runner._check_open()
        error_type = type(failure) if isinstance(failure, BrokenExecutor) else RuntimeError
        error = error_type(
            f"{group.name}: the executor {executor!r} refused new work "
            f"({type(failure).__name__}: {failure})"
        )
        error.__cause__ = failure
        for task in tasks:
            self._settle(task, FATAL, error, now)

    # -- completions ---------------------------------------------------------------------
    def _complete(self, future: Future[Any]) -> None:
        group, tasks, executor, isolated = self.in_flight.pop(future)
        if isolated:
            group.isolating = False
        else:
            group.batches_in_flight -= 1
        now = self.clock.monotonic()
        if future.cancelled():
            self.runner._check_open()
            error = CancelledError(f"{group.name}: the executor cancelled the task")
            for task in tasks:
                self._settle(task, FATAL, error, now)
            return
        exc = future.exception()
        if exc is not None:
            if not isinstance(exc, Exception):
                raise exc
            if isinstance(exc, BrokenExecutor):
                self._broken(group, tasks, executor, isolated, exc)
                return
            # The executor itself failed the work item (a Dask worker lost, say): that is
            # each task's attempt raising, judged by its retry policy like any other.
            kind = self._classify(group, exc)
            for task in tasks:
                task.attempts += 1
                self._settle(task, kind, exc, now)
            return
        elapsed, outcomes = future.result()
        if tasks:
            per_task = elapsed / len(tasks)
            previous = group.per_task
            group.per_task = per_task if previous is None else 0.7 * previous + 0.3 * per_task
        if group.remote:
            name = group.name
            outcomes = [load_outcome(name, blob) for blob in outcomes]
        for task, (kind, value) in zip(tasks, outcomes, strict=True):
            task.attempts += 1
            if isolated:
                task.isolate = False  # it ran alone and did not break the pool: innocent
            self._settle(task, kind, value, now)

    def _replace(self, group: _Group, broken: Executor, isolated: bool) -> None:
        """Swap a broken pool of the runner's for a fresh one."""
        key = group.executor_key
        assert key is not None
        if isolated:
            self.runner._replace_executor(_isolation_key(key), broken)
        else:
            group.executor = self.runner._replace_executor(key, broken)

    def _charge(self, group: _Group, tasks: list[_Task], exc: BaseException, why: str) -> None:
        """End an attempt of each task with ``exc``, restated to name the event and task."""
        now = self.clock.monotonic()
        for task in tasks:
            task.attempts += 1
            error = type(exc)(f"{group.name}: task {group.task_prefix}{task.index} {why}: {exc}")
            error.__cause__ = exc
            self._settle(task, self._classify(group, error), error, now)

    def _broken(
        self,
        group: _Group,
        tasks: list[_Task],
        executor: Executor,
        isolated: bool,
        exc: BaseException,
    ) -> None:
        """A worker died and broke the pool that ran ``tasks``.

        The standard library fails every task that was in a broken pool, guilty or not.
        Those tasks become suspects, each re-run alone on a one-worker isolation pool: a
        suspect that breaks that pool too is the culprit and is charged an attempt that
        raised ``exc``; the others were innocent and are charged nothing. A pool of the
        user's own cannot be replaced: every task that was in it is charged.
        """
        if group.executor_key is None:
            self._charge(group, tasks, exc, f"was in the executor {executor!r} when it broke")
            return
        self._replace(group, executor, isolated)
        if isolated:
            self._charge(group, tasks, exc, "broke its worker process when run alone")
            return
        for task in tasks:
            task.isolate = True
        group.suspects.extend(tasks)

    @staticmethod
    def _classify(group: _Group, exc: BaseException) -> int:
        retry_on = group.settings.retry_on
        return RETRY if retry_on is not None and is_retryable(retry_on, exc) else FATAL

    def _settle(self, task: _Task, kind: int, value: Any, now: float) -> None:
        group = task.group
        if kind == RETRY and task.attempts < group.max_attempts():
            delay = group.retry_wait(task.attempts)
            logger.info(
                "retrying %s task %s%d: attempt %d raised %s; next attempt in %.3fs",
                group.name,
                group.task_prefix,
                task.index,
                task.attempts,
                type(value).__name__,
                delay,
                extra={
                    "event_name": group.name,
                    "task_id": f"{group.task_prefix}{task.index}",
                    "attempt": task.attempts,
                    "exception_type": type(value).__name__,
                    "delay": delay,
                },
            )
            heapq.heappush(self.retries, (now + delay, next(self._sequence), task))
            return
        self.load -= 1
        started = now if task.started is None else task.started
        if kind == OK:
            ok, content = value
            result = EventResult(
                not ok,
                content,
                None,
                f"{group.task_prefix}{task.index}",
                group.name,
                task.attempts,
                now - started,
            )
        else:
            result = EventResult(
                True,
                value,
                value,
                f"{group.task_prefix}{task.index}",
                group.name,
                task.attempts,
                now - started,
            )
        task.on_result(task, result)


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
        self.coordinator = _Coordinator(runner, runner._clock)
        self.group = _Group(
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

    def _on_result(self, task: _Task, result: EventResult) -> None:
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
                    coordinator.add(_Task(group, index, args, kwargs, on_result))
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
            task = _Task(call.group, 0, args, kwargs, call._on_result)
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
        return build_executor(key[0], dict(item for item in key[1:] if item != _ISOLATION))

    def _isolation_executor(self, key: tuple[Any, ...]) -> Executor:
        """The one-worker pool that re-runs suspects of ``key``'s pool, one at a time."""
        key = _isolation_key(key)
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
