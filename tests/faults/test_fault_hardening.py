"""Issue 9: the sixteen situations that broke the runner, each as a user meets it.

Events live in ``hardening_events`` (process pools import them by name). Every wait is
bounded: a call that could hang runs in a :class:`Call` joined with a timeout, a child
process is killed when it overstays, so a regression fails fast and says where.
"""

from __future__ import annotations

import gc
import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat
from pathlib import Path
from typing import Any

import hardening_events as he
import pytest
from fault_helpers import Call, check_success, wait_until

from event_pipeline import EventBase, Runner, StopProcessingError

pytestmark = pytest.mark.timeout(90)

#: The longest any call of this module may take before it counts as a hang.
PATIENCE = 60.0


@pytest.fixture(autouse=True)
def _forget_state() -> Iterator[None]:
    he.reset()
    yield
    he.reset()


def _calls(log: Path, i: int) -> int:
    return sum(1 for p in log.iterdir() if p.name.startswith(f"call-{i}-"))


# -- 1-2 ---------------------------------------------------------------------------------------
def test_worker_death_in_one_of_two_threads_sharing_a_runner(
    runner: Runner, tmp_path: Path
) -> None:
    """Two threads map on one runner's process pool and one input kills its worker: both
    calls return, only the culprit is charged, and shutdown() raises nothing."""
    a_log, b_log, gate = tmp_path / "a", tmp_path / "b", tmp_path / "gate"
    for directory in (a_log, b_log, gate):
        directory.mkdir()
    count = 8
    a_actions = ["die"] + ["ok"] * (count - 1)
    b_actions = ["hold"] + ["ok"] * (count - 1)

    def call(actions: list[str], log: Path) -> Call:
        return Call(
            runner.map,
            he.SharedPoolTask,
            actions,
            range(count),
            repeat(str(log)),
            repeat(str(gate)),
        )

    call_a = call(a_actions, a_log)
    call_b = call(b_actions, b_log)
    # The culprit and the other call's held task occupy both workers at once, so work of
    # both calls is in the pool when it breaks.
    wait_until(lambda: _calls(a_log, 0) > 0 and _calls(b_log, 0) > 0, PATIENCE)
    (gate / "open").touch()

    run_a = call_a.result(PATIENCE)
    run_b = call_b.result(PATIENCE)

    culprit = run_a.results[0]
    assert culprit.error and isinstance(culprit.exception, BrokenProcessPool), culprit
    assert culprit.attempts >= 1
    for i, result in enumerate(run_a.results[1:], start=1):
        check_success(result, i)
    for i, result in enumerate(run_b.results):
        check_success(result, i)
    runner.shutdown()


# -- 3 -----------------------------------------------------------------------------------------
def test_stream_created_on_main_thread_consumed_in_another(runner: Runner) -> None:
    """An imap stream made on the main thread and read in a worker thread yields every result."""
    stream = runner.imap(he.Square, range(20))

    results = Call(list, stream).result(PATIENCE)

    assert [r.content for r in results] == [x * x for x in range(20)]
    assert all(r.success and r.attempts == 1 for r in results)


# -- 4 -----------------------------------------------------------------------------------------
def test_ctrl_c_inside_submit_cancels_that_work_item(runner: Runner) -> None:
    """Ctrl-C landing inside a thread pool's submit() ends the call, and the work item that
    submit queued is cancelled, never run after the call ended."""
    assert threading.current_thread() is threading.main_thread()
    key = "ctrl-c"
    he.InterruptingPool.submitted = []
    try:
        with pytest.raises(KeyboardInterrupt):
            # Task 0 holds the only worker; the submit of task 1 is interrupted.
            runner.map(he.InterruptedTask, [0, 1], repeat(key))
        first, interrupted = he.InterruptingPool.submitted
        assert interrupted.cancelled(), interrupted
    finally:
        he.signal_of(f"{key}:release").set()
    first.result(timeout=PATIENCE)
    runner.shutdown()
    assert he.recorded(key) == [0]


# -- 5 -----------------------------------------------------------------------------------------
HOSTILE = ["lying_tuple", "claims_tuple", "bad_repr", "bad_repr_first"]


@pytest.mark.parametrize(
    "event", [he.HostileOnThread, he.HostileOnProcess], ids=["thread", "process"]
)
def test_hostile_return_values_fail_only_their_task(runner: Runner, event: type[EventBase]) -> None:
    """A lying tuple subclass, a fake tuple and a shape whose repr raises each fail their own
    task with a TypeError naming the event; the tasks between them keep their results."""
    actions = [a for hostile in HOSTILE for a in ("ok", hostile)] + ["ok"]

    run = Call(runner.map, event, actions, range(len(actions))).result(PATIENCE)

    assert len(run.results) == len(actions)
    for i, (action, result) in enumerate(zip(actions, run.results, strict=True)):
        if action == "ok":
            check_success(result, i)
        else:
            assert result.error and isinstance(result.exception, TypeError), (action, result)
            assert event.__name__ in str(result.exception), (action, result.exception)
            assert result.attempts == 1


# -- 6 -----------------------------------------------------------------------------------------
def test_unpicklable_exception_with_raising_str_fails_only_its_task(runner: Runner) -> None:
    """On a process pool, an exception that cannot be pickled and whose __str__ raises fails
    its own task only."""
    actions = ["ok", "raise", "ok", "ok", "ok"]

    run = Call(runner.map, he.RaisesSilentOnProcess, actions, range(5)).result(PATIENCE)

    for i, result in enumerate(run.results):
        if i == 1:
            assert result.error and isinstance(result.exception, Exception), result
            assert "SilentLockedError" in str(result.exception)
        else:
            check_success(result, i)


@pytest.mark.parametrize(
    "event", [he.StopsSilentOnThread, he.StopsSilentOnProcess], ids=["thread", "process"]
)
def test_stop_on_exception_with_raising_str_raises_stop_error(
    runner: Runner, event: type[EventBase]
) -> None:
    """With stop_on_exception, an exception whose __str__ raises stops the call with
    StopProcessingError naming its type, not with the error __str__ raised."""
    with pytest.raises(StopProcessingError) as caught:
        Call(runner.map, event, ["ok", "raise", "ok"], range(3)).result(PATIENCE)
    assert "SilentLockedError" in str(caught.value)
    assert event.__name__ in str(caught.value)


# -- 7 -----------------------------------------------------------------------------------------
def test_unpicklable_system_exit_propagates_and_is_not_retried(
    runner: Runner, tmp_path: Path
) -> None:
    """A SystemExit holding a lock, raised in a process worker, ends the call as SystemExit
    and is never retried, though the event's policy retries anything."""
    actions = ["ok", "ok", "exit", "ok"]

    with pytest.raises(SystemExit) as caught:
        Call(runner.map, he.ExitsHoldingLock, actions, range(4), repeat(str(tmp_path))).result(
            PATIENCE
        )

    assert "LockedExit" in str(caught.value) and "task 2 exits" in str(caught.value)
    assert _calls(tmp_path, 2) == 1


# -- 8 -----------------------------------------------------------------------------------------
def _tenant_process(self: EventBase, x: int) -> tuple[bool, Any]:
    return True, x


def test_per_call_event_classes_are_freed(runner: Runner) -> None:
    """10,000 event classes made per call and run on one runner are freed once dropped."""
    refs = []
    for i in range(10_000):
        tenant = type(f"Tenant{i}", (EventBase,), {"process": _tenant_process})
        assert runner.run(tenant, i).results[0].content == i
        refs.append(weakref.ref(tenant))
    del tenant
    gc.collect()

    alive = [ref() for ref in refs if ref() is not None]
    assert not alive, f"{len(alive)} event classes still alive, e.g. {alive[:3]}"
    assert len(runner._plans) < 10


# -- 9 -----------------------------------------------------------------------------------------
def _in_backoff_sleep(call: Call) -> bool:
    frame = sys._current_frames().get(call.thread.ident or -1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "sleep" and code.co_filename.endswith("_coordinator.py"):
            return True
        frame = frame.f_back
    return False


def test_shutdown_wakes_a_call_waiting_out_a_backoff(runner: Runner) -> None:
    """shutdown() from another thread wakes a call sleeping a 60 s backoff: it raises
    "this Runner has been shut down" at once."""
    key = "backoff"
    call = Call(runner.map, he.FailsWithLongBackoff, [key])
    assert he.signal_of(f"{key}:attempted").wait(PATIENCE)
    wait_until(lambda: _in_backoff_sleep(call), PATIENCE)

    began = time.monotonic()
    runner.shutdown()
    with pytest.raises(RuntimeError, match="this Runner has been shut down"):
        call.result(PATIENCE)
    # Nominally ~0.1 s; the margin absorbs a loaded machine, a 60 s sleep cannot hide in it.
    assert time.monotonic() - began < 2.0


# -- 10 ----------------------------------------------------------------------------------------
def test_shutdown_from_inside_a_task_on_its_own_pool(runner: Runner) -> None:
    """shutdown() called by a task on one of the runner's thread pools returns, shuts down
    (and waits for) every other pool, and stops its own without waiting on itself."""
    key = "inside"
    he.runners[key] = runner
    # Its own pool is built first, so a failure on it would spare the other pool.
    assert runner.map(he.OnOwnPool, ["noop"], [key]).success
    assert runner.map(he.OnOtherPool, range(4)).success

    try:
        outcome: Any = Call(runner.map, he.OnOwnPool, ["shutdown"], [key]).result(PATIENCE)
    except RuntimeError as exc:  # the call noticed the shutdown: also a correct ending
        assert "shut down" in str(exc)
    else:
        assert outcome.results[0].content == "shutdown"

    assert he.recorded(key) == [("returned", None), ("other threads", [])]
    with pytest.raises(RuntimeError, match="shut down"):
        runner.map(he.OnOtherPool, range(2))


# -- 11 ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_forked_child_runs_a_thread_pool_event_again() -> None:
    """After the default runner ran a thread-pool event, a forked child runs it again."""
    assert he.Triple.map([1, 2, 3]).success
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            run = he.Triple.map([1, 2, 3])
            message = repr([r.content for r in run.results])
            code = 0
        except BaseException:
            message = traceback.format_exc()
        finally:
            try:
                os.write(write_end, message.encode())
            finally:
                os._exit(code)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], PATIENCE)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the forked child hangs: no answer after {PATIENCE}s")
        chunks = []
        while chunk := os.read(read_end, 65536):
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    output = b"".join(chunks).decode()
    assert os.waitstatus_to_exitcode(status) == 0, output
    assert output == "[3, 6, 9]"


# -- 12 ----------------------------------------------------------------------------------------
#: A nested call takes milliseconds; a deadlock shows well within this.
NESTED_PATIENCE = 3.0


# A fresh pool is the hard case: it records a new worker thread only after starting it,
# and the thread may already be running the outer task.
@pytest.mark.parametrize("pool", ["fresh", "warm"])
def test_nested_call_on_the_same_one_worker_pool_runs_inline(runner: Runner, pool: str) -> None:
    """A task on a one-worker thread pool that maps another event with the same executor
    class and config runs it in its own worker thread instead of deadlocking."""
    key = "nested"
    he.runners[key] = runner
    if pool == "warm":
        assert runner.map(he.Inner, range(2)).success

    call = Call(runner.run, he.Outer, key)
    try:
        run = call.result(NESTED_PATIENCE)
    except AssertionError:
        # A deadlock: shutdown() cancels the nested work item, so the call fails and the
        # pool's one worker is freed before the fixture looks for leftovers.
        runner.shutdown()
        call.thread.join(PATIENCE)
        raise

    [result] = run.results
    assert result.success, result
    outer_thread, inner = result.content
    assert [x for x, _ in inner] == [0, 1, 2]
    assert {thread for _, thread in inner} == {outer_thread}


# -- 13 ----------------------------------------------------------------------------------------
#: Starting a task on an idle thread pool takes microseconds.
START_PATIENCE = 3.0


@pytest.mark.parametrize("call", ["map", "imap"])
def test_input_that_grows_as_work_starts(runner: Runner, call: str) -> None:
    """An input that yields its next item only once the previous task started completes."""
    key = f"crawl-{call}"
    # A long-lived runner has measured the event already, so batching is on.
    assert runner.map(he.MarksStarted, range(200), repeat("warm-up")).success

    def crawl() -> Iterator[int]:
        for i in range(5):
            yield i
            if not he.signal_of(f"{key}:started-{i}").wait(START_PATIENCE):
                raise AssertionError(f"task {i} never started: item {i + 1} cannot be read")

    def run_it() -> list[Any]:
        if call == "map":
            return [r.content for r in runner.map(he.MarksStarted, crawl(), repeat(key)).results]
        return [r.content for r in runner.imap(he.MarksStarted, crawl(), repeat(key))]

    assert Call(run_it).result(PATIENCE) == [0, 1, 2, 3, 4]


# -- 14 ----------------------------------------------------------------------------------------
def test_class_method_passes_cls_keyword_to_process() -> None:
    """MyEvent.run(cls=1) hands cls (and event) to process, like runner.run does."""
    assert he.TakesCls.run(cls=1, event="e").results[0].content == (1, "e")
    with Runner() as runner:
        assert runner.run(he.TakesCls, cls=2, event="f").results[0].content == (2, "f")


# -- 15 ----------------------------------------------------------------------------------------
INTERACTIVE = textwrap.dedent(
    """
    from concurrent.futures import ProcessPoolExecutor
    from event_pipeline import EventBase, ImproperlyConfigured

    class Interactive(EventBase):
        executor = ProcessPoolExecutor
        executor_config = {"max_workers": 1}

        def process(self, x):
            return True, x

    try:
        Interactive.run(1)
    except ImproperlyConfigured as exc:
        print("ImproperlyConfigured:", exc)
    else:
        print("no error")
    """
)


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_event_in_unimportable_main_is_refused(how: str, tmp_path: Path) -> None:
    """An event defined in the __main__ of python -c or stdin, on a process pool, raises
    ImproperlyConfigured saying to move it into a module."""
    command = [sys.executable, "-c", INTERACTIVE] if how == "-c" else [sys.executable, "-"]
    stdin = INTERACTIVE if how == "stdin" else None

    done = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=PATIENCE, cwd=tmp_path
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ImproperlyConfigured: Interactive"), done.stdout + done.stderr
    assert "move the event into a module" in done.stdout


# -- 16 ----------------------------------------------------------------------------------------
UNGUARDED = textwrap.dedent(
    """
    from concurrent.futures import ProcessPoolExecutor
    from event_pipeline import EventBase

    class Unguarded(EventBase):
        executor = ProcessPoolExecutor
        executor_config = {"max_workers": 2}

        def process(self, x):
            return True, x

    print("results:", Unguarded.map(range(4)).results)
    """
)


def test_script_without_main_guard_fails_once_with_one_plain_line(tmp_path: Path) -> None:
    """A script that runs process-pool work at import time, without the main guard, fails
    with one line telling to add it, and none of the workers' bootstrapping noise."""
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)

    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=PATIENCE,
        cwd=tmp_path,
    )

    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    guard = 'if __name__ == "__main__":'
    assert sum(guard in line for line in output.splitlines()) == 1, output
    assert "bootstrapping phase" not in output, output
    assert "\\n" not in output, output
    assert output.count("Traceback (most recent call last)") <= 1, output
    assert "results: [" not in output, output

