"""A ``concurrent.futures`` executor that runs work on a Dask distributed cluster.

Requires the optional extra: ``pip install "event-pipeline[dask]"``. Dask is imported only when an
executor first connects, so ``import event_pipeline`` (and this module) stays free of it.

How a submission travels::

    submit(fn, *args, **kwargs)
      -> cloudpickle (fn, args, kwargs) into one opaque ``bytes`` payload, here, in the caller
      -> client.submit(_apply, payload, key=<unique>, pure=False, retries=0)
      -> worker: _apply unpickles, calls fn, pickles (ok, value | exception, traceback)
      -> Dask done-callback (Dask's callback thread): decode, complete the concurrent Future

Pickling the call ourselves is what keeps Dask's conveniences out of the user's way: Dask never
sees the keyword arguments (``client.submit`` would swallow ``key``, ``priority``, ``retries``,
``workers``...), never walks the arguments looking for keys or futures to substitute, and the
scheduler never has to import the user's modules. It also turns a serialization error into a
failed future at once, in the caller, with the original exception.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ClassVar, TypeVar

__all__ = ["ADDRESS_ENV_VAR", "DaskExecutor"]

_T = TypeVar("_T")

#: Environment variable holding the scheduler address used when ``address`` is not given.
ADDRESS_ENV_VAR = "EVENT_PIPELINE_DASK_ADDRESS"

_INSTALL_HINT = (
    'DaskExecutor needs the optional dependency "distributed"; '
    'install it with: pip install "event-pipeline[dask]"'
)

# Bounds for closing the client and a local cluster: shutdown() must never hang, even if the
# scheduler is gone or a worker does not answer.
_CLOSE_TIMEOUT = 10.0

logger = logging.getLogger("event_pipeline")


def _require_distributed() -> None:
    # find_spec on a top-level name locates the package without importing it, so construction
    # stays cheap and still fails early when the extra is missing.
    if importlib.util.find_spec("distributed") is None:
        raise ImportError(_INSTALL_HINT, name="distributed")


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class _RemoteTraceback(Exception):
    """Carries a worker-side traceback as text, like ``concurrent.futures.process`` does."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


def _dump_exception(exc: BaseException) -> bytes:
    import cloudpickle  # type: ignore[import-untyped]

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data: bytes = cloudpickle.dumps((False, exc, tb))
        # An exception that pickles but cannot be rebuilt (a custom __init__ with required
        # arguments is the classic case) would fail on the client instead; find out here.
        pickle.loads(data)
    except Exception as err:
        substitute = RuntimeError(
            f"{type(exc).__qualname__}: {exc} "
            f"(the exception could not be sent back from the Dask worker: {err!r})"
        )
        data = cloudpickle.dumps((False, substitute, tb))
    return data


def _apply(payload: bytes) -> bytes:
    """Run one submission on a Dask worker; module level so workers import it by reference.

    Every outcome, exceptions included, comes back as pickled bytes, so Dask itself only ever
    reports an error when the worker could not run this function at all (it died, or this module
    is not importable there).
    """
    import cloudpickle

    try:
        fn, args, kwargs = pickle.loads(payload)
        result = fn(*args, **kwargs)
    except BaseException as exc:  # like ProcessPoolExecutor: SystemExit reaches the caller too
        return _dump_exception(exc)
    try:
        data: bytes = cloudpickle.dumps((True, result, None))
    except BaseException as exc:
        return _dump_exception(exc)
    return data


def _task_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    # Dask groups tasks by the part of the key before the first "-"; keep it one word.
    return str(name).replace("-", "_").replace("<", "").replace(">", "")


class DaskExecutor(Executor):
    """Run submissions on a Dask distributed cluster, as a ``concurrent.futures.Executor``.

    The executor connects on its first :meth:`submit`, not when it is created, so an instance can
    sit in a class attribute of a module that the workers import too. It connects to, in order:

    1. the scheduler at ``address``;
    2. the scheduler at the address in the environment variable ``EVENT_PIPELINE_DASK_ADDRESS``
       (read when the executor connects);
    3. a local cluster it starts itself: ``max_workers`` worker processes with one thread each,
       every server on 127.0.0.1 and no dashboard. :meth:`shutdown` stops it.

    Every submission runs (none is deduplicated, Dask's own retries are off) with its arguments
    exactly as given. Anything that cannot be pickled, or an exception the callable raises, ends
    in a failed future; so does a task whose worker died (Dask's ``KilledWorker``: on the local
    cluster a task is failed the first time its worker dies, elsewhere after the cluster's
    ``distributed.scheduler.allowed-failures`` deaths).

    Args:
        address: Scheduler address, such as ``"tcp://10.0.0.5:8786"``.
        max_workers: Number of worker processes of the local cluster. With a scheduler address it
            only sizes how much work callers keep in flight (``_max_workers``); by default that
            is the number of worker threads the cluster reports when the executor connects.

    Raises:
        ImportError: ``distributed`` is not installed (``pip install "event-pipeline[dask]"``).
        TypeError: ``address`` is not a string or ``max_workers`` not an integer.
        ValueError: ``max_workers`` is less than 1.
    """

    # The runner reads this: work goes to other processes, so it checks that events and
    # arguments pickle before submitting them.
    _event_pipeline_pickles: ClassVar[bool] = True

    def __init__(self, address: str | None = None, max_workers: int | None = None) -> None:
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a string or None, not {type(address).__name__}")
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(
                    f"max_workers must be an integer or None, not {type(max_workers).__name__}"
                )
            if max_workers <= 0:
                raise ValueError("max_workers must be greater than 0")
        _require_distributed()
        self._address = address
        self._requested_workers = max_workers
        #: How many tasks the cluster runs at once; corrected from the cluster when connecting.
        self._max_workers: int = max_workers or _available_cpus()
        # One lock for the connection, the shutdown flag and the pending map: connecting happens
        # once, on whichever thread submits first, and shutdown must not race a submission.
        self._lock = threading.Lock()
        self._client: Any = None
        self._cluster: Any = None
        self._shutdown = False
        self._pending: dict[Future[Any], Any] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(address={self._address!r}, "
            f"max_workers={self._requested_workers!r})"
        )

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` on the cluster and return a future for its result.

        Args:
            fn: A callable the workers can import (a module-level function or class).
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``, passed on untouched whatever their names.

        Returns:
            A ``concurrent.futures.Future``; pickling errors, exceptions raised by ``fn`` and
            dead workers are set on it as exceptions.

        Raises:
            RuntimeError: The executor was shut down.
            ImportError: ``distributed`` cannot be imported.
            OSError: The scheduler cannot be reached (a ``TimeoutError`` after Dask's
                ``distributed.comm.timeouts.connect``).
        """
        import cloudpickle

        future: Future[_T] = Future()
        try:
            payload: bytes = cloudpickle.dumps((fn, args, kwargs))
        except Exception as exc:
            with self._lock:
                if self._shutdown:
                    raise RuntimeError("cannot schedule new futures after shutdown") from None
            future.set_exception(exc)
            return future
        # The key names the callable for Dask's dashboard; the uuid makes every submission a
        # distinct task, where Dask's default (pure=True) would run identical calls only once.
        key = f"{_task_name(fn)}-{uuid.uuid4().hex}"
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            client = self._connect()
            dask_future = client.submit(_apply, payload, key=key, pure=False, retries=0)
            self._pending[future] = dask_future
        future.add_done_callback(self._on_cancelled)
        dask_future.add_done_callback(lambda dask_future: self._on_dask_done(future, dask_future))
        return future

    def _connect(self) -> Any:
        """Return the client, connecting first if needed; the caller holds ``self._lock``."""
        if self._client is not None:
            return self._client
        try:
            import distributed
        except ImportError as exc:
            raise ImportError(_INSTALL_HINT, name="distributed") from exc
        address = self._address or os.environ.get(ADDRESS_ENV_VAR) or None
        if address is not None:
            client = distributed.Client(address, set_as_default=False)
            if self._requested_workers is None:
                threads = sum(client.nthreads().values())
                if threads > 0:
                    self._max_workers = threads
            self._client = client
            return client
        cluster = distributed.LocalCluster(
            n_workers=self._max_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            scheduler_port=0,
            dashboard_address="127.0.0.1:0",
            worker_dashboard_address="127.0.0.1:0",
            # Retries are the runner's: a task whose worker dies fails at once with KilledWorker
            # instead of being re-run by Dask up to three more times behind the runner's back.
            scheduler_kwargs={"allowed_failures": 0},
        )
        try:
            client = distributed.Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close(timeout=_CLOSE_TIMEOUT)
            raise
        self._cluster = cluster
        self._client = client
        return client

    def _on_dask_done(self, future: Future[Any], dask_future: Any) -> None:
        # Runs in Dask's callback thread. Whoever removes the future from _pending (this, or
        # _on_cancelled) is the one that moves it out of PENDING, exactly once.
        with self._lock:
            if self._pending.pop(future, None) is None:
                return
        if not future.set_running_or_notify_cancel():
            return
        try:
            data = dask_future.result()
            ok, value, tb = pickle.loads(data)
        except BaseException as exc:  # KilledWorker, a cancelled Dask future, a decoding error
            future.set_exception(exc)
            return
        if ok:
            future.set_result(value)
        else:
            if tb is not None:
                value.__cause__ = _RemoteTraceback(tb)
            future.set_exception(value)

    def _on_cancelled(self, future: Future[Any]) -> None:
        if not future.cancelled():
            return
        with self._lock:
            dask_future = self._pending.pop(future, None)
            closing = self._shutdown
        if dask_future is None:
            return
        # Future.cancel() leaves the future CANCELLED; wait() and as_completed() only see it
        # once the executor acknowledges, as the standard pools do when they dequeue it.
        future.set_running_or_notify_cancel()
        if not closing:  # shutdown() releases everything at once by closing the client
            try:
                dask_future.cancel()
            except Exception:
                logger.debug("could not cancel Dask task %s", dask_future.key, exc_info=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work, then close the client and any local cluster this executor started.

        Calling it again does nothing. Closing is bounded by timeouts, so it never hangs on an
        unreachable scheduler or an unresponsive worker.

        Args:
            wait: Wait for pending futures before closing; with ``False`` the closing happens in
                a background thread once they are done, and this call returns at once.
            cancel_futures: Cancel the futures whose results are not in yet (Dask cannot stop a
                task already running on a worker; its result is then dropped).
        """
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            pending = list(self._pending)
            client, cluster = self._client, self._cluster
            self._client = self._cluster = None
        if cancel_futures:
            for future in pending:
                future.cancel()
        if wait:
            self._close(pending, client, cluster)
        else:
            threading.Thread(
                target=self._close,
                args=(pending, client, cluster),
                name="event_pipeline-dask-shutdown",
            ).start()

    @staticmethod
    def _close(pending: list[Future[Any]], client: Any, cluster: Any) -> None:
        from concurrent.futures import wait

        wait(pending)
        if client is not None:
            try:
                client.close(timeout=_CLOSE_TIMEOUT)
            except Exception:
                logger.warning("closing the Dask client failed", exc_info=True)
        if cluster is not None:
            try:
                cluster.close(timeout=_CLOSE_TIMEOUT)
            except Exception:
                logger.warning("closing the local Dask cluster failed", exc_info=True)
