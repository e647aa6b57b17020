"""Async events (SPEC §14.1) through the runner, and the configuration rules of §14.1/§14.2.

Events that run live in ``async_run_events``; classes that must fail at creation are made
inside the tests. Real time is used only where concurrency is the point, with wide margins.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest

import async_run_events as ev
import event_pipeline
from event_pipeline import (
    AsyncExecutor,
    DefaultExecutor,
    EventBase,
    EventRun,
    Flow,
    ImproperlyConfigured,
    Runner,
    StopProcessingError,
    event,
)
from event_pipeline._event import settings_of
from event_pipeline.flow import parallel
from leaks import leftovers


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    made = Runner()
    yield made
    made.shutdown()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> Iterator[str]:
    """A key for this test's traces in async_run_events, forgotten afterwards."""
    name = request.node.name
    ev.forget(name)
    yield name
    ev.forget(name)


def contents(run: EventRun) -> list[Any]:
    return [result.content for result in run.results]


# -- async events run ------------------------------------------------------------------------


def test_class_based_async_event_defaults_to_async_executor(runner: Runner) -> None:
    assert settings_of(ev.Double).executor is AsyncExecutor
    assert settings_of(ev.Double).is_async
    run = runner.run(ev.Double, 21)
    assert run.success and contents(run) == [42]
    assert run.results[0].attempts == 1 and run.event_name == "Double"


def test_decorated_async_function_is_an_async_event(runner: Runner) -> None:
    assert isinstance(ev.triple, type) and issubclass(ev.triple, EventBase)
    assert settings_of(ev.triple).executor is AsyncExecutor
    assert asyncio.run(ev.triple.func(2)) == (True, 6)
    run = runner.map(ev.triple, [1, 2, 3])
    assert run.success and contents(run) == [3, 6, 9]
    assert run.event_name == "triple"


def test_default_runner_calls() -> None:
    assert contents(ev.Double.run(4)) == [8]
    assert contents(event_pipeline.run(ev.triple, 5)) == [15]
    assert contents(ev.Double.map([1, 2])) == [2, 4]
    assert [r.content for r in ev.Double.imap([3])] == [6]


def test_map_results_in_input_order_whatever_the_finish_order(runner: Runner) -> None:
    """Later inputs finish first (shorter sleeps); results stay in input order."""
    xs = list(range(8))
    delays = [0.08 - 0.01 * x for x in xs]
    run = runner.map(ev.Double, xs, delays)
    assert contents(run) == [2 * x for x in xs]
    assert [r.task_id for r in run.results] == sorted(
        (r.task_id for r in run.results), key=lambda t: int(t.split(":")[-1])
    )


def test_imap_streams_in_input_order(runner: Runner) -> None:
    xs = list(range(6))
    delays = [0.06 - 0.01 * x for x in xs]
    results = list(runner.imap(ev.Double, xs, delays))
    assert [r.content for r in results] == [2 * x for x in xs]
    assert all(r.success for r in results)


def test_imap_over_a_generator_of_many_inputs(runner: Runner) -> None:
    results = runner.imap(ev.triple, (x for x in range(2000)))
    assert sum(r.content for r in results) == 3 * sum(range(2000))


def test_retries_of_an_async_event(runner: Runner, key: str) -> None:
    run = runner.map(ev.flaky_once, [key] * 5, range(5))
    assert run.success and contents(run) == list(range(5))
    assert [r.attempts for r in run.results] == [2] * 5


def test_bad_return_shape_is_a_type_error_not_retried(runner: Runner) -> None:
    run = runner.run(ev.BadShape)
    [result] = run.results
    assert isinstance(result.exception, TypeError)
    assert "BadShape" in str(result.exception)
    assert result.attempts == 1


@pytest.mark.parametrize(
    ("event_class", "success"), [(ev.Judged, False), (ev.JudgedPartial, True)]
)
def test_evaluation_states_apply(
    runner: Runner, event_class: type[EventBase], success: bool
) -> None:
    run = runner.map(event_class, [1, -1, 2])
    assert run.success is success
    assert [r.success for r in run.results] == [True, False, True]
    assert run.errors == [run.results[1]]


def test_stop_on_exception_stops_the_run(runner: Runner) -> None:
    with pytest.raises(StopProcessingError) as raised:
        runner.map(ev.StopsOnError, [1, -1, 2, 3], [0.0, 0.0, 0.5, 0.5])
    stop = raised.value
    assert isinstance(stop.__cause__, ValueError) and "negative: -1" in str(stop.__cause__)
    partial = stop.run
    assert partial.success is False
    # One coroutine at a time: the inputs after -1 never started.
    assert [r.content for r in partial.results if r.success] == [1]
    assert [type(r.exception) for r in partial.errors] == [ValueError]


def test_backoff_does_not_hold_the_only_slot(runner: Runner, key: str) -> None:
    """max_workers=1: the first task fails and backs off 1 s; the ten 10 ms tasks all finish
    before its retry starts, and the retry starts no sooner than its backoff allows."""
    items = ["slow"] + [f"quick{i}" for i in range(10)]
    run = runner.map(ev.BacksOff, [key] * len(items), items)
    assert run.success and contents(run) == items
    assert [r.attempts for r in run.results] == [2] + [1] * 10
    trace = ev.TRACE[key]
    first_failure = next(t for what, item, t in trace if (what, item) == ("end", ("slow", 1)))
    retry_start = next(t for what, item, t in trace if (what, item) == ("start", ("slow", 2)))
    quick_ends = [t for what, item, t in trace if what == "end" and item[0] != "slow"]
    assert len(quick_ends) == 10
    assert max(quick_ends) < retry_start
    assert max(quick_ends) - first_failure < 0.8  # they did not wait for the backoff
    assert retry_start - first_failure >= 0.95  # the backoff (1 s) was kept


def test_runner_respects_max_workers(runner: Runner, key: str) -> None:
    run = runner.map(ev.ThreeAtOnce, [key] * 12, [0.03] * 12)
    assert run.success
    assert ev.PEAK[key] == 3


def test_default_max_workers_is_100(runner: Runner, key: str) -> None:
    run = runner.map(ev.DefaultBound, [key] * 101, [0.03] * 101)
    assert run.success
    assert ev.PEAK[key] == 100


def test_executor_instance_is_used_and_left_running(key: str) -> None:
    loop = AsyncExecutor(max_workers=2)

    class OnInstance(EventBase):
        executor = loop

        async def process(self, key: str, seconds: float) -> tuple[bool, None]:
            await ev._counted(key, seconds)
            return True, None

    try:
        with Runner() as own:
            assert own.map(OnInstance, [key] * 6, [0.02] * 6).success
        assert ev.PEAK[key] == 2
        # The runner never shuts down an instance.
        assert loop.submit(lambda: 7).result(timeout=5) == 7
    finally:
        loop.shutdown()


def test_shutdown_leaves_no_loop_thread() -> None:
    before = set(threading.enumerate())
    own = Runner()
    assert own.map(ev.Double, range(50)).success
    assert any(t.name == "event_pipeline-async" for t in threading.enumerate())
    own.shutdown()
    assert leftovers(before) == ([], [])


# -- flows -----------------------------------------------------------------------------------


def test_flow_mixing_inline_thread_and_async_steps(runner: Runner) -> None:
    flow = Flow.parse("Words |=> Upper |=> Decorate |-> Join", ev)
    run = runner.run(flow, "hello async world")
    assert run.success, run.summary()
    assert run.output == "[HELLO] [ASYNC] [WORLD]"
    assert run["Decorate"].run is not None and run["Decorate"].attempts == 3


def test_async_and_thread_members_of_a_group_overlap(runner: Runner, key: str) -> None:
    run = runner.run(parallel(ev.AsyncMeet, ev.ThreadMeet), key=key)
    assert run.success and run.output == ("async", "thread")
    times = {what: t for what, _, t in ev.TRACE[key]}
    assert times["async-start"] < times["thread-end"]
    assert times["thread-start"] < times["async-end"]


def test_map_of_a_flow_with_an_async_step(runner: Runner) -> None:
    flow = Flow.parse("Double |-> triple", ev)
    runs = runner.map(flow, range(20))
    assert [r.output for r in runs] == [6 * x for x in range(20)]


# -- configuration: mismatches ---------------------------------------------------------------


def check_message(error: pytest.ExceptionInfo[ImproperlyConfigured], *parts: str) -> None:
    message = str(error.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "executor",
    [ThreadPoolExecutor, ProcessPoolExecutor, DefaultExecutor],
    ids=lambda e: e.__name__,
)
def test_async_process_on_another_executor_class(executor: type[Executor]) -> None:
    chosen = executor
    with pytest.raises(ImproperlyConfigured) as raised:

        class Mismatched(EventBase):
            executor = chosen

            async def process(self) -> tuple[bool, None]:
                return True, None

    check_message(raised, "Mismatched.executor", executor.__name__, "AsyncExecutor")
    assert isinstance(raised.value, TypeError) and isinstance(raised.value, ValueError)


def test_async_process_on_another_executor_instance() -> None:
    pool = ThreadPoolExecutor(1)
    try:
        with pytest.raises(ImproperlyConfigured) as raised:

            class OnPool(EventBase):
                executor = pool

                async def process(self) -> tuple[bool, None]:
                    return True, None

        check_message(raised, "OnPool.executor", "ThreadPoolExecutor")
    finally:
        pool.shutdown()


def test_async_override_of_a_sync_event_on_a_thread_pool() -> None:
    """The executor inherited from a parent is declared, so it is not replaced silently."""
    with pytest.raises(ImproperlyConfigured) as raised:

        class AsyncChild(ev.Upper):
            async def process(self, word: str) -> tuple[bool, str]:  # type: ignore[override]
                return True, word

    check_message(raised, "AsyncChild.executor", "ThreadPoolExecutor")


def test_decorated_async_function_on_a_thread_pool() -> None:
    with pytest.raises(ImproperlyConfigured) as raised:

        @event(executor=ThreadPoolExecutor)
        async def fetch_on_threads() -> tuple[bool, None]:
            return True, None

    check_message(raised, "fetch_on_threads.executor", "ThreadPoolExecutor")


@pytest.mark.parametrize("as_instance", [False, True], ids=["class", "instance"])
def test_sync_process_on_async_executor(as_instance: bool) -> None:
    loop = AsyncExecutor() if as_instance else None
    with pytest.raises(ImproperlyConfigured) as raised:

        class SyncOnLoop(EventBase):
            executor = loop if loop is not None else AsyncExecutor

            def process(self) -> tuple[bool, None]:
                return True, None

    check_message(raised, "SyncOnLoop.executor", "AsyncExecutor", "not async def")
    if loop is not None:
        loop.shutdown()


def test_decorated_sync_function_on_async_executor() -> None:
    with pytest.raises(ImproperlyConfigured) as raised:

        @event(executor=AsyncExecutor)
        def plain() -> tuple[bool, None]:
            return True, None

    check_message(raised, "plain.executor", "AsyncExecutor")


def test_async_executor_named_explicitly_is_fine() -> None:
    class Explicit(EventBase):
        executor = AsyncExecutor

        async def process(self) -> tuple[bool, None]:
            return True, None

    assert settings_of(Explicit).executor is AsyncExecutor


# -- configuration: timeout ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, -1, -0.5, "5", True, False, math.nan, math.inf, [1]],
    ids=["0", "-1", "-0.5", "str", "True", "False", "nan", "inf", "list"],
)
def test_bad_timeout_values(value: object) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:

        class BadTimeout(EventBase):
            timeout = value  # type: ignore[assignment]

            async def process(self) -> tuple[bool, None]:
                return True, None

    check_message(raised, "BadTimeout.timeout", repr(value))


@pytest.mark.parametrize("value", [0, "5", True, math.nan])
def test_bad_timeout_values_in_the_decorator(value: object) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:

        @event(timeout=value)  # type: ignore[arg-type]
        async def badly_timed() -> tuple[bool, None]:
            return True, None

    check_message(raised, "badly_timed.timeout", repr(value))


@pytest.mark.parametrize("value", [1, 0.001, 2.5, 10**6])
def test_good_timeout_values(value: float) -> None:
    class Timed(EventBase):
        timeout = value

        async def process(self) -> tuple[bool, None]:
            return True, None

    assert settings_of(Timed).timeout == value


@pytest.mark.parametrize(
    "executor",
    [AsyncExecutor, ThreadPoolExecutor, ProcessPoolExecutor],
    ids=lambda e: e.__name__,
)
def test_timeout_accepted_where_it_can_be_enforced(executor: type[Executor]) -> None:
    chosen = executor
    if executor is AsyncExecutor:

        class Enforced(EventBase):
            executor = chosen
            timeout = 1.0

            async def process(self) -> tuple[bool, None]:
                return True, None
    else:

        class Enforced(EventBase):  # type: ignore[no-redef]
            executor = chosen
            timeout = 1.0

            def process(self) -> tuple[bool, None]:
                return True, None

    assert settings_of(Enforced).timeout == 1.0


@pytest.mark.parametrize("declared", [False, True], ids=["default", "explicit"])
def test_timeout_on_default_executor_is_refused(declared: bool) -> None:
    with pytest.raises(ImproperlyConfigured) as raised:

        class InlineTimed(EventBase):
            if declared:
                executor = DefaultExecutor
            timeout = 2

            def process(self) -> tuple[bool, None]:
                return True, None

    check_message(
        raised, "InlineTimed.timeout", "2", "DefaultExecutor",
        "AsyncExecutor", "ThreadPoolExecutor", "ProcessPoolExecutor",
    )


def test_timeout_in_the_decorator_on_default_executor_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured) as raised:

        @event(timeout=1)
        def inline_fn() -> tuple[bool, None]:
            return True, None

    check_message(raised, "inline_fn.timeout", "1", "DefaultExecutor")


def test_timeout_on_a_dask_executor_class_is_refused() -> None:
    pytest.importorskip("distributed")
    from event_pipeline.executors.dask import DaskExecutor

    with pytest.raises(ImproperlyConfigured) as raised:

        class OnDask(EventBase):
            executor = DaskExecutor
            timeout = 3

            def process(self) -> tuple[bool, None]:
                return True, None

    check_message(raised, "OnDask.timeout", "3", "DaskExecutor")


def test_timeout_on_an_async_executor_instance_is_accepted() -> None:
    """Decided: an AsyncExecutor instance can cancel a coroutine at its deadline (it has
    ``cancel_running``), so the instance rule of §14.2 (refused) does not apply to it."""
    loop = AsyncExecutor(max_workers=2)

    class TimedOnInstance(EventBase):
        executor = loop
        timeout = 0.1

        async def process(self) -> tuple[bool, None]:
            await asyncio.sleep(5)
            return True, None

    try:
        with Runner() as own:
            [result] = own.run(TimedOnInstance).results
        assert isinstance(result.exception, TimeoutError)
    finally:
        loop.shutdown()


@pytest.mark.parametrize(
    "make", [lambda: ThreadPoolExecutor(1), DefaultExecutor], ids=["thread", "default"]
)
def test_timeout_on_an_executor_instance_is_refused_when_first_run(make: Any) -> None:
    instance = make()

    class TimedInstance(EventBase):
        executor = instance
        timeout = 0.2

        def process(self) -> tuple[bool, None]:
            return True, None

    try:
        with Runner() as own, pytest.raises(ImproperlyConfigured) as raised:
            own.run(TimedInstance)
        check_message(raised, "TimedInstance.timeout", "0.2")
    finally:
        instance.shutdown()


def test_timeout_reassigned_after_creation_is_checked_when_run(runner: Runner) -> None:
    class Later(EventBase):
        async def process(self) -> tuple[bool, None]:
            return True, None

    Later.timeout = 0  # type: ignore[assignment]
    with pytest.raises(ImproperlyConfigured) as raised:
        runner.run(Later)
    check_message(raised, "Later.timeout", "0")
    Later.timeout = 5
    assert runner.run(Later).success
