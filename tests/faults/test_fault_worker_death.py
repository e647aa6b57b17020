"""Case 3: a worker process dies mid-task (``os._exit``, ``SIGKILL``) in a pool of two.

The standard library fails every task that was in a broken pool. The runner must not pass
that on: the tasks become suspects, re-run one at a time on a fresh pool; the one whose own
run breaks that pool too is the culprit, charged one attempt that raised
``BrokenProcessPool`` (retried only if its policy says so); the others are charged nothing.
Process pools only: in-process executors have no worker process to lose.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat
from pathlib import Path

import pytest
from fault_events import (
    FAULT,
    RETRY_ANYTHING,
    RETRYING,
    RETRYING_ANYTHING,
    OnUserExecutor,
    call_counts,
    calls_of,
    open_gate,
)
from fault_helpers import Leaks, check_results, check_success, wait_until

from event_pipeline import Runner
from event_pipeline._coordinator import MAX_BATCH

pytestmark = pytest.mark.timeout(60)

POLICIES = {
    "no retry": (FAULT["process"], 1),
    "retries Retryable only": (RETRYING["process"], 1),
    "retries anything": (RETRYING_ANYTHING["process"], 3),
}


@pytest.mark.parametrize(
    ("death", "policy"),
    [
        ("exit", "no retry"),
        ("exit", "retries Retryable only"),
        ("exit", "retries anything"),
        ("sigkill", "no retry"),
    ],
)
def test_only_the_culprit_is_charged(
    death: str, policy: str, runner: Runner, leaks: Leaks, log: str
) -> None:
    """Innocent tasks of a broken pool succeed with one attempt; the culprit fails alone."""
    event, culprit_attempts = POLICIES[policy]
    culprit = 5
    actions = ["ok"] * 12
    actions[culprit] = death

    run = runner.map(event, actions, range(len(actions)), repeat(log))

    check_results(run.results, event, len(actions))
    for i, result in enumerate(run.results):
        if i != culprit:
            check_success(result, i)
    result = run.results[culprit]
    assert result.error
    assert isinstance(result.exception, BrokenProcessPool), result
    assert result.content is result.exception
    assert result.attempts == culprit_attempts
    # Its first run broke the main pool, each halving of its group of suspects broke the
    # isolation pool again, and each charged attempt ran alone and broke it again.
    halvings = calls_of(log, culprit) - 1 - culprit_attempts
    assert 0 <= halvings <= MAX_BATCH.bit_length() - 1
    # The next run works, on a fresh pool.
    again = runner.map(event, ["ok"] * 4, range(4))
    assert again.success
    runner.shutdown()
    leaks.check()
    # Like every other error of a task, the culprit's should name the event.
    assert event.__name__ in str(result.exception), (
        f"the culprit's error does not name the event: {result.exception!r}"
    )


def test_two_culprits_in_one_run(runner: Runner, leaks: Leaks, log: str) -> None:
    """Two culprits in one run: both charged, every innocent spared, results in order."""
    event = FAULT["process"]
    actions = ["ok"] * 16
    actions[3] = "exit"
    actions[11] = "sigkill"

    run = runner.map(event, actions, range(len(actions)), repeat(log))

    check_results(run.results, event, len(actions))
    for i, result in enumerate(run.results):
        if i in (3, 11):
            assert isinstance(result.exception, BrokenProcessPool), result
            assert result.attempts == 1
        else:
            check_success(result, i)
    runner.shutdown()
    leaks.check()


def test_suspect_that_finishes_alone_is_innocent(runner: Runner, leaks: Leaks, log: str) -> None:
    """A task that broke the pool once but finishes when re-run alone is not charged for it."""
    event = FAULT["process"]
    actions = ["ok"] * 10
    actions[4] = "exit_once"

    run = runner.map(event, actions, range(len(actions)), repeat(log))

    check_results(run.results, event, len(actions))
    for i, result in enumerate(run.results):
        check_success(result, i)
    assert calls_of(log, 4) == 2
    runner.shutdown()
    leaks.check()


def test_worker_killed_from_outside(runner: Runner, leaks: Leaks, log: str) -> None:
    """A worker killed by someone else mid-task: every task re-runs and succeeds, uncharged."""
    event = FAULT["process"]
    victim = 2
    actions = ["ok"] * 10
    actions[victim] = "pid_block"
    pid_file = Path(log) / f"pid-{victim}"

    def kill_then_release() -> None:
        wait_until(pid_file.exists)
        wait_until(lambda: pid_file.read_text() != "")
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        open_gate(log)

    killer = threading.Thread(target=kill_then_release)
    killer.start()
    try:
        run = runner.map(event, actions, range(len(actions)), repeat(log))
    finally:
        open_gate(log)
        killer.join(30)
    assert not killer.is_alive()

    check_results(run.results, event, len(actions))
    for i, result in enumerate(run.results):
        check_success(result, i)
    assert calls_of(log, victim) == 2
    runner.shutdown()
    leaks.check()


@pytest.mark.parametrize("policy", [None, RETRY_ANYTHING], ids=["no retry", "retries anything"])
def test_user_pool_that_breaks(
    policy: dict[str, object] | None,
    monkeypatch: pytest.MonkeyPatch,
    runner: Runner,
    leaks: Leaks,
    log: str,
) -> None:
    """A pool of the user's own is never replaced: what it cannot run fails, nothing hangs."""
    pool = ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn"))
    monkeypatch.setattr(OnUserExecutor, "executor", pool)
    monkeypatch.setattr(OnUserExecutor, "retry_policy", policy)
    actions = ["ok"] * 12
    actions[5] = "exit"
    try:
        run = runner.map(OnUserExecutor, actions, range(len(actions)), repeat(log))
    finally:
        runner.shutdown()
        pool.shutdown(wait=True)

    check_results(run.results, OnUserExecutor, len(actions))
    assert run.results[5].error
    failed = [result for result in run.results if result.error]
    for i, result in enumerate(run.results):
        if result.success:
            check_success(result, i)
        else:
            assert isinstance(result.exception, BrokenProcessPool), result
    leaks.check()
    # Like every other error of a task, these should name the event.
    for result in failed:
        assert OnUserExecutor.__name__ in str(result.exception), (
            f"the error does not name the event: {result.exception!r}"
        )
    # Attempts are calls of process. A task that was in the pool when it broke may be
    # charged one (the runner cannot tell whether it had started); a task the broken pool
    # refused at submission never ran, and a retry of it never ran either.
    calls = call_counts(log)
    for i, result in enumerate(run.results):
        assert result.attempts <= max(calls[i], 1), (
            f"task {i}: {result.attempts} attempts charged for {calls[i]} calls of process"
        )
