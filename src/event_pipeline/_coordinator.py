"""The coordinator: how the tasks of a call are scheduled.

One call (``run``, ``map`` or ``imap``) is driven by a :class:`Coordinator` in the calling
thread; workers only ever run single attempts. The flow of a task::

    inputs ─► Task  ─► group.ready ─► batch ─► executor.submit ─► future in flight
                           ▲                                          │
                           │ when due                                 │ wait(FIRST_COMPLETED,
                           │                                          │  timeout=next due, ≤ 0.1 s)
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

import concurrent.futures
import heapq
import itertools
import logging
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import (
    BrokenExecutor,
    CancelledError,
    Executor,
    Future,
)
from typing import TYPE_CHECKING, Any

from ._event import EventBase, EventSettings
from ._executors import (
    DefaultExecutor,
    is_standard_pool,
    lost_a_worker,
    sends_work_away,
    worker_count,
)
from ._results import EventResult
from ._retry import backoff, is_retryable, retry_overrides
from ._worker import FATAL, OK, RETRY, load_outcome, run_batch, run_pickled

if TYPE_CHECKING:
    from ._runner import Runner

__all__ = ["ISOLATION", "Clock", "Coordinator", "Group", "Task", "isolation_key"]

logger = logging.getLogger("event_pipeline")

_signals: Any
try:
    # The C functions under the signal module: its Python wrappers convert handlers to and
    # from enums, which costs more than the submit that SigintDeferred guards.
    import _signal as _signals  # type: ignore[import-not-found, no-redef]
except ImportError:  # pragma: no cover - not CPython
    _signals = signal

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


class SigintDeferred:
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
        self.previous = _signals.getsignal(signal.SIGINT)
        if callable(self.previous):
            _signals.signal(signal.SIGINT, self._record)

    def _record(self, signum: int, frame: Any) -> None:
        self.pending = (signum, frame)

    def __exit__(self, *exc_info: object) -> None:
        previous = self.previous
        if callable(previous):
            _signals.signal(signal.SIGINT, previous)
            if self.pending is not None:
                previous(*self.pending)


class Task:
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
        group: Group,
        index: int,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        on_result: Callable[[Task, EventResult], None],
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


class Group:
    """The tasks of one event class going to one executor, with what batching has learnt."""

    __slots__ = (
        "batches_in_flight",
        "event",
        "executor",
        "executor_key",
        "isolating",
        "isolation_pool",
        "max_batches",
        "name",
        "per_task",
        "pool",
        "ready",
        "remote",
        "settings",
        "suspects",
        "task_prefix",
        "unbatched",
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
        #: A standard pool, whose submit() Ctrl-C must not interrupt (see SigintDeferred).
        self.pool = is_standard_pool(executor)
        # Suspects of a pool the runner owns re-run on a one-worker pool of their own; other
        # executors that lose workers (a Dask cluster survives it) re-run them in place.
        self.isolation_pool = self.pool and executor_key is not None
        self.window = window
        self.task_prefix = task_prefix
        self.ready: deque[Task] = deque()
        self.batches_in_flight = 0
        # Tasks that were in a pool when it broke, waiting to be re-run one at a time.
        self.suspects: deque[Task] = deque()
        self.isolating = False
        # Two work items per worker keep every worker busy between completions; an inline
        # executor runs one at a time, so a stop takes effect before the next task starts.
        self.max_batches = 1 if type(executor) is DefaultExecutor else 2 * worker_count(executor)
        # Seconds per task as measured inside the workers; None until a batch came back.
        self.per_task: float | None = None
        # One task per work item for a run that must stop before further tasks start, and
        # for a pool that replaces its workers after so many work items.
        self.unbatched = settings.stop_on_exception or any(
            name == "max_tasks_per_child" for name, _ in (executor_key or ())[1:]
        )

    def batch_size(self) -> int:
        if self.per_task is None or self.unbatched:
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
        if retry_overrides.current is not None:
            return 0.0
        policy = self.settings.retry_policy
        assert policy is not None
        return backoff(policy, retry)


def isolation_key(key: tuple[Any, ...]) -> tuple[Any, ...]:
    """The cache key of the one-worker pool where suspects of ``key``'s pool are re-run."""
    kwargs = dict(key[1:])
    if "max_workers" in kwargs:
        kwargs["max_workers"] = 1
    return (key[0], *sorted(kwargs.items()), ISOLATION)


ISOLATION = ("isolation", True)


class Coordinator:
    """Schedules tasks on executors for one call, in the calling thread."""

    def __init__(self, runner: Runner, clock: Clock) -> None:
        self.runner = runner
        self.clock = clock
        #: Future -> (group, its tasks, the executor it went to, whether run in isolation).
        self.in_flight: dict[Future[Any], tuple[Group, list[Task], Executor, bool]] = {}
        self.retries: list[tuple[float, int, Task]] = []
        self.groups: list[Group] = []
        self.on_main_thread = threading.current_thread() is threading.main_thread()
        self._sequence = itertools.count()
        #: Tasks submitted and not settled, or waiting for a retry.
        self.load = 0

    # -- adding work ---------------------------------------------------------------------
    def add(self, task: Task) -> None:
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

    def resume(self, task: Task, kind: int, value: Any) -> None:
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
    def _dispatch(self, group: Group) -> None:
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

    def _submit(self, group: Group, tasks: list[Task], isolated: bool = False) -> None:
        now = self.clock.monotonic()
        for task in tasks:
            if task.started is None:
                task.started = now
        retry_on = group.settings.retry_on
        if isolated and group.isolation_pool:
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
                with SigintDeferred():
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
            if lost_a_worker(executor, exc):
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

    def _replace(self, group: Group, broken: Executor, isolated: bool) -> None:
        """Swap a broken pool of the runner's for a fresh one."""
        key = group.executor_key
        assert key is not None
        if isolated:
            self.runner._replace_executor(isolation_key(key), broken)
        else:
            group.executor = self.runner._replace_executor(key, broken)

    def _charge(self, group: Group, tasks: list[Task], exc: BaseException, why: str) -> None:
        """End an attempt of each task with ``exc``, restated to name the event and task."""
        now = self.clock.monotonic()
        for task in tasks:
            task.attempts += 1
            message = f"{group.name}: task {group.task_prefix}{task.index} {why}: {exc}"
            try:
                error: BaseException = type(exc)(message)
            except Exception:  # an exception type that takes other arguments: keep it as is
                error = exc
            else:
                error.__cause__ = exc
            self._settle(task, self._classify(group, error), error, now)

    def _broken(
        self,
        group: Group,
        tasks: list[Task],
        executor: Executor,
        isolated: bool,
        exc: BaseException,
    ) -> None:
        """A worker died, failing the work items that were with it: ``tasks`` among them.

        The standard library fails every task that was in a broken pool, guilty or not, and
        Dask every task queued on a dead worker. Those tasks become suspects, each re-run
        alone (on a one-worker isolation pool for the runner's own pools): a suspect that
        loses its worker again is the culprit and is charged an attempt that raised ``exc``;
        the others were innocent and are charged nothing. A broken pool of the user's own
        cannot be replaced: every task that was in it is charged.
        """
        if isinstance(exc, BrokenExecutor):
            if group.executor_key is None:
                self._charge(group, tasks, exc, f"was in the executor {executor!r} when it broke")
                return
            self._replace(group, executor, isolated)
        if isolated:
            self._charge(group, tasks, exc, "lost its worker process when run alone")
            return
        for task in tasks:
            task.isolate = True
        group.suspects.extend(tasks)

    @staticmethod
    def _classify(group: Group, exc: BaseException) -> int:
        retry_on = group.settings.retry_on
        return RETRY if retry_on is not None and is_retryable(retry_on, exc) else FATAL

    def _settle(self, task: Task, kind: int, value: Any, now: float) -> None:
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
