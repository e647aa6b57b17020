"""Executors: the inline default, and how the runner builds one from a class and a config."""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from ._config import ExecutorInitializerConfig, set_fields

__all__ = [
    "DefaultExecutor",
    "available_cpus",
    "build_executor",
    "executor_kwargs",
    "is_process_pool",
    "is_standard_pool",
    "lost_a_worker",
    "sends_work_away",
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
    if "max_workers" in names and "max_workers" not in kwargs:
        kwargs["max_workers"] = available_cpus()
    return kwargs


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
