"""Async events: an executor that runs coroutines on one event loop, and one attempt's coroutine.

How a work item travels through :class:`AsyncExecutor`::

    submit() (any thread)                      the loop thread
    ---------------------                      ---------------
    Future + _WorkItem -> _pending (deque) --> _drain(): at most one wake-up is queued at a time
                                               _fill(): while fewer than max_workers run,
                                                   popleft -> set_running_or_notify_cancel ->
                                                   call fn -> task, kept in _running
                                               _finished(task): task's outcome -> Future,
                                                   then _fill() again

Submitting costs a lock, a deque append and, once per burst, one ``call_soon_threadsafe``:
the loop drains everything that arrived since its last wake-up in one go. The bound on
concurrent work is a counter the loop thread alone touches, so it needs no lock.

The worker side (:func:`attempt_async`, :func:`run_batch_async`) mirrors
:mod:`event_pipeline._worker`: one attempt per task, classified as an outcome where the
exception is still the real object.
"""

from __future__ import annotations

import atexit
import inspect
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import CancelledError, Executor, Future
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from ._retry import is_retryable
from ._worker import FATAL, RETRY, Item, Outcome, StartNote, judge

if TYPE_CHECKING:
    import asyncio


def _aio() -> Any:
    """The asyncio module, imported on first use: ``import event_pipeline`` stays light."""
    import asyncio

    return asyncio


__all__ = ["AsyncExecutor", "RunCancelled", "attempt_async", "run_batch_async"]

P = ParamSpec("P")
T = TypeVar("T")

_THREAD_NAME = "event_pipeline-async"
_DEFAULT_MAX_WORKERS = 100


class RunCancelled(CancelledError):
    """The work item was running when :meth:`AsyncExecutor.cancel_running` cancelled it.

    A subclass of :class:`concurrent.futures.CancelledError`, so code that handles
    cancellation in general keeps working, while the caller that asked for the cancel (a
    deadline) can tell it apart from a cancel by ``shutdown(cancel_futures=True)``.
    """


class _WorkItem:
    """One submitted call, and the task that runs it once it has started."""

    __slots__ = ("args", "fn", "future", "interrupted", "kwargs", "task")

    def __init__(
        self,
        future: Future[Any],
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.task: asyncio.Future[Any] | None = None
        # Set by cancel_running, so the future's exception says who cancelled it.
        self.interrupted = False


class _LoopHost:
    """An event loop, the thread that runs it, and whether it is closed.

    Kept apart from the executor so that the thread holds no reference to the executor:
    an executor that is dropped without ``shutdown()`` can still stop its thread.
    """

    __slots__ = ("_closed", "_lock", "loop", "thread")

    def __init__(self) -> None:
        # Reentrant: the executor's finaliser calls stop(), and a garbage collection can run
        # it in a thread that already holds this lock.
        self._lock = threading.RLock()
        self._closed = False
        self.loop = _aio().new_event_loop()
        self.thread = threading.Thread(target=self._serve, name=_THREAD_NAME)

    def call_soon(self, callback: Callable[..., object], *args: Any) -> bool:
        """Schedule ``callback(*args)`` on the loop from any thread; False once it is closed."""
        with self._lock:
            if self._closed:
                return False
            self.loop.call_soon_threadsafe(callback, *args)
            return True

    def stop(self) -> None:
        """Make ``run_forever`` return, from any thread (the loop then cleans up and closes)."""
        self.call_soon(self.loop.stop)

    def on_loop_thread(self) -> bool:
        """Whether the caller is this loop's own thread."""
        return threading.current_thread() is self.thread

    def _serve(self) -> None:
        loop = self.loop
        _aio().set_event_loop(loop)
        try:
            while True:
                try:
                    loop.run_forever()
                except (KeyboardInterrupt, SystemExit):
                    # A work item raised it: asyncio lets it out of the loop, but its task
                    # holds it too and hands it to the item's future. Keep serving the others.
                    continue
                break
            _finish_loop(loop)
        finally:
            with self._lock:
                self._closed = True
            loop.close()
            _aio().set_event_loop(None)


def _finish_loop(loop: asyncio.AbstractEventLoop) -> None:
    """What ``asyncio.run`` does on its way out: cancel stray tasks, close generators, and
    join the default executor, whose threads (``asyncio.to_thread``) must not outlive us."""
    strays = _aio().all_tasks(loop)
    for task in strays:
        task.cancel()
    if strays:
        loop.run_until_complete(_aio().gather(*strays, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())


# Executors alive at interpreter exit are shut down (without waiting) before Python joins
# non-daemon threads, as concurrent.futures does for its own pools; otherwise a forgotten
# executor's idle loop thread would keep the process from ever exiting.
_live_executors: weakref.WeakSet[AsyncExecutor] = weakref.WeakSet()


def _at_exit() -> None:
    for executor in list(_live_executors):
        executor.shutdown(wait=False)


_register_atexit: Callable[[Callable[[], object]], object] = getattr(
    threading, "_register_atexit", atexit.register
)
_register_atexit(_at_exit)


def _check_max_workers(value: object) -> int:
    if value is None:
        return _DEFAULT_MAX_WORKERS
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"max_workers must be an int or None, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"max_workers must be greater than 0, got {value}")
    return value


class AsyncExecutor(Executor):
    """Runs submitted coroutines as tasks on one event loop of its own.

    The loop runs in one background thread (``event_pipeline-async``, not a daemon),
    started by the first :meth:`submit`. At most ``max_workers`` work items run at once;
    the rest wait, in submission order, without having been called yet.

    Every callback of a returned future runs on the loop thread, as it would on a worker
    thread of a thread pool: it must not block.

    Args:
        max_workers: the most work items running at once; ``None`` means 100.

    Raises:
        TypeError: ``max_workers`` is not an ``int`` (``bool`` is refused).
        ValueError: ``max_workers`` is less than 1.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self._max_workers = _check_max_workers(max_workers)
        # Guards _shutdown, the start of the loop thread and _wakeup_queued.
        self._lock = threading.Lock()
        self._shutdown = False
        self._host: _LoopHost | None = None
        self._pending: deque[_WorkItem] = deque()
        self._wakeup_queued = False
        # Only the loop thread touches these two; no lock.
        self._running: dict[Future[Any], _WorkItem] = {}
        self._closing = False

    @overload
    def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Future[T]: ...

    @overload
    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """Schedule ``fn(*args, **kwargs)`` on the loop and return its future.

        ``fn`` is called on the loop thread when a slot is free. If it returns an awaitable
        (an ``async def`` function does), that is run as a task and the future gets what it
        returns or raises; otherwise the future gets the returned value at once. A plain
        function therefore runs *on the loop*, and blocks it while it runs.

        Returns:
            A :class:`concurrent.futures.Future`; ``cancel()`` works until the item starts.

        Raises:
            RuntimeError: the executor has been shut down.
        """
        future: Future[Any] = Future()
        item = _WorkItem(future, fn, args, kwargs)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            host = self._host
            if host is None:
                host = self._host = self._start_loop()
            self._pending.append(item)
            if not self._wakeup_queued:
                self._wakeup_queued = True
                host.call_soon(self._drain)
        return future

    def cancel_running(self, future: Future[Any]) -> bool:
        """Cancel the coroutine of a running work item, from any thread (a deadline's cancel).

        The coroutine sees :class:`asyncio.CancelledError` at its next ``await`` and may clean
        up. If it lets the cancellation through, ``future`` ends with :class:`RunCancelled`
        (a :class:`concurrent.futures.CancelledError`); if it swallows it, or had already
        finished, ``future`` gets what it returned or raised. A work item that has not
        started is left alone: ``future.cancel()`` is the way to drop it.

        Args:
            future: a future returned by this executor's :meth:`submit`.

        Returns:
            True if the item was running and its cancellation was requested; False if it had
            not started, was already done, or the executor's loop is closed.
        """
        host = self._host
        if host is None or not future.running():
            return False
        return host.call_soon(self._interrupt, future)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work, cancel what has not started, and stop the loop once idle.

        Work items that have not started are cancelled (even without ``cancel_futures``:
        an async executor would otherwise start them only to wait for them). Running ones
        are let finish, or with ``cancel_futures=True`` have their coroutines cancelled: they
        see :class:`asyncio.CancelledError` and their futures end with
        :class:`concurrent.futures.CancelledError` (unless they swallow it). Then the loop
        is closed and its thread ends.

        Safe to call more than once and from several threads. Called from a coroutine on this
        executor's own loop, it cannot wait for that coroutine: it returns at once and the
        thread ends after the running items do.

        Args:
            wait: block until the loop thread has ended.
            cancel_futures: cancel the running coroutines too.
        """
        with self._lock:
            self._shutdown = True
            host = self._host
        for item in _drain_deque(self._pending):
            item.future.cancel()
        if host is None:
            return
        host.call_soon(self._close_down, cancel_futures)
        if wait and not host.on_loop_thread():
            host.thread.join()

    def _start_loop(self) -> _LoopHost:
        host = _LoopHost()
        # The thread and the finaliser reference the host, never the executor.
        weakref.finalize(self, host.stop).atexit = False
        _live_executors.add(self)
        host.thread.start()
        return host

    # Everything below runs on the loop thread.

    def _drain(self) -> None:
        # Cleared before reading the deque: an item appended after this line either is seen
        # by the _fill below or queues a wake-up of its own.
        self._wakeup_queued = False
        self._fill()

    def _fill(self) -> None:
        pending = self._pending
        running = self._running
        while len(running) < self._max_workers and not self._shutdown:
            try:
                item = pending.popleft()
            except IndexError:
                return
            self._start(item)

    def _start(self, item: _WorkItem) -> None:
        future = item.future
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = item.fn(*item.args, **item.kwargs)
            if _aio().iscoroutine(result):
                task: asyncio.Future[Any] = _aio().get_running_loop().create_task(result)
            elif inspect.isawaitable(result):
                task = _aio().ensure_future(result)
            else:
                future.set_result(result)
                return
        except BaseException as exc:
            # As a thread pool's worker does: whatever the call raised belongs to its future.
            future.set_exception(exc)
            return
        item.task = task
        self._running[future] = item
        task.add_done_callback(lambda task: self._finished(item, task))

    def _finished(self, item: _WorkItem, task: asyncio.Future[Any]) -> None:
        future = item.future
        del self._running[future]
        if task.cancelled():
            cause = RunCancelled if item.interrupted else CancelledError
            future.set_exception(cause("the running coroutine was cancelled"))
        else:
            exc = task.exception()
            if exc is None:
                future.set_result(task.result())
            else:
                future.set_exception(exc)
        item.task = None
        if self._closing and not self._running:
            _aio().get_running_loop().stop()
        else:
            self._fill()

    def _interrupt(self, future: Future[Any]) -> None:
        item = self._running.get(future)
        if item is not None and item.task is not None:
            item.interrupted = True
            item.task.cancel("cancelled by AsyncExecutor.cancel_running")

    def _close_down(self, cancel_running: bool) -> None:
        self._closing = True
        if cancel_running:
            for item in self._running.values():
                if item.task is not None:
                    item.task.cancel("cancelled by AsyncExecutor.shutdown(cancel_futures=True)")
        if not self._running:
            _aio().get_running_loop().stop()


def _drain_deque(items: deque[_WorkItem]) -> list[_WorkItem]:
    """Pop everything from ``items``; safe while another thread pops too."""
    taken = []
    while True:
        try:
            taken.append(items.popleft())
        except IndexError:
            return taken


async def attempt_async(
    event_class: type[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry_on: tuple[type[BaseException], ...] | None,
) -> Outcome:
    """Await ``process`` once and classify what happened, like :func:`_worker.attempt`.

    Args:
        event_class: an event whose ``process`` is ``async def``.
        args: positional arguments of ``process``.
        kwargs: keyword arguments of ``process``.
        retry_on: the exceptions worth a retry (empty: any :class:`Exception`); ``None``
            means none is.

    Returns:
        ``(OK, (bool, value))``, ``(RETRY, exc)`` or ``(FATAL, exc)``.

    Raises:
        asyncio.CancelledError: the attempt was cancelled (a deadline, a shutdown); like
            any other :class:`BaseException` that is not an :class:`Exception`, it is not
            an outcome.
    """
    try:
        awaitable = event_class().process(*args, **kwargs)
        if not inspect.isawaitable(awaitable):
            return FATAL, TypeError(
                f"{event_class.__name__}.process must be a coroutine function (async def) "
                f"to run on an AsyncExecutor, but it returned {type(awaitable).__name__}"
            )
        returned = await awaitable
    except Exception as exc:
        if retry_on is not None and is_retryable(retry_on, exc):
            return RETRY, exc
        return FATAL, exc
    return judge(event_class, returned)


async def run_batch_async(
    event_class: type[Any],
    items: list[Item],
    retry_on: tuple[type[BaseException], ...] | None,
    note: StartNote | None = None,
) -> tuple[float, list[Outcome], bool]:
    """One attempt for each task of a batch, all awaited concurrently on the running loop.

    ``note``, when given, gets the monotonic time the batch started as its ``began``.

    Returns:
        The seconds the batch took, one outcome per task in the order of ``items``, and
        False: the outcomes are never given as plain tuples here (see ``run_batch``).

    Raises:
        asyncio.CancelledError: the batch was cancelled; its attempts are cancelled too.
    """
    if note is not None:
        note.began = time.monotonic()
    started = time.perf_counter()
    if len(items) == 1:
        args, kwargs = items[0]
        outcomes = [await attempt_async(event_class, args, kwargs, retry_on)]
        return time.perf_counter() - started, outcomes, False
    tasks = [
        _aio().ensure_future(attempt_async(event_class, args, kwargs, retry_on))
        for args, kwargs in items
    ]
    try:
        outcomes = await _aio().gather(*tasks)
    except BaseException:
        # gather cancels the rest only when it is cancelled itself; when an attempt lets a
        # BaseException out, the others must not run on as orphans.
        for task in tasks:
            task.cancel()
        raise
    return time.perf_counter() - started, list(outcomes), False
