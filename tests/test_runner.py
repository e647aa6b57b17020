"""The runner's contract (SPEC §7), the same tests against every executor kind."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from event_pipeline import (
    EventBase,
    EventResult,
    ImproperlyConfigured,
    Runner,
    StopProcessingError,
)
from helpers_events import (
    BadShape,
    Echo,
    Flaky,
    Interrupt,
    Listed,
    NoRetry,
    Square,
    Stopper,
    variant,
)
from leaks import leftovers


def counter(tmp_path: Path) -> Iterator[str]:
    """Fresh attempt-counter files."""
    for i in itertools.count():
        yield str(tmp_path / f"attempts-{i}")


def test_run_one_task(runner: Runner, kind: str) -> None:
    """``run`` makes one task of process(*args, **kwargs)."""
    event = variant(Echo, kind)
    run = runner.run(event, 1, "two", key="value")
    assert run.success
    assert run.event_name == f"Echo_{kind}"
    [result] = run.results
    assert result.content == ((1, "two"), {"key": "value"})
    assert (result.error, result.exception, result.attempts) == (False, None, 1)
    assert result.event_name == f"Echo_{kind}"
    assert result.duration >= 0


def test_map_keeps_input_order(runner: Runner, kind: str) -> None:
    """``map`` zips its iterables and returns results in input order, with unique ids."""
    run = runner.map(variant(Echo, kind), range(300), itertools.count(1000))
    assert [r.content for r in run.results] == [((i, 1000 + i), {}) for i in range(300)]
    assert len({r.task_id for r in run.results}) == 300
    assert run.errors == []


def test_false_result_is_a_failed_task(runner: Runner, kind: str) -> None:
    """``(False, value)`` is a failure without exception; evaluation sees it."""
    run = runner.map(variant(Square, kind), [2, -3, 4])
    assert [r.error for r in run.results] == [False, True, False]
    assert run.results[1].content == 9 and run.results[1].exception is None
    assert run.errors == [run.results[1]]
    assert not run.success


def test_imap_streams_in_order(runner: Runner, kind: str) -> None:
    """``imap`` yields one result per input, in input order."""
    stream = runner.imap(variant(Square, kind), range(500))
    assert [r.content for r in stream] == [i * i for i in range(500)]


def test_retry_until_success_counts_attempts(runner: Runner, kind: str, tmp_path: Path) -> None:
    """A task that raises twice then succeeds makes three attempts and succeeds."""
    path = str(tmp_path / "a")
    [result] = runner.run(variant(Flaky, kind), path, 2, "ValueError").results
    assert (result.error, result.content, result.attempts) == (False, 3, 3)


def test_last_exception_is_reported(runner: Runner, kind: str, tmp_path: Path) -> None:
    """When every allowed attempt raises, the task fails with the last exception."""
    path = str(tmp_path / "a")
    [result] = runner.run(variant(Flaky, kind), path, 99, "ValueError").results
    assert result.error and result.attempts == 3
    assert isinstance(result.exception, ValueError)
    assert result.content is result.exception
    assert Path(path).read_text() == "xxx"


def test_listed_exception_subclass_is_retried(runner: Runner, kind: str, tmp_path: Path) -> None:
    """A subclass of a ``retry_on_exceptions`` entry is retried."""
    [result] = runner.run(variant(Listed, kind), str(tmp_path / "a"), 2, "FlakyError").results
    assert (result.error, result.attempts) == (False, 3)


def test_unlisted_exception_is_not_retried(runner: Runner, kind: str, tmp_path: Path) -> None:
    """An exception outside ``retry_on_exceptions`` ends the task at once."""
    [result] = runner.run(variant(Listed, kind), str(tmp_path / "a"), 2, "ValueError").results
    assert result.error and result.attempts == 1
    assert type(result.exception) is ValueError


def test_no_policy_means_one_attempt(runner: Runner, kind: str, tmp_path: Path) -> None:
    """With ``retry_policy=None`` a task makes exactly one attempt."""
    [result] = runner.run(variant(NoRetry, kind), str(tmp_path / "a"), 1, "ConnectionError").results
    assert result.error and result.attempts == 1
    assert isinstance(result.exception, ConnectionError)


def test_false_return_is_not_retried(runner: Runner, kind: str, tmp_path: Path) -> None:
    """Returning ``(False, x)`` is not an exception: no retry."""
    [result] = runner.run(variant(Flaky, kind), str(tmp_path / "a"), 0, "return-false").results
    assert (result.error, result.content, result.exception, result.attempts) == (True, 1, None, 1)


@pytest.mark.parametrize(
    "returned",
    [None, True, (True,), (True, 1, 2), ("yes", 1), [True, 1], (1, "one")],
    ids=repr,
)
def test_bad_return_shape_fails_without_retry(runner: Runner, kind: str, returned: Any) -> None:
    """Anything but a 2-tuple starting with a bool is a TypeError naming the event; no retry."""
    [result] = runner.run(variant(BadShape, kind), returned).results
    assert result.error and result.attempts == 1
    assert isinstance(result.exception, TypeError)
    message = str(result.exception)
    assert f"BadShape_{kind}.process must return" in message
    assert repr(returned) in message
    if isinstance(returned, tuple) and len(returned) == 2:
        assert "the first item must be True or False" in message
    else:
        assert "2-tuple" in message


def test_namedtuple_return_is_fine(runner: Runner, kind: str) -> None:
    """A tuple subclass of two items starting with a bool is a valid return."""
    from helpers_events import Outcome

    [result] = runner.run(variant(BadShape, kind), Outcome(True, 5)).results
    assert (result.error, result.content) == (False, 5)


@pytest.mark.parametrize("name", ["KeyboardInterrupt", "SystemExit"])
def test_base_exceptions_propagate(runner: Runner, kind: str, name: str) -> None:
    """KeyboardInterrupt and SystemExit are never retried and escape the call."""
    expected = KeyboardInterrupt if name == "KeyboardInterrupt" else SystemExit
    with pytest.raises(expected):
        runner.map(variant(Interrupt, kind), [name])
    assert runner.run(variant(Echo, kind), 1).success


def test_stop_on_exception(runner: Runner, kind: str) -> None:
    """The first exception stops the run: StopProcessingError with cause and partial run."""
    with pytest.raises(StopProcessingError) as info:
        runner.map(variant(Stopper, kind), range(60))
    error = info.value
    assert isinstance(error.__cause__, ValueError)
    assert "Stopper" in str(error)
    partial = error.run
    assert partial.success is False
    indices = [int(r.task_id.rsplit(":", 1)[1]) for r in partial.results]
    assert indices == sorted(indices)
    # Tasks not started were cancelled: far fewer than 60 ran; inline, none after the failure.
    assert len(partial.results) < 30
    if kind == "inline":
        assert [r.content for r in partial.results[:3]] == [0, 1, 2]
        assert len(partial.results) == 4
    assert [r for r in partial.results if r.error] == [
        r for r in partial.results if r.exception is error.__cause__
    ]


def test_stop_on_exception_in_imap(runner: Runner, kind: str) -> None:
    """imap stops too; the partial run holds the results not yet yielded."""
    yielded = []
    with pytest.raises(StopProcessingError) as info:
        for result in runner.imap(variant(Stopper, kind), range(60)):
            yielded.append(result.content)
    assert yielded == list(range(len(yielded))) and len(yielded) <= 3
    assert isinstance(info.value.__cause__, ValueError)
    pending = [int(r.task_id.rsplit(":", 1)[1]) for r in info.value.run.results]
    assert pending == sorted(pending) and all(i >= len(yielded) for i in pending)
    assert 3 in pending


@pytest.mark.parametrize("kind", ["inline", "thread"])
def test_window_bounds_imap_lookahead(kind: str) -> None:
    """imap reads at most ``window`` inputs ahead of what it has yielded."""
    consumed = 0

    def numbers() -> Iterator[int]:
        nonlocal consumed
        for i in range(100_000):
            consumed += 1
            yield i

    with Runner(window=64) as runner:
        yielded = 0
        for result in runner.imap(variant(Square, kind), numbers()):
            assert result.content == yielded * yielded
            yielded += 1
            assert consumed - yielded <= 64
    assert yielded == 100_000


def test_executors_are_reused(kind: str) -> None:
    """One executor per (class, config), reused by later calls."""
    with Runner() as runner:
        runner.run(variant(Echo, kind), 1)
        runner.map(variant(Square, kind), [1, 2])
        runner.run(variant(Echo, kind), 2)
        assert len(runner._cache._executors) == 1


def test_executor_instance_used_as_is() -> None:
    """An executor instance is used as given and never shut down by the runner."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="users-own")

    class OnUsersPool(EventBase):
        executor = pool

        def process(self) -> tuple[bool, Any]:
            return True, threading.current_thread().name

    with Runner() as runner:
        [result] = runner.run(OnUsersPool).results
    assert result.content.startswith("users-own")
    assert pool.submit(lambda: 42).result(timeout=5) == 42
    pool.shutdown()


def test_shutdown_leaves_nothing_behind(kind: str) -> None:
    """After shutdown no thread or process of the runner's executors is left."""
    before = set(threading.enumerate())
    children_before = set(multiprocessing.active_children())
    runner = Runner()
    runner.map(variant(Square, kind), range(50))
    runner.shutdown()
    assert leftovers(before, children_before) == ([], [])
    with pytest.raises(RuntimeError, match="shut down"):
        runner.run(variant(Echo, kind), 1)


def test_threads_share_a_runner(runner: Runner, kind: str) -> None:
    """Four threads using one runner at once all get correct results, on one pool."""
    event = variant(Square, kind)
    barrier = threading.Barrier(4)
    outcomes: dict[int, list[Any]] = {}

    def work(n: int) -> None:
        barrier.wait(timeout=10)
        outcomes[n] = [r.content for r in runner.map(event, range(n * 100, n * 100 + 200)).results]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    assert outcomes == {n: [i * i for i in range(n * 100, n * 100 + 200)] for n in range(4)}
    assert sum(key[0] is event.executor for key in runner._cache._executors) == 1


def test_backing_off_task_does_not_hold_the_worker(tmp_path: Path) -> None:
    """On a one-worker pool, ten quick tasks finish while one task waits 1 s for its retry."""
    from helpers_events import Backoff

    with Runner() as runner:
        run = runner.map(Backoff, [str(tmp_path / "a")] * 11, range(11))
    assert run.success
    first, *quick = run.results
    assert first.attempts == 2
    retry_started = first.content
    assert all(r.content < retry_started for r in quick)
    assert all(r.attempts == 1 for r in quick)


def test_tasks_run_concurrently_on_small_inputs() -> None:
    """Batching never costs parallelism: 8 slow tasks on 4 threads run 4 at a time."""
    from helpers_events import Rendezvous

    with Runner() as runner:
        run = runner.map(Rendezvous, range(8))
    assert run.success, [r.exception for r in run.results]


def test_max_tasks_per_child_is_honoured() -> None:
    """A process pool replaces a worker after ``max_tasks_per_child`` tasks (3.11+)."""
    from helpers_events import Pid

    with Runner() as runner:
        run = runner.map(Pid, range(6))
        [pool] = runner._cache._executors.values()
        assert pool._mp_context.get_start_method() == "spawn"  # type: ignore[attr-defined]
    assert len({r.content for r in run.results}) >= 3


def test_event_must_be_an_event_class(runner: Runner) -> None:
    """Anything but an EventBase subclass is a TypeError."""
    for bad in (object, Echo(), "Echo", len):
        with pytest.raises(TypeError, match="EventBase subclass"):
            runner.run(bad)  # type: ignore[arg-type]


def test_abstract_event_is_refused(runner: Runner) -> None:
    """An event without process() is a TypeError before anything runs."""
    with pytest.raises(TypeError, match="EventBase cannot run: it does not define process"):
        runner.run(EventBase)


def test_zero_tasks(runner: Runner, kind: str) -> None:
    """A map over nothing makes no task and evaluates the empty case."""
    run = runner.map(variant(Echo, kind), [])
    assert run.results == [] and run.success is False
    assert list(runner.imap(variant(Echo, kind), [])) == []


def test_result_type() -> None:
    """Results are EventResult instances."""
    with Runner() as runner:
        assert isinstance(runner.run(Echo.__subclasses__()[0]).results[0], EventResult)


def test_class_methods_use_the_default_runner() -> None:
    """MyEvent.run/map/imap and event_pipeline.run work without a Runner."""
    import event_pipeline

    event = variant(Square, "thread")
    assert event.run(3).results[0].content == 9
    assert [r.content for r in event.map([1, 2]).results] == [1, 4]
    assert [r.content for r in event.imap([3])] == [9]
    assert event_pipeline.run(event, 4).results[0].content == 16



def test_local_event_class_refused_by_process_pool() -> None:
    """A class defined in a function cannot reach a process worker: a clear error first."""
    from concurrent.futures import ProcessPoolExecutor

    class Local(EventBase):
        executor = ProcessPoolExecutor

        def process(self) -> tuple[bool, Any]:
            return True, None  # pragma: no cover

    before = set(multiprocessing.active_children())
    with (
        Runner() as runner,
        pytest.raises(ImproperlyConfigured, match="define the event at module level") as info,
    ):
        runner.run(Local)
    assert "Local" in str(info.value)
    assert set(multiprocessing.active_children()) == before


def test_unpicklable_argument_fails_its_task_only() -> None:
    """A lambda argument fails that task with a TypeError naming the event; others run."""
    with Runner() as runner:
        run = runner.map(variant(Echo, "process"), [1, lambda: 2, 3])
    assert [r.error for r in run.results] == [False, True, False]
    failed = run.results[1]
    assert isinstance(failed.exception, TypeError) and failed.attempts == 0
    assert "Echo_process" in str(failed.exception) and "module level" in str(failed.exception)


def test_process_pool_exceptions_keep_their_traceback(tmp_path: Path) -> None:
    """An exception from a worker process carries the worker's traceback text as cause."""
    with Runner() as runner:
        run = runner.run(variant(NoRetry, "process"), str(tmp_path / "a"), 1, "ValueError")
    [result] = run.results
    assert isinstance(result.exception, ValueError)
    assert "in process" in str(result.exception.__cause__)


def test_closing_imap_early_cancels_the_rest() -> None:
    """Abandoning an imap stream cancels the tasks that have not started."""
    from helpers_events import Counted, counted_calls

    with Runner(window=8) as runner:
        stream = runner.imap(Counted, range(1_000))
        first = [next(stream).content for _ in range(3)]
        stream.close()
        assert first == [0, 1, 2]
    assert counted_calls() < 50


@pytest.mark.parametrize("window", [0, -1, 2.5, True, "8"])
def test_bad_window_is_refused(window: Any) -> None:
    """The window must be a positive int."""
    with pytest.raises(ValueError, match="window must be an int greater than 0"):
        Runner(window=window)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_batch_size_must_be_a_positive_int(bad: Any) -> None:
    """``Runner(batch_size=...)`` takes a positive int or None; anything else is a ValueError."""
    with pytest.raises(ValueError, match="batch_size"):
        Runner(batch_size=bad)


@pytest.mark.parametrize("size", [1, 7, 1024])
def test_a_fixed_batch_size_keeps_every_result_in_order(kind: str, size: int) -> None:
    """With a fixed batch size every task still gets its own result, in input order."""
    with Runner(batch_size=size) as runner:
        run = runner.map(variant(Echo, kind), range(50))
    assert run.success and [r.content for r in run.results] == [((i,), {}) for i in range(50)]
    assert all(r.attempts == 1 for r in run.results)
