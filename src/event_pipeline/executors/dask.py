"""A ``concurrent.futures`` executor that runs work on a Dask distributed cluster.

Requires the optional extra: ``pip install "event-pipeline-futures[dask]"`` (from a clone:
``pip install -e ".[dask]"``). Dask is imported only when an executor first connects, so
``import event_pipeline`` (and this module) stays free of it.

How a submission travels::

    submit(fn, *args, **kwargs)                    caller's thread
      -> cloudpickle (fn, args, kwargs) into one opaque ``bytes`` payload
      -> client.submit(_apply, payload, key=<unique>, pure=False, retries=0)
    _apply(payload)                                a Dask worker
      -> unpickle, call fn, pickle (ok, value or exception, traceback text)
    Dask done-callback                             Dask's callback thread
      -> queue (future, dask future)
    _collect                                       this executor's result thread
      -> gather every finished result queued so far in one round trip, complete the futures

Pickling the call here keeps Dask's conveniences out of the user's way: Dask never sees the
keyword arguments (``client.submit`` would take ``key``, ``priority``, ``retries``, ``workers``...
for itself), never walks the arguments looking for keys or futures to substitute, and the
scheduler never needs the user's modules. A serialization error becomes a failed future at once,
in the caller, with the original exception. Results are gathered in batches because fetching them
one by one costs a round trip to a worker each, in series.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import pickle
import queue
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Executor, Future
from concurrent.futures import wait as wait_futures
from typing import Any, ClassVar, ParamSpec, TypeVar

from .._executors import available_cpus
from .._worker import RemoteTraceback

__all__ = ["ADDRESS_ENV_VAR", "DaskExecutor"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: Environment variable holding the scheduler address used when ``address`` is not given.
ADDRESS_ENV_VAR = "EVENT_PIPELINE_DASK_ADDRESS"

_INSTALL_HINT = (
    'DaskExecutor needs the optional dependency "distributed"; '
    'install it with: pip install "event-pipeline-futures[dask]" '
    '(from a clone of event_pipeline: pip install -e ".[dask]")'
)

# Bounds for closing the client and a local cluster: shutdown() must never hang, even when the
# scheduler is gone or a worker does not answer.
_CLOSE_TIMEOUT = 10.0

logger = logging.getLogger("event_pipeline")


def _require_distributed() -> None:
    # find_spec on a top-level name locates the package without importing it, so construction
    # stays cheap and still fails early when the extra is missing.
    if importlib.util.find_spec("distributed") is None:
        raise ImportError(_INSTALL_HINT, name="distributed")


def _dump_exception(exc: BaseException) -> bytes:
    import cloudpickle  # type: ignore[import-untyped]

    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        data: bytes = cloudpickle.dumps((False, exc, tb))
        # An exception that pickles but cannot be rebuilt (a custom __init__ with required
        # arguments is the classic case) would fail in the client instead; find out here.
        pickle.loads(data)
    except Exception as err:
        substitute = RuntimeError(
            f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
            f"(the exception could not be sent back from the Dask worker: {err!r})"
        )
        data = cloudpickle.dumps((False, substitute, tb))
    return data


def _apply(payload: bytes) -> bytes:
    """Run one submission on a Dask worker; module level so workers import it by reference.

    Every outcome, exceptions included, comes back as pickled bytes, so Dask only reports an
    error of its own when the worker could not run this function at all (it died, or
    ``event_pipeline`` is not importable there).
    """
    import cloudpickle

    try:
        fn, args, kwargs = pickle.loads(payload)
        result = fn(*args, **kwargs)
    except BaseException as exc:  # as in ProcessPoolExecutor, SystemExit reaches the caller
        return _dump_exception(exc)
    try:
        data: bytes = cloudpickle.dumps((True, result, None))
    except BaseException as exc:
        return _dump_exception(exc)
    return data


def _load_outcome(future: Future[Any], data: bytes) -> None:
    try:
        ok, value, tb = pickle.loads(data)
    except BaseException as exc:
        future.set_exception(exc)
        return
    if ok:
        future.set_result(value)
        return
    if tb is not None:
        value.__cause__ = RemoteTraceback(tb)
    future.set_exception(value)


def _task_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    # Dask groups tasks by the part of the key before the first "-"; keep the name one word.
    return str(name).replace("-", "_").replace("<", "").replace(">", "")


_Done = tuple[Future[Any], Any]


class DaskExecutor(Executor):
    """Run submissions on a Dask distributed cluster, as a ``concurrent.futures.Executor``.

    The executor connects on its first :meth:`submit`, not when it is created, so an instance can
    sit in a class attribute of a module that the workers import too. It connects to, in order:

    1. the scheduler at ``address``;
    2. the scheduler at the address in the environment variable ``EVENT_PIPELINE_DASK_ADDRESS``
       (read when the executor connects);
    3. a local cluster it starts itself: ``max_workers`` worker processes with one thread each,
       every server and dashboard on 127.0.0.1 with a free port. :meth:`shutdown` stops it.

    Every submission runs (none is deduplicated, Dask's own retries are off) with its arguments
    exactly as given. Arguments that cannot be pickled, an exception the callable raises, a result
    that cannot be sent back and a worker that died all end in a failed future. A worker's death
    fails the tasks it held with Dask's ``KilledWorker``: on the local cluster the first time,
    elsewhere once the cluster's ``distributed.scheduler.allowed-failures`` is exceeded.

    Done-callbacks of the returned futures run in the executor's result thread: keep them short
    and never wait there for another of its futures.

    Args:
        address: Scheduler address, such as ``"tcp://10.0.0.5:8786"``.
        max_workers: Number of worker processes of the local cluster. With a scheduler it only
            tells callers how much work to keep in flight (``_max_workers``); left out, that is
            the number of worker threads the cluster reports when the executor connects.

    Raises:
        ImportError: ``distributed`` is not installed
            (``pip install "event-pipeline-futures[dask]"``).
        TypeError: ``address`` is not a string or ``max_workers`` not an integer.
        ValueError: ``max_workers`` is less than 1.
    """

    # The runner reads this: work goes to other processes, so it checks that events and
    # arguments pickle before submitting them.
    _event_pipeline_pickles: ClassVar[bool] = True

    @staticmethod
    def _event_pipeline_worker_lost(exc: BaseException) -> bool:
        """Tells the runner that ``exc`` means a worker died (Dask's ``KilledWorker``).

        The runner then treats the tasks that failed with it as suspects and re-runs each
        alone, as it does for a broken process pool: only the one that kills its worker
        again is charged.
        """
        from distributed.scheduler import KilledWorker

        return isinstance(exc, KilledWorker)

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
        #: How many tasks the cluster runs at once; corrected from the cluster on connecting.
        self._max_workers: int = max_workers or available_cpus()
        # One lock for the connection, the shutdown flag and the pending map: the first submit
        # connects, whichever thread it is on, and shutdown must not race a submission.
        self._lock = threading.Lock()
        self._client: Any = None
        self._cluster: Any = None
        self._collector: threading.Thread | None = None
        self._done: queue.SimpleQueue[_Done | None] = queue.SimpleQueue()
        self._shutdown = False
        #: Futures not yet completed, with their Dask futures (which must stay referenced:
        #: Dask forgets a task once no client holds a future for it).
        self._pending: dict[Future[Any], Any] = {}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(address={self._address!r}, "
            f"max_workers={self._requested_workers!r})"
        )

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        """Schedule ``fn(*args, **kwargs)`` on the cluster and return a future for its result.

        Args:
            fn: A callable the workers can import (a module-level function or class).
            *args: Positional arguments for ``fn``.
            **kwargs: Keyword arguments for ``fn``, passed on untouched whatever their names.

        Returns:
            A ``concurrent.futures.Future``. Pickling errors, exceptions raised by ``fn`` (with
            the worker's traceback as ``__cause__``) and dead workers are set on it.

        Raises:
            RuntimeError: The executor was shut down.
            ImportError: ``distributed`` cannot be imported.
            OSError: The scheduler cannot be reached (``TimeoutError`` after Dask's
                ``distributed.comm.timeouts.connect``).
        """
        try:
            import cloudpickle
        except ImportError as exc:  # installed with distributed
            raise ImportError(_INSTALL_HINT, name="distributed") from exc

        future: Future[_T] = Future()
        try:
            payload: bytes = cloudpickle.dumps((fn, args, kwargs))
        except Exception as exc:
            payload = b""
            future.set_exception(exc)
        # The key names the callable for Dask's dashboard; the uuid makes every submission a
        # task of its own, where Dask's default (pure=True) runs identical calls only once.
        key = f"{_task_name(fn)}-{uuid.uuid4().hex}"
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if future.done():
                return future
            client = self._connect()
            dask_future = client.submit(_apply, payload, key=key, pure=False, retries=0)
            self._pending[future] = dask_future
        future.add_done_callback(self._on_cancelled)
        dask_future.add_done_callback(functools.partial(self._on_dask_done, future))
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
        cluster = None
        if address is None:
            cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=self._max_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                scheduler_port=0,
                dashboard_address="127.0.0.1:0",
                worker_dashboard_address="127.0.0.1:0",
                # Retries are the runner's: a task whose worker dies fails at once, instead of
                # Dask re-running it up to three more times behind the runner's back.
                scheduler_kwargs={"allowed_failures": 0},
            )
        try:
            client = distributed.Client(  # type: ignore[no-untyped-call]
                cluster or address, set_as_default=False
            )
            if cluster is None and self._requested_workers is None:
                threads = sum(client.nthreads().values())  # type: ignore[no-untyped-call]
                if threads > 0:
                    self._max_workers = threads
        except BaseException:
            if cluster is not None:
                cluster.close(timeout=_CLOSE_TIMEOUT)
            raise
        collector = threading.Thread(
            target=self._collect,
            args=(client,),
            name="event_pipeline-dask-results",
            daemon=True,
        )
        collector.start()
        self._client, self._cluster, self._collector = client, cluster, collector
        return client

    def _on_dask_done(self, future: Future[Any], dask_future: Any) -> None:
        # Runs in Dask's callback thread, one callback after another: hand over and return.
        self._done.put((future, dask_future))

    def _collect(self, client: Any) -> None:
        """The result thread: completes futures from Dask's, until shutdown sends ``None``."""
        done = self._done
        while True:
            batch = [done.get()]
            while True:
                try:
                    batch.append(done.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            if items:
                try:
                    self._complete(client, items)
                except BaseException:  # never lose the thread, or every later future hangs
                    logger.exception("DaskExecutor could not complete futures")
                    for future, _ in items:
                        if not future.done():
                            future.set_exception(RuntimeError("DaskExecutor lost this result"))
            if len(items) < len(batch):
                return
            # Drop the Dask futures before blocking again: while a client holds one, the
            # cluster keeps its result in a worker's memory.
            del batch, items

    def _complete(self, client: Any, items: list[_Done]) -> None:
        owned: list[_Done] = []
        with self._lock:
            # Whoever removes a future from _pending (here, or _on_cancelled) is the one that
            # moves it out of PENDING, exactly once.
            for future, dask_future in items:
                if self._pending.pop(future, None) is not None:
                    owned.append((future, dask_future))
        owned = [item for item in owned if item[0].set_running_or_notify_cancel()]
        finished = [item for item in owned if item[1].status == "finished"]
        if finished:
            try:
                results = client.gather([dask_future for _, dask_future in finished])
            except Exception:
                # One bad apple (its data lost with a worker, say) must not fail the batch.
                results = None
            if results is not None:
                for (future, _), data in zip(finished, results, strict=True):
                    _load_outcome(future, data)
                finished = []
        for future, dask_future in finished + [i for i in owned if i[1].status != "finished"]:
            try:
                data = dask_future.result()
            except BaseException as exc:  # KilledWorker, a task Dask cancelled, a lost result
                future.set_exception(exc)
            else:
                _load_outcome(future, data)

    def _on_cancelled(self, future: Future[Any]) -> None:
        if not future.cancelled():
            return
        with self._lock:
            dask_future = self._pending.pop(future, None)
            closing = self._shutdown
        if dask_future is None:
            return
        # Future.cancel() leaves the future CANCELLED; wait() and as_completed() see it only
        # once the executor acknowledges, as the standard pools do when they dequeue it.
        future.set_running_or_notify_cancel()
        if not closing:  # shutdown() releases everything at once by closing the client
            try:
                dask_future.cancel()
            except Exception:
                logger.debug("could not cancel Dask task %s", dask_future.key, exc_info=True)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting work, then close the client and any local cluster this executor started.

        Calling it again does nothing. Closing is bounded by timeouts, so it does not hang on an
        unreachable scheduler or an unresponsive worker.

        Args:
            wait: Wait for the pending futures, then close. With ``False`` the same happens in a
                background thread and this call returns at once.
            cancel_futures: Cancel the futures whose results are not in yet. Dask cannot stop a
                task that is already running on a worker; its result is dropped.
        """
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            pending = list(self._pending)
            client, cluster, collector = self._client, self._cluster, self._collector
            self._client = self._cluster = self._collector = None
        if cancel_futures:
            for future in pending:
                future.cancel()
        args = (pending, client, cluster, collector)
        if wait:
            self._close(*args)
        else:
            threading.Thread(
                target=self._close, args=args, name="event_pipeline-dask-shutdown"
            ).start()

    def _close(
        self,
        pending: list[Future[Any]],
        client: Any,
        cluster: Any,
        collector: threading.Thread | None,
    ) -> None:
        wait_futures(pending)
        if collector is not None:
            self._done.put(None)
            collector.join(_CLOSE_TIMEOUT)
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
