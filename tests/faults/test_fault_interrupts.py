"""Case 4: ``KeyboardInterrupt`` and ``SystemExit`` end the call, whatever the executor.

Raised inside ``process`` or delivered as ``SIGINT`` to the thread waiting in ``map``,
they are never retried and propagate at once: tasks not started are cancelled, running
ones are not waited for, and a new runner works afterwards.
"""

from __future__ import annotations

import signal
import threading
import time
from itertools import repeat
from pathlib import Path

import pytest
from fault_events import FAULT, KINDS, RETRYING_ANYTHING, calls_of, open_gate
from fault_helpers import Leaks, check_success, log_for, wait_started

from event_pipeline import Runner

pytestmark = pytest.mark.timeout(60)

TASKS = 100
WINDOW = 8


def most_calls(kind: str, *, interrupter: bool = True) -> int:
    """The most calls of ``process`` a cancelled call may have made in this module.

    The interrupting task (if a task interrupts), one per worker that had a task running
    (inline: the task running in the calling thread), and for process pools the work items
    already moved to the pool's call queue (``max_workers + 1``), which the standard
    library can no longer cancel.
    """
    if kind == "default":
        return 1
    running = {"thread": 2, "process": 2 + 3}[kind]
    return running + interrupter


def check_new_runner_works(kind: str) -> None:
    with Runner() as fresh:
        run = fresh.map(FAULT[kind], ["ok"] * 5, range(5))
    assert run.success
    for i, result in enumerate(run.results):
        check_success(result, i)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("action", "error_type"),
    [("keyboard_interrupt", KeyboardInterrupt), ("system_exit", SystemExit)],
)
def test_raised_in_process_ends_the_call(
    kind: str,
    action: str,
    error_type: type[BaseException],
    leaks: Leaks,
    log: str,
    mem_log: str,
) -> None:
    """Raised by a task, it propagates unretried; the tasks not started never run."""
    log = log_for(kind, log, mem_log)
    event = RETRYING_ANYTHING[kind]
    # The first task interrupts; the others wait at a gate, so none can finish first.
    actions = [action] + ["block"] * (TASKS - 1)
    runner = Runner(window=WINDOW)
    try:
        with pytest.raises(error_type, match="task 0"):
            runner.map(event, actions, range(TASKS), repeat(log))
        # Raised while the blocked tasks still run: they were not waited for.
    finally:
        open_gate(log)
        runner.shutdown()
    assert calls_of(log, 0) == 1, "never retried"
    assert calls_of(log) <= most_calls(kind), "tasks not started were not cancelled"
    leaks.check()
    check_new_runner_works(kind)
    leaks.check()


#: Rounds of the SIGINT test: where the signal lands is a matter of timing, so the thread
#: pool (where it can land in the standard library's own code) gets several.
SIGINT_ROUNDS = {"default": 2, "thread": 10, "process": 3}
#: Blocked tasks give up after this long: a KeyboardInterrupt later than that is a failure.
SIGINT_PATIENCE = 6.0


def interrupt_map(kind: str, log: str) -> tuple[float, int]:
    """Send SIGINT to this (main) thread once a task of ``map`` has started.

    Returns:
        Seconds from the signal to the KeyboardInterrupt, and the calls of ``process``.
    """
    event = FAULT[kind]
    main = threading.main_thread()
    assert threading.current_thread() is main
    sent: list[float] = []

    def interrupt() -> None:
        wait_started(log)
        sent.append(time.monotonic())
        signal.pthread_kill(main.ident, signal.SIGINT)  # type: ignore[arg-type]

    runner = Runner(window=WINDOW)
    timer = threading.Thread(target=interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            timer.start()
            runner.map(event, [f"block:{SIGINT_PATIENCE}"] * TASKS, range(TASKS), repeat(log))
        raised = time.monotonic()
    finally:
        open_gate(log)
        timer.join(30)
        runner.shutdown()
    assert not timer.is_alive()
    return raised - sent[0], calls_of(log)


@pytest.mark.parametrize("kind", KINDS)
def test_sigint_while_map_waits(kind: str, leaks: Leaks, log: str, mem_log: str) -> None:
    """SIGINT to the thread in ``map`` raises KeyboardInterrupt there within about a second."""
    for round_ in range(SIGINT_ROUNDS[kind]):
        round_log = log_for(kind, str(Path(log) / str(round_)), f"{mem_log}:{round_}")
        Path(log, str(round_)).mkdir()
        latency, calls = interrupt_map(kind, round_log)
        assert latency < 5.0, f"round {round_}: KeyboardInterrupt took {latency:.2f}s"
        # The running tasks were let go; the cancelled call never ran the others.
        assert calls <= most_calls(kind, interrupter=False), f"round {round_}: {calls} calls"
        leaks.check(f"round {round_}: ")
    check_new_runner_works(kind)
    leaks.check()
