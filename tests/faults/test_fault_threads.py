"""Case 10: eight threads share one ``Runner`` across several events at once.

Every call gets its own results, correct and in input order, and the runner keeps one
executor per (executor class, configuration): events with the same configuration share a
pool, a different configuration gets its own.
"""

from __future__ import annotations

import os
import threading
from itertools import repeat

import pytest
from fault_events import RETRYING, DoubleC, InlineE, NegateB, PidD, SquareA, seen_threads
from fault_helpers import Leaks, check_results, check_success

from event_pipeline import EventBase, Runner

pytestmark = pytest.mark.timeout(60)

THREADS = 8
ROUNDS = 3
ITEMS = 300

EXPECTED = {
    SquareA: lambda x: x * x,
    NegateB: lambda x: -x,
    DoubleC: lambda x: 2 * x,
    InlineE: lambda x: x + 1,
}


def test_eight_threads_one_runner(leaks: Leaks, mem_log: str) -> None:
    """Concurrent calls of six events from eight threads: right results, shared pools."""
    seen_threads.clear()
    retrying = RETRYING["thread"]
    plan: list[type[EventBase]] = [SquareA, NegateB, DoubleC, InlineE, PidD, retrying]
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []
    callers: set[int] = set()
    pids: set[int] = set()
    lock = threading.Lock()

    def check_round(runner: Runner, event: type[EventBase], offset: int, log: str) -> None:
        items = range(offset, offset + ITEMS)
        if event is retrying:
            # Every task fails once and succeeds on its retry; tasks are distinct per call.
            run = runner.map(event, repeat("retry_once"), items, repeat(log))
            check_results(run.results, event, ITEMS)
            for i, result in zip(items, run.results, strict=True):
                check_success(result, i, attempts=2)
            return
        run = runner.map(event, items)
        check_results(run.results, event, ITEMS)
        assert run.success
        if event is PidD:
            assert [r.content[0] for r in run.results] == list(items)
            with lock:
                pids.update(r.content[1] for r in run.results)
            return
        expected = EXPECTED[event]
        assert [r.content for r in run.results] == [expected(x) for x in items]

    def caller(n: int, runner: Runner) -> None:
        with lock:
            callers.add(threading.get_ident())
        try:
            start.wait(timeout=30)
            for round_ in range(ROUNDS):
                event = plan[(n + round_) % len(plan)]
                offset = (n * ROUNDS + round_) * ITEMS
                check_round(runner, event, offset, f"{mem_log}:{n}:{round_}")
        except BaseException as exc:
            failures.append(exc)
            start.abort()

    with Runner() as runner:
        threads = [threading.Thread(target=caller, args=(n, runner)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(45)
        assert not any(thread.is_alive() for thread in threads), "a caller hangs"
    if failures:
        raise failures[0]
    leaks.check()

    shared = seen_threads["SquareA"] | seen_threads["NegateB"]
    assert len(shared) <= 2, "SquareA and NegateB have one configuration: one pool of two"
    assert len(seen_threads["DoubleC"]) <= 3
    assert not shared & seen_threads["DoubleC"], "another configuration needs another pool"
    assert seen_threads["InlineE"] <= callers, "DefaultExecutor runs in the calling thread"
    assert len(pids) <= 2 and os.getpid() not in pids, "one process pool of two workers"
