"""Events and helpers of the fault-injection suite.

Everything a worker process may need lives here, at module level: process pools use the
``spawn`` start method, so a worker unpickles an event class by importing this module by
name. pytest puts this directory on ``sys.path`` (``prepend`` import mode, no
``__init__.py``) and a spawned child starts with its parent's ``sys.path``, so the workers
import it as ``fault_events`` too.

Each event comes in three variants, one per executor kind (:data:`KINDS`), made by
:func:`variants` and bound to a module-level name so that they pickle by reference.
The faults themselves are driven by arguments: ``Fault.process(action, i, log)`` does
what ``action`` says, so one ``map`` mixes innocent tasks with the faulty ones.

State that must survive a process boundary (how many times a task ran, whether it failed
once already, a gate that holds tasks back) lives in files under a test's ``tmp_path``;
for in-process executors a :class:`threading.Event` gate is used instead.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from event_pipeline import DefaultExecutor, EventBase

#: The executor kinds every applicable case runs against.
KINDS = ("default", "thread", "process")

EXECUTORS: dict[str, type[Executor]] = {
    "default": DefaultExecutor,
    "thread": ThreadPoolExecutor,
    "process": ProcessPoolExecutor,
}

#: Pools in this suite have two workers: more tasks than workers, on a 2-core machine.
WORKERS = 2

#: Upper bound of any wait inside a task, so a missed release never hangs a worker.
GATE_TIMEOUT = 30.0


def variants(base: type[EventBase], **attributes: Any) -> dict[str, type[EventBase]]:
    """Make one module-level subclass of ``base`` per executor kind.

    The subclass for kind ``k`` is named ``{base.__name__}On{K}`` (``FaultOnThread``) and
    bound to that name in this module, so process pools can pickle it by reference.
    ``attributes`` are extra class attributes (a retry policy, ``stop_on_exception``).
    """
    made: dict[str, type[EventBase]] = {}
    for kind, executor in EXECUTORS.items():
        name = f"{base.__name__}On{kind.title()}"
        namespace: dict[str, Any] = {
            "__module__": __name__,
            "__qualname__": name,
            "__doc__": base.__doc__,
            "executor": executor,
            **attributes,
        }
        if kind != "default":
            namespace["executor_config"] = {"max_workers": WORKERS}
        cls = type(name, (base,), namespace)
        globals()[name] = cls
        made[kind] = cls
    return made


def in_worker_process() -> bool:
    """Whether this code runs in a child process (a pool worker), not in the test process."""
    return multiprocessing.parent_process() is not None


# -- exceptions a worker may raise -----------------------------------------------------------
class Retryable(Exception):
    """Raised by a task that a retry policy retries."""


class Fatal(Exception):
    """Raised by a task that no retry policy here retries."""


class LockedError(Exception):
    """An exception holding a lock as an attribute: it cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgumentError(Exception):
    """An exception whose ``__init__`` needs two arguments: it pickles, but cannot be loaded."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"code {code}: {reason}")
        self.code = code
        self.reason = reason


class Unloadable:
    """An argument that pickles in the parent and fails to unpickle in the worker."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt with one argument where two are needed: a TypeError when loaded.
        return (Unloadable, (self.code,))


# -- bookkeeping that works in threads and across processes --------------------------------
_memory_lock = threading.Lock()
_memory_calls: Counter[tuple[str, int]] = Counter()
_memory_markers: set[tuple[str, int]] = set()
_gates: dict[str, threading.Event] = {}


def record_call(log: str | None, i: int) -> int:
    """Count one call of ``process`` for task ``i`` in ``log``; returns the calls so far.

    ``log`` is a directory (any executor, one file per call) or ``"mem:<key>"`` (in-process
    executors only, faster). ``None`` records nothing.
    """
    if log is None:
        return 0
    if log.startswith("mem:"):
        with _memory_lock:
            _memory_calls[log, i] += 1
            calls = _memory_calls[log, i]
        started(log).set()
        return calls
    directory = Path(log)
    calls = 1
    while True:
        try:
            fd = os.open(directory / f"call-{i}-{calls}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            calls += 1
            continue
        os.close(fd)
        return calls


def call_counts(log: str) -> Counter[int]:
    """Calls recorded in ``log``, per task."""
    if log.startswith("mem:"):
        with _memory_lock:
            return Counter({j: n for (key, j), n in _memory_calls.items() if key == log})
    return Counter(
        int(p.name.split("-")[1]) for p in Path(log).iterdir() if p.name.startswith("call-")
    )


def calls_of(log: str, i: int | None = None) -> int:
    """Calls recorded in ``log`` for task ``i``, or for every task when ``i`` is None."""
    counts = call_counts(log)
    return sum(counts.values()) if i is None else counts[i]


def first_time(log: str, i: int) -> bool:
    """True for the first caller for task ``i`` in ``log`` only, atomically."""
    if log.startswith("mem:"):
        with _memory_lock:
            if (log, i) in _memory_markers:
                return False
            _memory_markers.add((log, i))
            return True
    try:
        fd = os.open(Path(log) / f"marker-{i}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def gate(name: str) -> threading.Event:
    """The in-process gate called ``name`` (created on first use)."""
    with _memory_lock:
        return _gates.setdefault(name, threading.Event())


def started(log: str) -> threading.Event:
    """Set once any task has called ``process`` with the in-process ``log``."""
    return gate(f"{log}:started")


def wait_at_gate(log: str, timeout: float = GATE_TIMEOUT) -> None:
    """Block until the test opens the gate of ``log``; TimeoutError after ``timeout`` s.

    In-process logs use a :class:`threading.Event`, waited for in short slices so that a
    ``SIGINT`` aimed at a thread waiting here is acted on at once (a signal that lands just
    before a blocking wait starts is otherwise only handled when the wait ends).
    Directories use a file called ``open``, polled, since a worker process shares nothing
    else with the test.
    """
    deadline = time.monotonic() + timeout
    if log.startswith("mem:"):
        event = gate(log)
        while not event.wait(0.05):
            if time.monotonic() > deadline:
                raise TimeoutError(f"gate {log} was never opened")
        return
    flag = Path(log) / "open"
    while not flag.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {log} was never opened")
        time.sleep(0.005)


def open_gate(log: str) -> None:
    """Release every task waiting at the gate of ``log``."""
    if log.startswith("mem:"):
        gate(log).set()
    else:
        (Path(log) / "open").touch()


def reset_memory() -> None:
    """Forget in-process calls, markers and gates (between tests)."""
    with _memory_lock:
        _memory_calls.clear()
        _memory_markers.clear()
        _gates.clear()


def _die(how: str) -> None:
    if not in_worker_process():
        # A safety net: never let a mistake in a test kill the test process itself.
        raise RuntimeError(f"refusing to {how} the test process")
    if how == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(GATE_TIMEOUT)  # pragma: no cover - the signal lands first


# -- the events --------------------------------------------------------------------------------
class Fault(EventBase):
    """Does what its ``action`` argument says; returns ``(True, i)`` when nothing goes wrong.

    Actions:

    * ``ok``; ``false`` returns ``(False, i)``; ``bad_shape`` returns ``i``; ``sleep``
      works for 20 ms;
    * ``raise`` raises :class:`Fatal`; ``retry_once`` raises :class:`Retryable` at the
      task's first call only; ``lock_error`` / ``two_arg_error`` raise exceptions that do
      not survive pickling; ``lock_result`` returns a lock;
    * ``exit`` / ``sigkill``: the worker process dies; ``exit_once``: only at the task's
      first call; ``keyboard_interrupt``, ``system_exit``;
    * ``block`` / ``block:<seconds>`` wait at the gate of ``log``; ``pid_block`` first
      writes its worker's pid to ``<log>/pid-<i>``;
    * ``shutdown:<name>`` shuts down the executor registered as ``name`` with
      :func:`register_executor`.
    """

    def process(self, action: str, i: int, log: str | None = None) -> tuple[bool, Any]:
        record_call(log, i)
        if action == "ok":
            return True, i
        if action == "false":
            return False, i
        if action == "bad_shape":
            return i  # type: ignore[return-value]
        if action == "raise":
            raise Fatal(f"task {i} failed")
        if action == "retry_once":
            assert log is not None
            if first_time(log, i):
                raise Retryable(f"task {i} fails once")
            return True, i
        if action == "lock_error":
            raise LockedError(f"task {i} holds a lock")
        if action == "two_arg_error":
            raise TwoArgumentError(i, "needs two arguments")
        if action == "lock_result":
            return True, threading.Lock()
        if action in ("exit", "sigkill"):
            _die(action)
        if action == "exit_once":
            assert log is not None
            if first_time(log, i):
                _die("exit")
            return True, i
        if action == "pid_block":
            assert log is not None
            (Path(log) / f"pid-{i}").write_text(str(os.getpid()))
            wait_at_gate(log)
            return True, i
        if action == "sleep":
            time.sleep(0.02)
            return True, i
        if action == "keyboard_interrupt":
            raise KeyboardInterrupt(f"task {i}")
        if action == "system_exit":
            raise SystemExit(f"task {i}")
        if action == "block" or action.startswith("block:"):
            assert log is not None
            timeout = float(action.partition(":")[2] or GATE_TIMEOUT)
            wait_at_gate(log, timeout)
            return True, i
        if action.startswith("shutdown:"):
            _executors[action.partition(":")[2]].shutdown(wait=False)
            return True, i
        raise AssertionError(f"unknown action {action!r}")


FAULT = variants(Fault)


class Carry(EventBase):
    """Takes any ``payload`` (it may not pickle) and returns ``(True, i)``."""

    def process(self, i: int, payload: object, log: str | None = None) -> tuple[bool, Any]:
        record_call(log, i)
        return True, i


CARRY = variants(Carry)

#: Retries Retryable only, with no wait: BrokenProcessPool and Fatal end a task at once.
RETRY_RETRYABLE = {"max_attempts": 3, "backoff_factor": 0.0, "retry_on_exceptions": [Retryable]}
#: Retries anything, BrokenProcessPool included.
RETRY_ANYTHING = {"max_attempts": 3, "backoff_factor": 0.0}


class Retrying(Fault):
    """:class:`Fault` with a policy that retries :class:`Retryable` only."""


RETRYING = variants(Retrying, retry_policy=RETRY_RETRYABLE)


class RetryingAnything(Fault):
    """:class:`Fault` with a policy that retries every exception, a broken pool's too."""


RETRYING_ANYTHING = variants(RetryingAnything, retry_policy=RETRY_ANYTHING)


class Stopping(Fault):
    """:class:`Fault` with ``stop_on_exception=True``."""


STOPPING = variants(Stopping, stop_on_exception=True)


class OnUserExecutor(Fault):
    """:class:`Fault` whose ``executor`` a test sets to an executor instance of its own."""


_executors: dict[str, Executor] = {}


def register_executor(name: str, executor: Executor | None) -> None:
    """Make ``executor`` reachable from tasks (``shutdown:<name>``), or forget it (None)."""
    if executor is None:
        _executors.pop(name, None)
    else:
        _executors[name] = executor


# -- case 10: several events, several configurations, shared by threads ---------------------
_seen_lock = threading.Lock()
#: Event name -> thread idents that ran it.
seen_threads: dict[str, set[int]] = {}


def _seen(name: str) -> None:
    with _seen_lock:
        seen_threads.setdefault(name, set()).add(threading.get_ident())


class SquareA(EventBase):
    """Squares its input on a two-thread pool (the same configuration as SquareB)."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2, "thread_name_prefix": "fault-shared"}

    def process(self, x: int) -> tuple[bool, Any]:
        _seen("SquareA")
        return True, x * x


class NegateB(EventBase):
    """Negates its input, on the same pool configuration as SquareA."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2, "thread_name_prefix": "fault-shared"}

    def process(self, x: int) -> tuple[bool, Any]:
        _seen("NegateB")
        return True, -x


class DoubleC(EventBase):
    """Doubles its input on a three-thread pool: a configuration of its own."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 3, "thread_name_prefix": "fault-own"}
    retry_policy = RETRY_RETRYABLE

    def process(self, x: int) -> tuple[bool, Any]:
        _seen("DoubleC")
        return True, 2 * x


class PidD(EventBase):
    """Returns ``(x, pid)`` from a two-process pool."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, x: int) -> tuple[bool, Any]:
        return True, (x, os.getpid())


class WhereAmI(EventBase):
    """Returns where a worker found this module, and the process it runs in."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": 1}

    def process(self) -> tuple[bool, Any]:
        return True, (__file__, os.getpid(), in_worker_process())


class InlineE(EventBase):
    """Adds one, inline in the calling thread (DefaultExecutor)."""

    def process(self, x: int) -> tuple[bool, Any]:
        _seen("InlineE")
        return True, x + 1
