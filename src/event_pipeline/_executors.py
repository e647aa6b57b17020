"""Executors: the inline default, how one is built from a class and a config, and the cache
that owns the pools a runner builds.

:class:`ExecutorCache` is the only owner of pools: it builds one per :class:`ExecutorKey`,
replaces a broken one exactly once however many calls notice, and shuts everything down.
Coordinators receive it; nothing else creates or shuts down a runner's executors.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from typing import Any, NamedTuple, ParamSpec, TypeVar

from ._config import ExecutorInitializerConfig, set_fields

__all__ = [
    "DefaultExecutor",
    "ExecutorCache",
    "ExecutorKey",
    "available_cpus",
    "build_executor",
    "executor_kwargs",
    "is_process_pool",
    "is_standard_pool",
    "lost_a_worker",
    "sends_work_away",
    "stop_workers",
    "worker_count",
]

P = ParamSpec("P")
T = TypeVar("T")


class DefaultExecutor(Executor):
    """Runs each submitted callable at once, in the submitting thread.

    :meth:`submit` returns a future that is already done. An :class:`Exception` raised by the
    callable is set on the future; other :class:`BaseException` s (``KeyboardInterrupt``,
    ``SystemExit``) propagate out of :meth:`submit`.
    """

    _max_workers = 1

    def __init__(self) -> None:
        self._shutdown = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future: Future[T] = Future()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True


def available_cpus() -> int:
    """Processors this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS and Windows
        return os.cpu_count() or 1


_signatures: dict[type[Executor], tuple[frozenset[str], bool]] = {}


def _accepted(executor_class: type[Executor]) -> tuple[frozenset[str], bool]:
    """The keyword names ``executor_class.__init__`` takes, and whether it takes ``**kwargs``."""
    cached = _signatures.get(executor_class)
    if cached is None:
        cached = _signatures[executor_class] = _inspect_init(executor_class)
    return cached


def _inspect_init(executor_class: type[Executor]) -> tuple[frozenset[str], bool]:
    try:
        parameters = inspect.signature(executor_class.__init__).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return frozenset(), False
    names = frozenset(
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def executor_kwargs(
    executor_class: type[Executor], config: ExecutorInitializerConfig
) -> dict[str, Any]:
    """The keyword arguments the runner passes when it builds ``executor_class``.

    Only fields that are set and that ``__init__`` accepts; ``max_workers`` left unset becomes
    the number of available processors when ``__init__`` names it. Process pools get the
    ``spawn`` start method, the same on every OS.
    """
    names, takes_any = _accepted(executor_class)
    kwargs = {
        name: value
        for name, value in set_fields(config).items()
        if takes_any or name in names
    }
    if "max_workers" in names and "max_workers" not in kwargs and not _is_async(executor_class):
        kwargs["max_workers"] = available_cpus()
    return kwargs


def _is_async(executor_class: type[Executor]) -> bool:
    # An AsyncExecutor keeps its own default (100 coroutines), not the processor count.
    from ._async import AsyncExecutor

    return issubclass(executor_class, AsyncExecutor)


def build_executor(executor_class: type[Executor], kwargs: dict[str, Any]) -> Executor:
    """Create ``executor_class(**kwargs)``; process pools get the ``spawn`` start method.

    ``spawn`` is the same on every OS and the only method that is safe with threads in
    the parent, which a runner always has.
    """
    if is_process_pool(executor_class) and "mp_context" in _accepted(executor_class)[0]:
        import multiprocessing

        kwargs = {**kwargs, "mp_context": multiprocessing.get_context("spawn")}
    return executor_class(**kwargs)


def is_process_pool(executor: Executor | type[Executor]) -> bool:
    """Whether ``executor`` is (an instance of) a ``ProcessPoolExecutor`` subclass.

    Asked without importing ``concurrent.futures.process`` (and so ``multiprocessing``):
    until something imports it, nothing can be a process pool.
    """
    process = sys.modules.get("concurrent.futures.process")
    if process is None:
        return False
    cls = executor if isinstance(executor, type) else type(executor)
    return issubclass(cls, process.ProcessPoolExecutor)


def is_standard_pool(executor: Executor) -> bool:
    """Whether ``executor`` is one of the standard library's thread or process pools."""
    return isinstance(executor, ThreadPoolExecutor) or is_process_pool(executor)


def sends_work_away(executor: Executor | type[Executor]) -> bool:
    """Whether submitted work crosses a process boundary (so it must pickle)."""
    cls = executor if isinstance(executor, type) else type(executor)
    return is_process_pool(cls) or bool(
        getattr(cls, "_event_pipeline_pickles", False)
    )


def lost_a_worker(executor: Executor, exc: BaseException) -> bool:
    """Whether ``exc``, failing a work item of ``executor``, says a worker process died.

    True for the standard library's broken pools, and for executors that say so through a
    ``_event_pipeline_worker_lost(exc)`` class hook (the Dask executor: ``KilledWorker``).
    """
    if isinstance(exc, BrokenExecutor):
        return True
    hook = getattr(type(executor), "_event_pipeline_worker_lost", None)
    return bool(hook is not None and hook(exc))


def worker_count(executor: Executor) -> int:
    """How many tasks ``executor`` runs at once, as far as it tells."""
    count = getattr(executor, "_max_workers", None)
    if isinstance(count, int) and count > 0:
        return count
    return available_cpus()


def runs_in(executor: Executor) -> bool:
    """Whether the calling thread is one of ``executor``'s own worker threads.

    A batch the runner sent there says so while it runs (a new pool records a worker
    thread only after starting it, and the thread may already be running the task).
    """
    from ._worker import running_in

    if getattr(running_in, "executor", 0) == id(executor):
        return True
    threads = getattr(executor, "_threads", None)
    return bool(threads) and threading.current_thread() in threads  # type: ignore[operator]


class ExecutorKey(NamedTuple):
    """An executor the runner builds: its class and the keyword arguments it receives."""

    cls: type[Executor]
    kwargs: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, executor_class: type[Executor], config: ExecutorInitializerConfig) -> ExecutorKey:
        """The key of ``executor_class`` built with ``config``, as the runner would build it."""
        return cls(executor_class, tuple(sorted(executor_kwargs(executor_class, config).items())))

    def build(self) -> Executor:
        return build_executor(self.cls, dict(self.kwargs))

    def single(self) -> ExecutorKey:
        """The same executor with one worker: where suspects of a broken pool re-run alone."""
        kwargs = dict(self.kwargs)
        if "max_workers" in kwargs:
            kwargs["max_workers"] = 1
        return ExecutorKey(self.cls, tuple(sorted(kwargs.items())))

    @property
    def recycles_workers(self) -> bool:
        """Whether the pool replaces a worker after so many work items."""
        return any(name == "max_tasks_per_child" for name, _ in self.kwargs)


def stop_workers(executor: Executor) -> None:
    """Kill the worker processes of a process pool (which breaks it), to end an attempt
    that ran past its deadline: which worker runs it, the pool does not say."""
    processes = getattr(executor, "_processes", None) or {}
    for process in list(processes.values()):
        with contextlib.suppress(Exception):  # already gone
            process.kill()


def shut_down(executor: Executor, *, wait: bool = True) -> None:
    """Shut ``executor`` down, cancelling what has not started.

    Called from one of the executor's own worker threads (a task that shuts its runner
    down), it cannot wait for itself: the others are told to stop and it returns.
    """
    executor.shutdown(wait=wait and not runs_in(executor), cancel_futures=True)


class ExecutorCache:
    """The executors a runner built, one per :class:`ExecutorKey`, until :meth:`shutdown`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executors: dict[ExecutorKey, Executor] = {}
        self._retired: list[Executor] = []
        self._reapers: list[threading.Thread] = []
        self._shutdown_lock = threading.RLock()
        self._shut_down: weakref.WeakSet[Executor] = weakref.WeakSet()
        #: Set by :meth:`shutdown`: wakes every call waiting out a backoff.
        self.closed_event = threading.Event()
        self.closed = False

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeError("this Runner has been shut down")

    def get(self, key: ExecutorKey) -> Executor:
        """The executor for ``key``, built on first use."""
        with self._lock:
            self.check_open()
            executor = self._executors.get(key)
            if executor is None:
                executor = self._executors[key] = key.build()
        return executor

    def current(self, key: ExecutorKey) -> Executor | None:
        return self._executors.get(key)

    def replace(self, key: ExecutorKey, broken: Executor) -> Executor:
        """Swap ``broken`` for a fresh executor; returns the current one for ``key``.

        However many calls notice the same broken pool, one builds its successor and only
        that one shuts the broken pool down (two shutdowns of one broken process pool race
        on its pipes).
        """
        with self._lock:
            self.check_open()
            current = self._executors.get(key)
            retire = current is None or current is broken
            if retire:
                current = self._executors[key] = key.build()
                self._retired.append(broken)
        if retire:
            # A broken pool has already lost its workers; this only joins its threads.
            self._shut(broken)
        assert current is not None
        return current

    def _shut(self, executor: Executor) -> None:
        # One shutdown per executor, whoever asks first; the others wait for it to finish.
        with self._shutdown_lock:
            if executor in self._shut_down:
                return
            self._shut_down.add(executor)
            shut_down(executor)

    def dispose(self, executor: Executor, *, wait: bool = True) -> None:
        """Shut down an executor built outside the cache (a call's isolation pool).

        Without ``wait``, in the background; :meth:`shutdown` waits for that.
        """
        if wait:
            self._shut(executor)
            return
        reaper = threading.Thread(
            target=self._shut, args=(executor,), name="event_pipeline-shutdown"
        )
        with self._lock:
            self._reapers = [r for r in self._reapers if r.is_alive()]
            self._reapers.append(reaper)
            reaper.start()

    def shutdown(self, wait: bool = True) -> None:
        """Shut down every executor; with ``wait``, return once none of their threads or
        processes is left (but those of a pool whose worker is the calling thread)."""
        with self._lock:
            self.closed = True
            self.closed_event.set()
            executors = [*self._executors.values(), *self._retired]
            self._executors.clear()
            self._retired.clear()
            reapers = list(self._reapers)

        def shut_down_all() -> None:
            errors = []
            for executor in executors:
                try:
                    self._shut(executor)
                except Exception as exc:  # one executor failing must not spare the others
                    errors.append(exc)
            if errors:
                raise errors[0]

        if wait:
            shut_down_all()
            for reaper in reapers:
                if reaper is not threading.current_thread():
                    reaper.join()
        elif executors:
            # A process pool shut down without waiting forgets its own threads, so nothing
            # could wait for them later: the waiting happens here, in the background, and a
            # later shutdown() waits for that.
            reaper = threading.Thread(target=shut_down_all, name="event_pipeline-shutdown")
            reaper.start()
            with self._lock:
                self._reapers.append(reaper)
