"""The runner: the public calls, the executors it owns and the default runner.

Each call builds a :class:`Coordinator` (see ``_coordinator``) and an event-run unit (see
``_units``) and drives them from the calling thread::

    Runner.run/map/imap ─► plan (cached per event) ─► EventRunUnit ─► Coordinator.step()…

The runner owns what outlives a call: its :class:`ExecutorCache` and a :class:`Plan` per
event class (held weakly). A runner notices when it finds itself in a forked child and
starts afresh there: the parent's pools cannot be used from the child.
"""

from __future__ import annotations

import atexit
import inspect
import itertools
import operator
import os
import pickle
import sys
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from . import _event as _event_module
from ._coordinator import Clock, Coordinator, Task
from ._event import TIMEOUT_EXECUTORS, EventBase, EventSettings, enforces_timeout, settings_of
from ._executors import (
    DefaultExecutor,
    ExecutorCache,
    ExecutorKey,
    runs_in,
    sends_work_away,
    worker_count,
)
from ._guard import check_main_importable, leave_if_bootstrapping
from ._hooks import hook_generation as _hook_generation
from ._hooks import resolve_hooks
from ._plan import Plan
from ._progress import Progress, ProgressLine, ProgressTracker
from ._results import EventResult, EventRun
from ._tasks import NO_KWARGS
from ._units import EventRunUnit, Inputs, raise_stop
from ._worker import OK, RETRY, attempt, describe_exception
from .exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from ._flowrun import FlowRun
    from .flow._model import Flow
    from .flow._run import FlowProgram

__all__ = ["Clock", "Runner", "default_runner", "run"]

#: Default window per worker, and the ceiling of the default. A pool whose work travels
#: (processes, a cluster) gets more: its batches are larger (a round trip costs more), and
#: every worker slot needs a full one at hand.
WINDOW_PER_WORKER = 256
REMOTE_WINDOW_PER_WORKER = 1024
MAX_DEFAULT_WINDOW = 10_000


def _default_window(executor: Executor) -> int:
    per_worker = REMOTE_WINDOW_PER_WORKER if sends_work_away(executor) else WINDOW_PER_WORKER
    return min(MAX_DEFAULT_WINDOW, per_worker * worker_count(executor))

#: Compiled flows a runner keeps; the oldest goes first.
MAX_PROGRAMS = 256

#: The executor of a call made from inside a worker of the pool it would use.
_INLINE = DefaultExecutor()


def _check_event(event: object) -> type[EventBase]:
    if not (isinstance(event, type) and issubclass(event, EventBase)):
        raise TypeError(
            f"expected an EventBase subclass (a class-based or @event event), got {event!r}"
        )
    if inspect.isabstract(event):
        raise TypeError(f"{event.__name__} cannot run: it does not define process()")
    return event


def _is_event_like(value: object) -> bool:
    # Anything that is not a Flow goes down the event path, which names what is wrong.
    from .flow._model import Flow

    return not isinstance(value, Flow)


def _total(iterables: tuple[Iterable[Any], ...]) -> int | None:
    """How many tasks ``zip(*iterables)`` makes, when every iterable has a ``len()``."""
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except TypeError:
        return None


def _may_wait(iterables: tuple[Iterable[Any], ...]) -> bool:
    """Whether reading the inputs might wait for earlier tasks to start: some iterable
    tells neither its length nor a hint of it (a generator, a queue's iterator). Sized
    inputs and iterators that know how much is left (``itertools.repeat(x, n)``) never do.
    """
    for iterable in iterables:
        try:
            len(iterable)  # type: ignore[arg-type]
            continue
        except TypeError:
            pass
        try:
            if operator.length_hint(iterable) > 0:
                continue
        except Exception:
            pass
        return True
    return False


def _zip_inputs(iterables: tuple[Iterable[Any], ...]) -> tuple[Inputs, Iterator[Any] | None]:
    """The ``(args, kwargs)`` of each task (from C iterators: no Python frame per input);
    and, over one iterable, its iterator, which the pairs are read from: a unit may read
    the items themselves in bulk, as single calls (see ``Fresh``)."""
    if len(iterables) == 1:
        values = iter(iterables[0])
        return zip(zip(values), itertools.repeat(NO_KWARGS)), values
    return zip(zip(*iterables, strict=False), itertools.repeat(NO_KWARGS)), None


def _check_portable(event: type[EventBase]) -> None:
    check_main_importable(event)
    try:
        portable = pickle.loads(pickle.dumps(event)) is event
        problem = "it pickles as a different object"
    except Exception as exc:
        portable = False
        problem = describe_exception(exc)
    if not portable:
        raise ImproperlyConfigured(
            f"{event.__name__} cannot be sent to a worker process ({problem}); "
            "define the event at module level, importable by the workers"
        )


_runners: weakref.WeakSet[Runner] = weakref.WeakSet()

_T = TypeVar("_T", covariant=True)


class _Streaming(Protocol[_T]):
    """What a streamed call's unit offers its driver (events' and flows' alike)."""

    @property
    def stop_error(self) -> BaseException | None: ...

    @property
    def finished(self) -> bool: ...

    def ordered(self) -> Iterator[_T]: ...

    def raise_stop(self) -> Any: ...


class Runner:
    """Runs events on their executors, with retries, windows and evaluation.

    A runner builds one executor per (executor class, effective configuration) and reuses it
    until :meth:`shutdown`. It is a context manager and may be shared by threads.

    Args:
        window: the most tasks of one call in flight, waiting for a retry, or (for
            :meth:`imap`) finished and buffered behind an earlier task. Default:
            256 per worker of the event's executor (1,024 on a process pool or a
            cluster), at most 10,000.
        hooks: objects with any of ``on_retry``, ``on_result``, ``on_run``, ``on_step``,
            ``on_flow``, called in the calling thread as things happen (see the
            observability guide); process-wide ones (:func:`add_hook`) are called too.
        progress: ``True`` draws a progress line on stderr during each call; a callable
            receives :class:`Progress` snapshots instead (at most 10 a second, at least 1,
            and once at the end).
        batch_size: tasks sent to a worker in one work item, fixed, for the cases batching
            cannot judge (``1`` turns batching off). Default: found by measuring how long
            tasks take, per event (see the runner guide).

    Raises:
        ValueError: ``window`` is not a positive int.
        TypeError: a hook is not a hook, or ``progress`` is neither a bool nor callable.
    """

    def __init__(
        self,
        *,
        window: int | None = None,
        hooks: Sequence[object] = (),
        progress: bool | Callable[[Progress], object] = False,
        batch_size: int | None = None,
    ) -> None:
        if window is not None and (
            not isinstance(window, int) or isinstance(window, bool) or window < 1
        ):
            raise ValueError(f"window must be an int greater than 0 or None, got {window!r}")
        if not isinstance(progress, bool) and not callable(progress):
            raise TypeError(f"progress must be a bool or a callable, got {progress!r}")
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(
                f"batch_size must be an int greater than 0 or None, got {batch_size!r}"
            )
        self.window = window
        self.batch_size = batch_size
        self._hooks = resolve_hooks(hooks)
        self._local_hooks = tuple(hooks)
        self._progress = progress
        self._clock = Clock()
        self._cache = ExecutorCache()
        # Plans by id(event class), each holding its class weakly; an entry goes when its
        # class is collected, so per-call event classes do not pile up.
        self._plans: dict[int, Plan] = {}
        # Compiled flows, by flow (structural equality), with the settings generation they
        # were compiled in; bounded, since flows may be built per call.
        self._programs: dict[Flow, tuple[int, FlowProgram]] = {}
        self._calls = itertools.count(1)
        self._pid = os.getpid()
        _runners.add(self)

    @classmethod
    def _with_clock(cls, clock: Clock, *, window: int | None = None) -> Runner:
        """A runner on ``clock`` (a seam for tests that drive time)."""
        runner = cls(window=window)
        runner._clock = clock
        return runner

    # -- the three calls -------------------------------------------------------------------
    @overload
    def run(self, event: type[EventBase], /, *args: Any, **kwargs: Any) -> EventRun: ...

    @overload
    def run(self, event: Flow, /, *args: Any, **kwargs: Any) -> FlowRun: ...

    def run(self, event: type[EventBase] | Flow, /, *args: Any, **kwargs: Any) -> Any:
        """Run one task, ``process(*args, **kwargs)``; or one run of a flow.

        For a :class:`~event_pipeline.Flow`, ``args`` go to its entry steps and ``kwargs``
        are named inputs, given to every step that declares a parameter of that name.

        Returns:
            The :class:`EventRun` of that one task (a :class:`FlowRun` for a flow).

        Raises:
            TypeError: ``event`` is not an event class.
            ImproperlyConfigured: a setting reassigned since class creation is invalid, or
                the event cannot be sent to its process pool.
            StopProcessingError: the task ended with an exception and the event has
                ``stop_on_exception=True``.
        """
        # The common case in a handful of operations: a plan whose settings are current.
        plan = self._plans.get(id(event))
        if (
            plan is None
            or plan._event() is not event
            or plan.settings.generation != _event_module._generation
            or plan.settings.dict_snapshots
        ):
            if not isinstance(event, type):
                return self._run_flow(self._program(event), args, kwargs)
            plan = self._plan(event)
        if plan.inline and not plan.executor._shutdown:  # type: ignore[attr-defined]
            if self._progress is not False:
                return self._collect(plan, iter([(args, kwargs)]), total=1)
            return self._run_inline(plan, args, kwargs)
        return self._collect(plan, iter([(args, kwargs)]), total=1)

    def _run_inline(
        self, plan: Plan, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> EventRun:
        """``run`` on the inline executor: the first attempt without futures or scheduling.

        A first attempt that calls for a retry hands the task to the coordinator, so
        retries have one implementation.
        """
        clock = self._clock
        started = clock.monotonic()
        event = plan._event()
        kind, value = attempt(event, args, kwargs, plan.retry_on)  # type: ignore[arg-type]
        if kind == RETRY:
            return self._collect(plan, iter(()), resume=(args, kwargs, kind, value, started))
        duration = clock.monotonic() - started
        task_id = f"{next(self._calls)}:0"
        if kind == OK:
            ok, content = value
            result = EventResult(not ok, content, None, task_id, plan.name, 1, duration)
        else:
            result = EventResult(True, value, value, task_id, plan.name, 1, duration)
        # One task: every evaluation state says success exactly when the task succeeded.
        run = EventRun(plan.name, not result.error, [result], duration)
        hooks = self._hooks
        if hooks.generation != _hook_generation():
            hooks = self._hooks = resolve_hooks(self._local_hooks, hooks)
        if hooks:
            if hooks.on_result:
                hooks.emit_result(result)
            if hooks.on_run:
                hooks.emit_run(run)
        if kind != OK and plan.settings.stop_on_exception:
            raise_stop(run, plan.name, value)
        return run

    @overload
    def map(self, event: type[EventBase], /, *iterables: Iterable[Any]) -> EventRun: ...

    @overload
    def map(self, event: Flow, /, *iterables: Iterable[Any], **inputs: Any) -> list[FlowRun]: ...

    def map(
        self, event: type[EventBase] | Flow, /, *iterables: Iterable[Any], **inputs: Any
    ) -> Any:
        """Run one task per item of ``zip(*iterables)``, like :meth:`Executor.map`; for a
        flow, one flow run per item (``inputs`` go to every run).

        Returns:
            The :class:`EventRun`, with results in input order (for a flow, the list of
            :class:`FlowRun` s in input order).
        """
        if not isinstance(event, type) and not _is_event_like(event):
            program = self._program(event)
            if not iterables:
                raise TypeError("map() needs at least one iterable")
            return list(self._stream_flows(program, iterables, inputs))
        plan = self._plan(event)
        if inputs:
            raise TypeError(f"map() of an event takes no named inputs, got {sorted(inputs)}")
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        total = _total(iterables)
        eager = total is None and _may_wait(iterables)
        pairs, values = _zip_inputs(iterables)
        return self._collect(plan, pairs, total=total, eager=eager, values=values)

    @overload
    def imap(
        self, event: type[EventBase], /, *iterables: Iterable[Any]
    ) -> Iterator[EventResult]: ...

    @overload
    def imap(
        self, event: Flow, /, *iterables: Iterable[Any], **inputs: Any
    ) -> Iterator[FlowRun]: ...

    def imap(
        self, event: type[EventBase] | Flow, /, *iterables: Iterable[Any], **inputs: Any
    ) -> Iterator[Any]:
        """Stream one result per item of ``zip(*iterables)``, in input order; for a flow,
        one :class:`FlowRun` per item.

        Inputs are read lazily and at most ``window`` tasks (flow runs) are in flight or
        buffered, so memory stays flat whatever the input length. Closing the iterator
        early cancels the tasks that have not started.
        """
        if not isinstance(event, type) and not _is_event_like(event):
            program = self._program(event)
            if not iterables:
                raise TypeError("imap() needs at least one iterable")
            return self._stream_flows(program, iterables, inputs)
        plan = self._plan(event)
        if inputs:
            raise TypeError(f"imap() of an event takes no named inputs, got {sorted(inputs)}")
        if not iterables:
            raise TypeError("imap() needs at least one iterable")
        total = _total(iterables)
        eager = total is None and _may_wait(iterables)
        pairs, values = _zip_inputs(iterables)
        return self._stream(plan, pairs, total=total, eager=eager, values=values)

    # -- driving a call ----------------------------------------------------------------
    def _coordinator(self, total: int | None) -> Coordinator:
        """A coordinator for one call, with this runner's hooks and progress display."""
        hooks = self._hooks = resolve_hooks(self._local_hooks, self._hooks)
        progress = self._progress
        tracker = None
        line = None
        if progress is True:
            line = ProgressLine(sys.stderr)
            tracker = ProgressTracker(line.update, total=total, monotonic=self._clock.monotonic)
        elif progress is not False:
            tracker = ProgressTracker(progress, total=total, monotonic=self._clock.monotonic)
        coordinator = Coordinator(self._cache, self._clock, hooks if hooks else None, tracker)
        if line is not None:
            coordinator.progress_done = line.close
        return coordinator

    @staticmethod
    def _finish(coordinator: Coordinator, *, abandoned: bool = False) -> None:
        """End a call: close the coordinator and draw the last progress snapshot.

        ``abandoned``: the call is raising; unstarted work is cancelled and nothing is
        waited for, and a failing progress display cannot hide the call's own exception.
        """
        if abandoned:
            coordinator.cancel()
        coordinator.close(wait=not abandoned)
        tracker = coordinator.progress
        if tracker is None:
            return
        try:
            last = tracker.finish()
            if coordinator.progress_done is not None:
                coordinator.progress_done(last)
        except Exception:
            if not abandoned:
                raise

    def _unit(
        self,
        plan: Plan,
        inputs: Inputs,
        *,
        streaming: bool,
        total: int | None = None,
        eager: bool = False,
        values: Iterator[Any] | None = None,
    ) -> EventRunUnit:
        if not plan.inline and runs_in(plan.executor):
            # Called from inside a worker of the very pool this call would use: waiting on
            # that pool from one of its own workers can deadlock, so run inline here.
            plan = plan.with_executor(_INLINE)
        coordinator = self._coordinator(total)
        unit = EventRunUnit(
            coordinator,
            plan,
            inputs,
            streaming=streaming,
            window=plan.window,
            task_prefix=f"{next(self._calls)}:",
            # Reading a list never waits; reading a generator might wait for earlier
            # tasks to start, so what is ready goes out before each read.
            eager=eager,
            values=values,
        )
        coordinator.attach(unit)
        return unit

    def _collect(
        self,
        plan: Plan,
        inputs: Inputs,
        resume: tuple[tuple[Any, ...], dict[str, Any], int, Any, float] | None = None,
        total: int | None = None,
        eager: bool = False,
        values: Iterator[Any] | None = None,
    ) -> EventRun:
        unit = self._unit(
            plan, inputs, streaming=False, total=total, eager=eager, values=values
        )
        coordinator = unit.coordinator
        try:
            if resume is not None:
                args, kwargs, kind, value, started = resume
                unit.results.append(None)
                unit.admitted = unit.pending = 1
                unit.started = started
                coordinator.resume(Task(unit.plan, unit, 0, (args, kwargs)), kind, value, started)
            while unit.run is None:
                coordinator.step(unit.window)
                if unit.stop_error is not None:
                    unit.raise_stop()
            self._finish(coordinator)
            return unit.run
        except BaseException:
            self._finish(coordinator, abandoned=True)
            raise

    def _stream(
        self,
        plan: Plan,
        inputs: Inputs,
        total: int | None = None,
        eager: bool = False,
        values: Iterator[Any] | None = None,
    ) -> Iterator[EventResult]:
        unit = self._unit(plan, inputs, streaming=True, total=total, eager=eager, values=values)
        return self._drive(unit.coordinator, unit, unit.window)

    def _drive(
        self, coordinator: Coordinator, unit: _Streaming[_T], window: int
    ) -> Iterator[_T]:
        """Step ``coordinator`` and yield what ``unit`` finished, in input order."""
        try:
            while True:
                if unit.stop_error is not None:
                    unit.raise_stop()
                yield from unit.ordered()
                if unit.finished:
                    self._finish(coordinator)
                    return
                coordinator.step(window)
        except BaseException:  # GeneratorExit too: the stream was closed early
            self._finish(coordinator, abandoned=True)
            raise

    # -- flows -------------------------------------------------------------------------
    def _program(self, flow: object) -> FlowProgram:
        """The compiled flow, made again when an event's settings changed since."""
        cached: tuple[int, FlowProgram] | None
        try:
            cached = self._programs.get(flow)  # type: ignore[call-overload]
        except TypeError:  # unhashable: certainly not a flow
            cached = None
        if (
            cached is not None
            and cached[0] == _event_module._generation
            and not self._cache.closed
            and self._pid == os.getpid()
        ):
            return cached[1]
        from .flow._compile import compile_flow
        from .flow._model import Flow
        from .flow._run import FlowProgram

        if not isinstance(flow, Flow):
            _check_event(flow)  # raises the TypeError that names what was given
        assert isinstance(flow, Flow)
        if self._pid != os.getpid():
            self._after_fork()
        self._cache.check_open()
        compiled = compile_flow(flow)
        step_plans = []
        for planned in compiled.steps:
            executor, key = self._executor_for(planned.event, planned.settings, planned.name)
            window = self.window or _default_window(executor)
            step_plans.append(
                Plan(planned.event, planned.settings, executor, key, window, self.batch_size)
            )
        window = self.window or max((p.window for p in step_plans), default=1)
        program = FlowProgram(flow, compiled, step_plans, window)
        if len(self._programs) >= MAX_PROGRAMS:
            self._programs.pop(next(iter(self._programs)))
        self._programs[flow] = (_event_module._generation, program)
        return program

    def _run_flow(
        self, program: FlowProgram, args: tuple[Any, ...], inputs: dict[str, Any]
    ) -> FlowRun:
        from .flow._run import FlowRunUnit

        coordinator = self._coordinator(None)
        unit = FlowRunUnit(
            coordinator, program, args, inputs, task_prefix=f"{next(self._calls)}:"
        )
        try:
            unit.start()
            while unit.result is None:
                if unit.stop_error is not None:
                    unit.raise_stop()
                coordinator.step(program.window)
            self._finish(coordinator)
            return unit.result
        except BaseException:
            self._finish(coordinator, abandoned=True)
            raise

    def _stream_flows(
        self,
        program: FlowProgram,
        iterables: tuple[Iterable[Any], ...],
        inputs: dict[str, Any],
    ) -> Iterator[FlowRun]:
        from .flow._chain import ChainMapUnit
        from .flow._run import FlowMapUnit

        coordinator = self._coordinator(None)
        # Steps one after another on pools: runs move through them in bulk.
        driver = ChainMapUnit if program.chain else FlowMapUnit
        unit = driver(
            coordinator,
            program,
            zip(*iterables, strict=False),
            inputs,
            window=program.window,
            call_prefix=f"{next(self._calls)}:",
        )
        coordinator.attach(unit)
        yield from self._drive(coordinator, unit, program.window)

    # -- plans and executors -----------------------------------------------------------
    def _check_open(self) -> None:
        self._cache.check_open()

    def _plan(self, event: object) -> Plan:
        """The settled plan for ``event``, made again when its settings or executor changed."""
        if self._pid != os.getpid():
            self._after_fork()
        self._cache.check_open()
        try:
            plan = self._plans.get(id(event))
        except TypeError:  # pragma: no cover - id() takes anything
            plan = None
        if (
            plan is not None
            and plan._event() is event
            and plan.settings is settings_of(plan.event)
        ):
            return plan
        event = _check_event(event)
        settings = settings_of(event)
        executor, key = self._executor_for(event, settings)
        window = self.window or _default_window(executor)
        plan = Plan(event, settings, executor, key, window, self.batch_size)
        event_id = id(event)
        plans = self._plans

        def forget(_: object, plan: Plan = plan) -> None:
            if plans.get(event_id) is plan:
                del plans[event_id]

        plan._event = weakref.ref(event, forget)
        plans[event_id] = plan
        return plan

    def _executor_for(
        self, event: type[EventBase], settings: EventSettings, step: str = ""
    ) -> tuple[Executor, ExecutorKey | None]:
        executor = settings.executor
        timeout = settings.timeout
        if timeout is not None and not enforces_timeout(executor):
            where = f"flow step {step!r} ({event.__name__})" if step else event.__name__
            raise ImproperlyConfigured(
                f"{where}.timeout: {timeout!r} cannot be enforced on {executor!r}; "
                f"{TIMEOUT_EXECUTORS}"
            )
        if sends_work_away(executor):
            leave_if_bootstrapping()
            _check_portable(event)
        if not isinstance(executor, type):
            return executor, None
        key = ExecutorKey.of(executor, settings.executor_config)
        return self._cache.get(key), key

    def _after_fork(self) -> None:
        """In a forked child: the parent's pools are unusable here; start afresh."""
        self._pid = os.getpid()
        closed = self._cache.closed
        self._cache = ExecutorCache()
        self._cache.closed = closed
        self._plans.clear()
        self._programs.clear()

    # -- lifetime ------------------------------------------------------------------------
    def shutdown(self, wait: bool = True) -> None:
        """Shut down every executor this runner created; executor instances are left alone.

        Work not yet started is cancelled; a call waiting on this runner raises
        ``RuntimeError`` within a tenth of a second. With ``wait=True`` (the default) this
        returns once no thread or process of those executors is left — except a thread pool
        whose worker is the calling thread (``shutdown`` called from inside a task), which
        is told to stop and cannot wait for itself.
        """
        if self._pid != os.getpid():
            self._after_fork()
        self._plans.clear()
        self._programs.clear()
        self._cache.shutdown(wait)

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()


def _reset_after_fork() -> None:
    global _default_lock
    _default_lock = threading.Lock()
    for runner in list(_runners):
        runner._after_fork()


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
                _event_module._runners.default = _default_runner
            runner = _default_runner
    return runner


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def run(event: type[EventBase], /, *args: Any, **kwargs: Any) -> EventRun:
    """Run one task of ``event`` on the default runner: ``process(*args, **kwargs)``."""
    return default_runner().run(event, *args, **kwargs)
