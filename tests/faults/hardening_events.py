"""Events of the hardening tests (issue 9's sixteen situations), at module level.

Process pools use the ``spawn`` start method, so a worker unpickles these classes by
importing this module by name (pytest puts this directory on ``sys.path``). State that must
cross a process boundary lives in files under a test's ``tmp_path``; in-process state uses
:class:`threading.Event` objects keyed by name.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from event_pipeline import EventBase, Runner

#: Upper bound of any wait inside a task, so a missed release never hangs a worker.
GATE_TIMEOUT = 30.0

_lock = threading.Lock()
_events: dict[str, threading.Event] = {}
#: Runners a task may reach by name (a nested call, a shutdown from inside a task).
runners: dict[str, Runner] = {}
#: What tasks running in the test process recorded, by key.
records: dict[str, list[Any]] = {}


def signal_of(name: str) -> threading.Event:
    """The in-process event called ``name`` (created on first use)."""
    with _lock:
        return _events.setdefault(name, threading.Event())


def record(key: str, value: Any) -> None:
    with _lock:
        records.setdefault(key, []).append(value)


def recorded(key: str) -> list[Any]:
    with _lock:
        return list(records.get(key, ()))


def reset() -> None:
    """Forget signals, runners and records (between tests)."""
    with _lock:
        _events.clear()
        runners.clear()
        records.clear()


def touch(directory: str, name: str) -> None:
    (Path(directory) / name).touch()


def wait_for_file(path: Path, timeout: float = GATE_TIMEOUT) -> None:
    """Block until ``path`` exists (polled: a worker process shares nothing else)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


# -- situations 1-2: a worker dies while two calls share one pool ---------------------------
class SharedPoolTask(EventBase):
    """``ok`` returns ``(True, i)``; ``hold`` waits for ``<gate>/open`` first; ``die`` waits
    for it and then kills its worker process. Each call leaves a ``call-<i>-...`` file in
    ``log``."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, action: str, i: int, log: str, gate: str) -> tuple[bool, Any]:
        Path(log, f"call-{i}-{os.getpid()}-{time.monotonic_ns()}").touch()
        if action in ("hold", "die"):
            wait_for_file(Path(gate, "open"))
        if action == "die":
            os._exit(3)
        return True, i


# -- situation 3: a stream consumed in another thread ---------------------------------------
class Square(EventBase):
    """Squares its input on a two-thread pool."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, x: int) -> tuple[bool, Any]:
        return True, x * x


# -- situation 4: Ctrl-C inside a pool's submit() -------------------------------------------
class InterruptingPool(ThreadPoolExecutor):
    """A thread pool whose second ``submit`` is hit by Ctrl-C just after queuing its work.

    Every future it returns is kept in :data:`submitted`, so a test can see what became of
    the work item whose ``submit`` was interrupted.
    """

    submitted: list[Future[Any]] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        import signal

        future = super().submit(fn, *args, **kwargs)
        InterruptingPool.submitted.append(future)
        if len(InterruptingPool.submitted) == 2:
            signal.raise_signal(signal.SIGINT)
        return future


class InterruptedTask(EventBase):
    """Records its input in ``records[key]``; input 0 holds the only worker until released."""

    executor = InterruptingPool
    executor_config = {"max_workers": 1}

    def process(self, i: int, key: str) -> tuple[bool, Any]:
        record(key, i)
        if i == 0:
            signal_of(f"{key}:started").set()
            if not signal_of(f"{key}:release").wait(GATE_TIMEOUT):
                raise TimeoutError("never released")
        return True, i


# -- situation 5: hostile values returned by process ----------------------------------------
class LyingTuple(tuple):  # type: ignore[type-arg]
    """A 3-tuple that claims to be a 2-tuple and whose item access and iteration raise."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: Any) -> Any:
        raise RuntimeError("__getitem__ of a lying tuple")

    def __iter__(self) -> Any:
        raise RuntimeError("__iter__ of a lying tuple")


class ClaimsTuple:
    """Not iterable, but its ``__class__`` says ``tuple``."""

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return tuple

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> Any:
        raise RuntimeError("__getitem__ of an impostor")


class BadRepr:
    """A value whose ``repr`` raises."""

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ failed")


def hostile(action: str, i: int) -> Any:
    if action == "lying_tuple":
        return LyingTuple((True, i, "extra"))
    if action == "claims_tuple":
        return ClaimsTuple()
    if action == "bad_repr":
        return BadRepr()
    if action == "bad_repr_first":
        return (BadRepr(), i)
    return True, i


class HostileOnThread(EventBase):
    """Returns what ``action`` names (see :func:`hostile`), on a thread pool."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, action: str, i: int) -> tuple[bool, Any]:
        return hostile(action, i)  # type: ignore[no-any-return]


class HostileOnProcess(HostileOnThread):
    """Returns what ``action`` names (see :func:`hostile`), on a process pool."""

    executor = ProcessPoolExecutor


# -- situation 6: an exception that neither pickles nor describes itself --------------------
class SilentLockedError(Exception):
    """Holds a lock (so it cannot be pickled), and its ``__str__`` raises."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.lock = threading.Lock()

    def __str__(self) -> str:
        raise RuntimeError("__str__ of SilentLockedError failed")


class RaisesSilentOnThread(EventBase):
    """Raises :class:`SilentLockedError` for ``raise``, else returns ``(True, i)``."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, action: str, i: int) -> tuple[bool, Any]:
        if action == "raise":
            raise SilentLockedError(i)
        return True, i


class RaisesSilentOnProcess(RaisesSilentOnThread):
    """:class:`RaisesSilentOnThread` on a process pool."""

    executor = ProcessPoolExecutor


class StopsSilentOnThread(RaisesSilentOnThread):
    """:class:`RaisesSilentOnThread` with ``stop_on_exception=True``."""

    stop_on_exception = True


class StopsSilentOnProcess(RaisesSilentOnProcess):
    """:class:`RaisesSilentOnProcess` with ``stop_on_exception=True``."""

    stop_on_exception = True


# -- situation 7: a BaseException that does not pickle --------------------------------------
class LockedExit(SystemExit):
    """A ``SystemExit`` holding a lock: it cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class ExitsHoldingLock(EventBase):
    """Raises :class:`LockedExit` for ``exit``; every call is recorded in ``log``.

    Its policy retries anything, so a retried ``SystemExit`` would show as a second call.
    """

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": 2}
    retry_policy = {"max_attempts": 3, "backoff_factor": 0.0}

    def process(self, action: str, i: int, log: str) -> tuple[bool, Any]:
        Path(log, f"call-{i}-{time.monotonic_ns()}").touch()
        if action == "exit":
            raise LockedExit(f"task {i} exits")
        return True, i


# -- situation 9: shutdown() while a call waits out a backoff -------------------------------
class FailsWithLongBackoff(EventBase):
    """Always raises ``ConnectionError``; the retry waits a minute."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 1}
    retry_policy = {"max_attempts": 2, "backoff_factor": 60.0, "max_backoff": 60.0}

    def process(self, key: str) -> tuple[bool, Any]:
        signal_of(f"{key}:attempted").set()
        raise ConnectionError("the service is down")


# -- situation 10: shutdown() from inside a task --------------------------------------------
OTHER_PREFIX = "hardening-other"


class OnOwnPool(EventBase):
    """``noop`` returns; ``shutdown`` shuts down ``runners[key]`` from inside the task and
    records what it raised and which threads of the other pool were still alive."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2, "thread_name_prefix": "hardening-own"}

    def process(self, action: str, key: str) -> tuple[bool, Any]:
        if action == "shutdown":
            try:
                runners[key].shutdown()
            except BaseException as exc:  # handed to the test
                record(key, ("raised", exc))
            else:
                record(key, ("returned", None))
            alive = [t.name for t in threading.enumerate() if t.name.startswith(OTHER_PREFIX)]
            record(key, ("other threads", alive))
        return True, action


class OnOtherPool(EventBase):
    """Returns its input, on a second thread pool of the same runner."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2, "thread_name_prefix": OTHER_PREFIX}

    def process(self, x: int) -> tuple[bool, Any]:
        return True, x


# -- situation 11: a forked child --------------------------------------------------------------
class Triple(EventBase):
    """Triples its input on a two-thread pool."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, x: int) -> tuple[bool, Any]:
        return True, 3 * x


# -- situation 12: a nested call on the same one-worker pool ---------------------------------
NESTED_CONFIG = {"max_workers": 1, "thread_name_prefix": "hardening-nested"}


class Inner(EventBase):
    """Returns its input and the thread that ran it."""

    executor = ThreadPoolExecutor
    executor_config = NESTED_CONFIG

    def process(self, x: int) -> tuple[bool, Any]:
        return True, (x, threading.get_ident())


class Outer(EventBase):
    """Maps :class:`Inner` on ``runners[key]`` from inside its one-worker pool."""

    executor = ThreadPoolExecutor
    executor_config = NESTED_CONFIG

    def process(self, key: str) -> tuple[bool, Any]:
        run = runners[key].map(Inner, range(3))
        return True, (threading.get_ident(), [r.content for r in run.results])


# -- situation 13: inputs that come only once work has started ------------------------------
class MarksStarted(EventBase):
    """Sets the signal ``<key>:started-<i>`` and returns ``i``."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, i: int, key: str) -> tuple[bool, Any]:
        signal_of(f"{key}:started-{i}").set()
        return True, i


# -- situation 14: a keyword named like the class method's own parameter ---------------------
class TakesCls(EventBase):
    """Returns its keyword arguments ``cls`` and ``event``."""

    def process(self, cls: int, event: str = "") -> tuple[bool, Any]:
        return True, (cls, event)
