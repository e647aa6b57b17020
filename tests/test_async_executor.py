from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from typing import Any

import pytest

from async_events import (
    Blocks,
    Doubles,
    Gate,
    NotAsync,
    PlannedError,
    Raises,
    ReturnsBadly,
    WaitsForAll,
)
from event_pipeline._async import AsyncExecutor, RunCancelled, attempt_async, run_batch_async
from event_pipeline._worker import FATAL, OK, RETRY

THREAD_NAME = "event_pipeline-async"
WAIT = 10  # seconds: bounds every wait, so a hang fails fast instead of eating CI's time


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


#: Loop threads that belong to other tests' long-lived executors (the default runner's).
_OTHERS: set[threading.Thread] = set()


def own_loop_threads() -> list[threading.Thread]:
    """The loop threads started by this test's executors."""
    return [t for t in loop_threads() if t not in _OTHERS]


@pytest.fixture(autouse=True)
def _note_other_loops() -> None:
    _OTHERS.clear()
    _OTHERS.update(loop_threads())


@pytest.fixture
def make() -> Iterator[Callable[..., AsyncExecutor]]:
    """Build executors that are shut down after the test; no loop thread may survive it."""
    before = set(loop_threads())
    made: list[AsyncExecutor] = []

    def build(max_workers: int | None = None) -> AsyncExecutor:
        executor = AsyncExecutor(max_workers)
        made.append(executor)
        return executor

    yield build
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)
    assert set(loop_threads()) <= before


def waited(event: threading.Event) -> bool:
    return event.wait(WAIT)


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


async def fail(exc: BaseException) -> None:
    await asyncio.sleep(0)
    raise exc


async def hold(gate: Gate, started: threading.Event | None = None) -> str:
    if started is not None:
        started.set()
    await gate.wait()
    return "released"


# Executor semantics


def test_coroutine_function_result(make: Callable[..., AsyncExecutor]) -> None:
    """A submitted coroutine function runs on the loop and its future gets the return value."""
    executor = make()
    assert executor.submit(double, 21).result(WAIT) == 42


def test_exception_reaches_the_future(make: Callable[..., AsyncExecutor]) -> None:
    """An exception raised by the coroutine is the future's exception, the same object."""
    executor = make()
    error = PlannedError("boom")
    future = executor.submit(fail, error)
    assert future.exception(WAIT) is error


def test_sync_callable_runs_on_the_loop_thread(make: Callable[..., AsyncExecutor]) -> None:
    """A plain callable is called on the loop thread and its value is the result."""
    executor = make()
    future = executor.submit(lambda: threading.current_thread().name)
    assert future.result(WAIT) == THREAD_NAME


def test_sync_callable_returning_an_awaitable(make: Callable[..., AsyncExecutor]) -> None:
    """A plain callable that returns a coroutine has that coroutine awaited."""
    executor = make()
    assert executor.submit(lambda: double(5)).result(WAIT) == 10


def test_sync_callable_exception(make: Callable[..., AsyncExecutor]) -> None:
    """An exception raised while calling a plain callable goes to its future."""
    executor = make()
    assert isinstance(executor.submit(int, "x").exception(WAIT), ValueError)


def test_map_keeps_order(make: Callable[..., AsyncExecutor]) -> None:
    """``Executor.map`` over a coroutine function yields results in input order."""
    executor = make(max_workers=3)
    assert list(executor.map(double, range(20), timeout=WAIT)) == [2 * i for i in range(20)]


def test_context_manager_shuts_down(make: Callable[..., AsyncExecutor]) -> None:
    """Leaving a ``with`` block shuts the executor down and ends its thread."""
    before = set(loop_threads())
    with make() as executor:
        assert executor.submit(double, 1).result(WAIT) == 2
    assert set(loop_threads()) <= before
    with pytest.raises(RuntimeError):
        executor.submit(double, 1)


def test_base_exception_from_a_coroutine(make: Callable[..., AsyncExecutor]) -> None:
    """A ``KeyboardInterrupt`` from a coroutine reaches its future; the loop keeps serving."""
    executor = make()
    interrupt = KeyboardInterrupt()
    assert executor.submit(fail, interrupt).exception(WAIT) is interrupt
    assert executor.submit(double, 2).result(WAIT) == 4


def test_thread_starts_lazily(make: Callable[..., AsyncExecutor]) -> None:
    """No thread exists before the first submit."""
    before = set(loop_threads())
    executor = make()
    assert set(loop_threads()) == before
    executor.submit(double, 1).result(WAIT)
    assert len(set(loop_threads()) - before) == 1


# max_workers


def test_max_workers_default_and_attribute() -> None:
    """``None`` means 100, and ``_max_workers`` holds the bound."""
    assert AsyncExecutor()._max_workers == 100
    assert AsyncExecutor(7)._max_workers == 7


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-1, ValueError), (True, TypeError), ("3", TypeError)]
)
def test_max_workers_validated(value: Any, error: type[Exception]) -> None:
    """A ``max_workers`` below 1 is a ValueError; a non-int (bool included) a TypeError."""
    with pytest.raises(error, match="max_workers"):
        AsyncExecutor(value)


def test_max_workers_bounds_concurrency(make: Callable[..., AsyncExecutor]) -> None:
    """No more than ``max_workers`` coroutines run at once; the rest wait, not started."""
    executor = make(max_workers=3)
    gate = Gate()
    full = threading.Event()
    counts = {"active": 0, "peak": 0}

    async def counted() -> None:
        counts["active"] += 1
        counts["peak"] = max(counts["peak"], counts["active"])
        if counts["active"] == 3:
            full.set()
        await gate.wait()
        counts["active"] -= 1

    futures = [executor.submit(counted) for _ in range(20)]
    assert waited(full)
    assert sum(f.running() for f in futures) == 3
    assert not any(f.done() for f in futures)
    gate.open()
    for future in futures:
        future.result(WAIT)
    assert counts["peak"] == 3


def test_many_sleepers_run_concurrently(make: Callable[..., AsyncExecutor]) -> None:
    """2,000 coroutines sleeping 0.05 s with 1,000 slots take far less than one after another."""
    executor = make(max_workers=1000)
    started = time.perf_counter()
    futures = [executor.submit(asyncio.sleep, 0.05) for _ in range(2000)]
    for future in futures:
        future.result(60)
    # Serially this is 100 s; two rounds of 1,000 take about 0.1 s.
    assert time.perf_counter() - started < 10


# Cancelling


def test_cancel_pending_item(make: Callable[..., AsyncExecutor]) -> None:
    """A queued item's future can be cancelled, and its function is then never called."""
    executor = make(max_workers=1)
    gate, started = Gate(), threading.Event()
    called = threading.Event()

    async def mark() -> None:
        called.set()

    first = executor.submit(hold, gate, started)
    assert waited(started)
    second = executor.submit(mark)
    assert second.cancel()
    assert not first.cancel()  # running: standard semantics
    gate.open()
    assert first.result(WAIT) == "released"
    assert second.cancelled()
    executor.shutdown()
    assert not called.is_set()


def test_cancel_running_at_a_deadline(make: Callable[..., AsyncExecutor]) -> None:
    """``cancel_running`` cancels a running coroutine, which cleans up; the future ends with
    ``RunCancelled``, a ``CancelledError``."""
    executor = make()
    gate, cleaned = Gate(), threading.Event()
    started = threading.Event()

    future = executor.submit(Blocks().process, gate, cleaned, started)
    assert waited(started)
    assert executor.cancel_running(future)
    exc = future.exception(WAIT)
    assert isinstance(exc, RunCancelled)
    assert isinstance(exc, CancelledError)
    assert not future.cancelled()
    assert cleaned.is_set()
    assert executor.submit(double, 3).result(WAIT) == 6  # the slot is free again


def test_cancel_running_refuses_pending_and_done(make: Callable[..., AsyncExecutor]) -> None:
    """``cancel_running`` returns False for an item not yet started and for a finished one."""
    executor = make(max_workers=1)
    gate, started = Gate(), threading.Event()
    done = executor.submit(double, 1)
    done.result(WAIT)
    assert not executor.cancel_running(done)
    first = executor.submit(hold, gate, started)
    assert waited(started)
    queued = executor.submit(double, 2)
    assert not executor.cancel_running(queued)
    gate.open()
    assert first.result(WAIT) == "released"
    assert queued.result(WAIT) == 4


def test_cancel_running_swallowed(make: Callable[..., AsyncExecutor]) -> None:
    """A coroutine that swallows the cancellation ends normally, with what it returns."""
    executor = make()
    started = threading.Event()

    async def stubborn() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "kept going"
        return "unreachable"

    future = executor.submit(stubborn)
    assert waited(started)
    assert executor.cancel_running(future)
    assert future.result(WAIT) == "kept going"


def test_cancel_running_a_batch(make: Callable[..., AsyncExecutor]) -> None:
    """Cancelling a running ``run_batch_async`` cancels every attempt in it."""
    executor = make()
    gate = Gate()
    cleaned = [threading.Event() for _ in range(3)]
    entered = [threading.Event() for _ in range(3)]
    items = [((gate, c, e), {}) for c, e in zip(cleaned, entered, strict=True)]
    future = executor.submit(run_batch_async, Blocks, items, None)
    # Every attempt must be under way before the cancel, or it would never see one.
    assert all(waited(event) for event in entered)
    assert executor.cancel_running(future)
    assert isinstance(future.exception(WAIT), RunCancelled)
    assert all(event.is_set() for event in cleaned)


# Shutdown


def test_shutdown_leaves_no_thread() -> None:
    """After ``shutdown()`` no thread started by the executor is alive."""
    before = set(threading.enumerate())
    executor = AsyncExecutor()
    assert executor.submit(double, 1).result(WAIT) == 2
    executor.submit(asyncio.to_thread, time.sleep, 0).result(WAIT)
    executor.shutdown()
    assert set(threading.enumerate()) <= before


def test_shutdown_before_any_submit() -> None:
    """Shutting down an executor that never started does nothing, then refuses work."""
    executor = AsyncExecutor()
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(double, 1)


def test_submit_after_shutdown(make: Callable[..., AsyncExecutor]) -> None:
    """Submitting after ``shutdown()`` raises RuntimeError with CPython's message."""
    executor = make()
    executor.submit(double, 1).result(WAIT)
    executor.shutdown()
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        executor.submit(double, 1)


def test_shutdown_cancels_pending_and_waits_for_running(
    make: Callable[..., AsyncExecutor],
) -> None:
    """Shutdown cancels items not yet started at once and lets the running one finish."""
    executor = make(max_workers=1)
    gate, started = Gate(), threading.Event()
    running = executor.submit(hold, gate, started)
    assert waited(started)
    queued = [executor.submit(double, i) for i in range(5)]
    (thread,) = own_loop_threads()
    executor.shutdown(wait=False)
    assert all(f.cancelled() for f in queued)
    assert running.running()
    gate.open()
    assert running.result(WAIT) == "released"
    thread.join(WAIT)
    assert not thread.is_alive()


def test_shutdown_wait_returns_after_running_items(make: Callable[..., AsyncExecutor]) -> None:
    """``shutdown(wait=True)`` returns only once the running items are done."""
    executor = make()
    gate, started = Gate(), threading.Event()
    running = executor.submit(hold, gate, started)
    assert waited(started)
    seen: list[bool] = []

    def stop() -> None:
        executor.shutdown(wait=True)
        seen.append(running.done())

    stopper = threading.Thread(target=stop)
    stopper.start()
    gate.open()
    stopper.join(WAIT)
    assert seen == [True]
    assert running.result(0) == "released"


def test_shutdown_cancel_futures_cancels_running(make: Callable[..., AsyncExecutor]) -> None:
    """With ``cancel_futures=True`` running coroutines see CancelledError and their futures
    end with a CancelledError; queued ones are cancelled."""
    executor = make(max_workers=2)
    gate = Gate()
    cleaned = [threading.Event(), threading.Event()]
    entered = [threading.Event(), threading.Event()]

    running = [executor.submit(Blocks().process, gate, cleaned[i], entered[i]) for i in range(2)]
    assert all(waited(event) for event in entered)
    queued = executor.submit(double, 1)
    (thread,) = own_loop_threads()
    executor.shutdown(wait=True, cancel_futures=True)
    assert not thread.is_alive()
    assert all(event.is_set() for event in cleaned)
    for future in running:
        exc = future.exception(0)
        assert isinstance(exc, CancelledError)
        assert not isinstance(exc, RunCancelled)
    assert queued.cancelled()


def test_shutdown_from_several_threads(make: Callable[..., AsyncExecutor]) -> None:
    """Concurrent ``shutdown()`` calls all return, once the loop thread has ended."""
    executor = make()
    gate, started = Gate(), threading.Event()
    running = executor.submit(hold, gate, started)
    assert waited(started)
    (thread,) = own_loop_threads()
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []
    alive_after: list[bool] = []

    def stop() -> None:
        try:
            barrier.wait(WAIT)
            executor.shutdown(wait=True)
            alive_after.append(thread.is_alive())
        except BaseException as exc:
            errors.append(exc)

    stoppers = [threading.Thread(target=stop) for _ in range(4)]
    for stopper in stoppers:
        stopper.start()
    barrier.wait(WAIT)
    gate.open()
    for stopper in stoppers:
        stopper.join(WAIT)
    assert errors == []
    assert alive_after == [False] * 4
    assert running.result(0) == "released"


def test_shutdown_from_inside_a_coroutine(make: Callable[..., AsyncExecutor]) -> None:
    """A coroutine on the executor's own loop may call ``shutdown()`` without deadlocking."""
    executor = make()

    async def stop_from_inside() -> str:
        executor.shutdown(wait=True)
        await asyncio.sleep(0)
        return "finished"

    future = executor.submit(stop_from_inside)
    (thread,) = own_loop_threads()
    assert future.result(WAIT) == "finished"
    thread.join(WAIT)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        executor.submit(double, 1)


def test_shutdown_is_idempotent(make: Callable[..., AsyncExecutor]) -> None:
    """Calling ``shutdown()`` again, with or without waiting, is harmless."""
    executor = make()
    executor.submit(double, 1).result(WAIT)
    (thread,) = own_loop_threads()
    executor.shutdown(wait=False)
    executor.shutdown()
    assert not thread.is_alive()
    executor.shutdown(cancel_futures=True)


def test_dropped_executor_stops_its_thread() -> None:
    """An executor garbage-collected without ``shutdown()`` does not leave its thread idling."""
    before = set(loop_threads())
    executor = AsyncExecutor()
    executor.submit(double, 1).result(WAIT)
    (thread,) = set(loop_threads()) - before
    del executor
    gc.collect()
    thread.join(WAIT)
    assert not thread.is_alive()


# Worker side


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_attempt_async_ok() -> None:
    """A well-formed return is OK with the ``(bool, value)`` tuple."""
    assert run(attempt_async(Doubles, (4,), {}, None)) == (OK, (True, 8))


def test_attempt_async_retryable() -> None:
    """An exception the policy lists (or a subclass of one) is RETRY, with the exception."""
    error = PlannedError("flaky")
    assert run(attempt_async(Raises, (error,), {}, (ConnectionError,))) == (RETRY, error)


def test_attempt_async_empty_retry_on_means_any_exception() -> None:
    """An empty ``retry_on`` retries any Exception."""
    error = ValueError("any")
    assert run(attempt_async(Raises, (error,), {}, ())) == (RETRY, error)


@pytest.mark.parametrize("retry_on", [None, (KeyError,)])
def test_attempt_async_fatal(retry_on: tuple[type[BaseException], ...] | None) -> None:
    """An exception not listed, or any when ``retry_on`` is None, is FATAL."""
    error = PlannedError("no")
    assert run(attempt_async(Raises, (error,), {}, retry_on)) == (FATAL, error)


def test_attempt_async_bad_return() -> None:
    """A return that is not ``(bool, value)`` is FATAL with a TypeError naming the event."""
    kind, exc = run(attempt_async(ReturnsBadly, (), {}, ()))
    assert kind == FATAL
    assert isinstance(exc, TypeError)
    assert "ReturnsBadly.process" in str(exc)


def test_attempt_async_sync_process() -> None:
    """A synchronous ``process`` is FATAL with a TypeError that says it must be async."""
    kind, exc = run(attempt_async(NotAsync, (), {}, ()))
    assert kind == FATAL
    assert isinstance(exc, TypeError)
    assert "NotAsync.process must be a coroutine function" in str(exc)


@pytest.mark.parametrize("exc", [asyncio.CancelledError(), SystemExit(3)])
def test_attempt_async_base_exceptions_propagate(exc: BaseException) -> None:
    """CancelledError and other BaseExceptions are not outcomes: they propagate."""
    with pytest.raises(type(exc)):
        run(attempt_async(Raises, (exc,), {}, ()))


def test_run_batch_async_concurrent_and_in_order() -> None:
    """A batch's attempts run concurrently and come back in the order of the items."""
    count = 5

    async def main() -> tuple[float, list[tuple[int, Any]]]:
        room = {"arrived": 0, "all_here": asyncio.Event()}
        items = [((room, count, i), {}) for i in range(count)]
        return await asyncio.wait_for(run_batch_async(WaitsForAll, items, None), WAIT)

    elapsed, outcomes, _ = run(main())
    assert outcomes == [(OK, (True, i)) for i in range(count)]
    assert elapsed >= 0


def test_run_batch_async_single_item_and_failures() -> None:
    """A batch of one works, and a failing attempt is an outcome, not an exception."""
    error = PlannedError("x")
    _, outcomes, _ = run(run_batch_async(Raises, [((error,), {})], (PlannedError,)))
    assert outcomes == [(RETRY, error)]


def test_run_batch_async_on_the_executor(make: Callable[..., AsyncExecutor]) -> None:
    """``run_batch_async`` submitted to an AsyncExecutor returns elapsed seconds and outcomes."""
    executor = make()
    future: Future[tuple[float, list[tuple[int, Any]], bool]] = executor.submit(
        run_batch_async, Doubles, [((i,), {}) for i in range(10)], None
    )
    elapsed, outcomes, plain = future.result(WAIT)
    assert outcomes == [(OK, (True, 2 * i)) for i in range(10)]
    assert plain is False
    assert isinstance(elapsed, float)


def test_submits_racing_shutdown_all_settle(make: Callable[..., AsyncExecutor]) -> None:
    """Futures submitted from several threads while another shuts down all end, none hangs."""
    executor = make(max_workers=10)
    barrier = threading.Barrier(5)
    futures: list[Future[None]] = []
    refused: list[int] = []

    def submitter() -> None:
        barrier.wait(WAIT)
        for _ in range(500):
            try:
                futures.append(executor.submit(asyncio.sleep, 0))
            except RuntimeError:
                refused.append(1)

    threads = [threading.Thread(target=submitter) for _ in range(4)]
    for thread in threads:
        thread.start()
    barrier.wait(WAIT)
    executor.shutdown(wait=True)
    for thread in threads:
        thread.join(WAIT)
    assert len(futures) + len(refused) == 2000
    for future in futures:
        assert future.cancelled() or future.result(0) is None
