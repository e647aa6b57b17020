"""The bulk path: batches whose attempts all return a plain ``(bool, value)`` tuple, inputs
read a window at a time, and what must not change because of them."""

from __future__ import annotations

import itertools
import pickle
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import pytest

from event_pipeline import EventBase, EventResult, EventRun, Runner, StopProcessingError
from event_pipeline._results import first_try_results, task_result
from event_pipeline._worker import FATAL, OK, RETRY, load_outcomes, run_batch, run_pickled


class Pair(tuple):  # type: ignore[type-arg]
    """A tuple subclass: judged, never taken as plain."""


class Mixed(EventBase):
    """What ``process`` returns depends on its input; every call is counted."""

    calls: list[Any] = []

    def process(self, x: Any) -> Any:
        Mixed.calls.append(x)
        if x == "raise":
            raise ValueError("asked to")
        if x == "subclass":
            return Pair((True, x))
        if x == "not-bool":
            return (1, x)
        return (x != "false", x)


@pytest.fixture(autouse=True)
def _fresh_calls() -> Iterator[None]:
    Mixed.calls = []
    yield


def test_a_plain_batch_comes_back_as_its_tuples() -> None:
    elapsed, entries, plain = run_batch(Mixed, [((i,), {}) for i in range(5)], None)
    assert plain is True
    assert entries == [(True, i) for i in range(5)]
    assert elapsed >= 0
    assert Mixed.calls == list(range(5))


def test_a_batch_with_one_odd_task_is_judged_task_by_task_each_run_once() -> None:
    inputs: list[Any] = [1, "false", "raise", 2, "subclass", "not-bool", 3]
    items: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((x,), {}) for x in inputs]
    _, outcomes, plain = run_batch(Mixed, items, (ValueError,))
    assert plain is False
    kinds = [kind for kind, _ in outcomes]
    assert kinds == [OK, OK, RETRY, OK, OK, FATAL, OK]
    assert outcomes[0] == (OK, (True, 1))
    assert outcomes[1] == (OK, (False, "false"))
    # The subclass is taken apart into a plain tuple by the judge.
    assert type(outcomes[4][1]) is tuple and outcomes[4][1] == (True, "subclass")
    assert "must return (bool, value)" in str(outcomes[5][1])
    # Nothing ran twice, whichever path judged it.
    assert Mixed.calls == [1, "false", "raise", 2, "subclass", "not-bool", 3]


def test_a_batch_of_single_arguments_is_judged_as_the_same_calls_would_be() -> None:
    """Items sent as single arguments (a map over one iterable) give the outcomes their
    ``((item,), {})`` calls give, odd ones included, and each task runs once."""
    inputs: list[Any] = [1, "false", "raise", 2, "subclass", "not-bool", 3]
    _, singles, plain = run_batch(Mixed, inputs, (ValueError,), single=True)
    calls_of_singles = Mixed.calls
    Mixed.calls = []
    _, pairs, _ = run_batch(Mixed, [((x,), {}) for x in inputs], (ValueError,))
    assert plain is False
    assert [(k, repr(v)) for k, v in singles] == [(k, repr(v)) for k, v in pairs]
    assert calls_of_singles == Mixed.calls == inputs
    _, plain_values, plain = run_batch(Mixed, [(1, 2), 3], None, single=True)
    assert plain is True and plain_values == [(True, (1, 2)), (True, 3)]


def test_a_map_over_one_iterable_passes_each_item_whole() -> None:
    """One iterable of tuples: each tuple is the task's one argument, on every executor
    path (in bulk on threads, one at a time inline, pickled to processes)."""
    items = [(1, 2), (3, 4), ("a", None)]

    class Whole(EventBase):
        def process(self, item: Any) -> tuple[bool, Any]:
            return True, item

    class WholeThreads(Whole):
        executor = ThreadPoolExecutor

    with Runner() as runner:
        for event in (Whole, WholeThreads):
            assert [r.content for r in runner.map(event, items).results] == items
            assert [r.content for r in runner.imap(event, iter(items))] == items
            assert [r.content for r in runner.imap(event, items)] == items
        assert [r.content for r in runner.map(MixedThreads, [7, 8]).results] == [7, 8]


def test_a_plain_process_batch_is_one_pickle_of_its_tuples() -> None:
    blob = pickle.dumps([((i,), {}) for i in range(4)])
    _, returned, plain = run_pickled(Mixed, blob, None)
    assert plain is True
    assert load_outcomes("Mixed", returned, 4, plain) == ([(True, i) for i in range(4)], True)


def test_a_process_batch_with_a_failure_comes_back_as_outcomes() -> None:
    blob = pickle.dumps([((x,), {}) for x in [1, "raise", 2]])
    _, returned, plain = run_pickled(Mixed, blob, None)
    assert plain is False
    outcomes, loaded_plain = load_outcomes("Mixed", returned, 3, plain)
    assert loaded_plain is False
    assert [kind for kind, _ in outcomes] == [OK, FATAL, OK]
    assert isinstance(outcomes[1][1], ValueError)
    assert Mixed.calls == [1, "raise", 2]


class MixedThreads(Mixed):
    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}


def test_a_thread_map_mixing_plain_and_odd_results_keeps_every_result_in_order() -> None:
    inputs = [("raise" if i % 97 == 5 else "false" if i % 31 == 0 else i) for i in range(3000)]
    with Runner() as runner:
        run = runner.map(MixedThreads, inputs)
    assert [r.content if r.exception is None else "raised" for r in run.results] == [
        "raised" if x == "raise" else x for x in inputs
    ]
    assert [r.error for r in run.results] == [x in ("raise", "false") for x in inputs]
    assert all(r.attempts == 1 for r in run.results)
    assert len({r.task_id for r in run.results}) == len(inputs)
    assert sorted(Mixed.calls, key=str) == sorted(inputs, key=str)


class RunsInSubmit(Executor):
    """An executor of the user's that runs each function inside ``submit``."""

    def __init__(self) -> None:
        self.submits = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submits += 1
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def test_an_executor_that_runs_in_submit_still_stops_at_the_first_exception() -> None:
    """Inputs are read a window at a time, but on an executor seen running work inside
    ``submit`` nothing runs after the task that stops the run."""

    class StopsEarly(Mixed):
        executor = RunsInSubmit()
        stop_on_exception = True

    inputs = [0, 1, 2, "raise", *range(4, 200)]
    with Runner() as runner, pytest.raises(StopProcessingError) as raised:
        runner.map(StopsEarly, inputs)
    assert Mixed.calls == [0, 1, 2, "raise"]
    run = raised.value.run
    assert isinstance(run, EventRun)
    assert [r.content for r in run.results][:3] == [0, 1, 2]


def test_an_executor_that_runs_in_submit_runs_every_task_once() -> None:
    class InSubmit(Mixed):
        executor = RunsInSubmit()

    with Runner() as runner:
        run = runner.map(InSubmit, range(500))
    assert [r.content for r in run.results] == list(range(500))
    assert Mixed.calls == list(range(500))


def test_an_input_that_raises_part_way_fails_the_call_and_leaves_no_thread() -> None:
    before = threading.active_count()

    def inputs() -> Iterator[int]:
        yield from range(50)
        raise LookupError("the input broke")

    class Sized:
        """Sized, so inputs are read a window at a time."""

        def __len__(self) -> int:
            return 100

        def __iter__(self) -> Iterator[int]:
            return inputs()

    with Runner() as runner, pytest.raises(LookupError, match="the input broke"):
        runner.map(MixedThreads, Sized())
    assert threading.active_count() <= before


found: queue.Queue[int | None] = queue.Queue()


class Crawl(EventBase):
    """Each task finds the input after its own: a crawler feeding itself."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, n: int) -> tuple[bool, int]:
        found.put(n + 1 if n < 20 else None)
        return True, n


def test_a_generator_fed_by_the_tasks_themselves_keeps_moving() -> None:
    """An input without a length is read one item at a time, with what is ready sent
    first: its next item may only exist once an earlier task has run."""

    def pages() -> Iterator[int]:
        while (page := found.get(timeout=10)) is not None:
            yield page

    found.put(0)
    with Runner() as runner:
        run = runner.map(Crawl, pages())
    assert [r.content for r in run.results] == list(range(21))


def test_an_iterator_that_knows_its_length_is_read_in_bulk_and_in_order() -> None:
    with Runner() as runner:
        run = runner.map(MixedThreads, itertools.repeat(7, 3000))
    assert [r.content for r in run.results] == [7] * 3000


def test_results_made_in_bulk_equal_results_made_one_by_one() -> None:
    values = [(True, 1), (False, "no"), (True, None)]
    made = first_try_results(values, 7, "3:", "Echo", 0.25)
    expected = [
        task_result(not ok, content, None, "3:", "Echo", 1, 0.25, index)
        for index, (ok, content) in enumerate(values, 7)
    ]
    assert made == expected
    assert [r.task_id for r in made] == ["3:7", "3:8", "3:9"]
    assert [(r.error, r.success, r.exception, r.attempts) for r in made] == [
        (False, True, None, 1),
        (True, False, None, 1),
        (False, True, None, 1),
    ]
    assert pickle.loads(pickle.dumps(made)) == made
    assert repr(made[1]) == repr(expected[1])


def test_a_result_id_from_a_prefix_and_an_index_of_either_kind() -> None:
    lazy = task_result(False, 1, None, "4:", "E", 1, 0.0, 12)
    part = task_result(False, 1, None, "4:", "E", 1, 0.0, "Step:0")
    around = task_result(False, 1, None, ("4:", ":Step:0"), "E", 1, 0.0, 12)
    plain = EventResult(False, 1, None, "4:12", "E", 1, 0.0)
    assert lazy.task_id == "4:12" and part.task_id == "4:Step:0"
    assert around.task_id == "4:12:Step:0"
    assert lazy == plain
