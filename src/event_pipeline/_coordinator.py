"""The coordinator: how tasks are scheduled, in the thread that makes the call.

A call (``run``, ``map``, ``imap``, a flow) builds one :class:`Coordinator` and drives it
with :meth:`Coordinator.step`; workers only ever run single attempts. Work comes from
*owners* (event-run units, see ``_units``): each owner is asked for tasks while its window
has room, and hears of each task's result. The life of a task::

    owner.admit() ─► add ─► lane.ready ─► batch ─► executor.submit ─► work item in flight
                               ▲                                          │ wait(FIRST_COMPLETED,
                               │ when due                                 │  ≤ next due, ≤ 0.1 s)
                          retry heap ◄── RETRY with attempts left ◄── classify each outcome
                                                                          │ otherwise
                                                                          ▼
                      owner.on_result ◄── completion queue ◄── EventResult

One :class:`Lane` per executor holds what belongs to the pool rather than to a call's
event: ready tasks (by plan, so batches hold one event's tasks), the in-flight budget (two
work items per worker), the suspects of a broken pool and the one-at-a-time isolation flag.
Results go through a queue drained by the loop, never by a nested call, so an owner that
adds work from ``on_result`` (a flow opening its next step) cannot recurse, however long
the chain. A task waiting for its retry sits in the heap, never on a worker.

Most tasks travel without a Task object (see ``_tasks``): inputs read a window at a time
are queued as one fresh run (``add_fresh``), sent as slices of it, and a slice whose
attempts all return ``(bool, value)`` comes back to its owner as one list of those
outcomes (``on_plain``; as results, ``on_results``, when hooks or a progress display
watch each result). Anything else turns the slice into Task objects and takes the path above.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, CancelledError, Executor, Future
from typing import TYPE_CHECKING, Any

from ._async import AsyncExecutor, run_batch_async
from ._deadlines import Deadlines
from ._executors import (
    DefaultExecutor,
    ExecutorCache,
    ExecutorKey,
    is_process_pool,
    is_standard_pool,
    lost_a_worker,
    stop_workers,
    worker_count,
)
from ._guard import check_main_guard
from ._hooks import Retry
from ._results import EventResult, first_try_results, task_result
from ._retry import is_retryable
from ._tasks import BulkOwner, Fresh, Owner, Ready, Task, WorkItem, as_call
from ._worker import (
    BASE,
    FATAL,
    OK,
    RETRY,
    SPLIT,
    describe_exception,
    load_outcomes,
    run_batch,
    run_pickled,
)

if TYPE_CHECKING:
    from ._hooks import Hooks
    from ._plan import Plan
    from ._progress import ProgressTracker

__all__ = ["Clock", "Coordinator", "Lane", "Owner", "Task"]  # Owner and Task: from _tasks

logger = logging.getLogger("event_pipeline")

_signals: Any
try:
    # The C functions under the signal module: its Python wrappers convert handlers to and
    # from enums, which costs more than the submit that SigintDeferred guards.
    import _signal as _signals  # type: ignore[import-not-found, no-redef]
except ImportError:  # pragma: no cover - not CPython
    _signals = signal

#: A batch aims to keep a worker busy this long; longer tasks go one per work item. A work
#: item costs a process pool far more (pickling, a pipe, a wake-up) than a thread pool.
BATCH_TARGET_SECONDS = 0.002
PROCESS_BATCH_TARGET_SECONDS = 0.1
#: Work a process-pool batch is not shrunk below at the end of the input.
TAIL_SECONDS = 0.01
MAX_BATCH = 1024
#: Attempts per work item on an AsyncExecutor.
ASYNC_BATCH = 64
#: The longest single wait. Python acts on a signal (Ctrl-C) that lands just before a wait
#: starts only when the wait returns, and externally cancelled futures never end one.
WAIT_SLICE = 0.1


def _start_poll(timeout: float) -> float:
    """How often to look whether a timed attempt queued in its executor has started."""
    return min(timeout, WAIT_SLICE) / 4


#: Re-running a group of suspects that breaks its pool again costs a fresh worker (a
#: process start, a good fraction of a second); re-running them one at a time costs a
#: round trip each. Groups that would take less than this go one task at a time.
SUSPECT_GROUP_SECONDS = 0.25


def _suspect_groups(tasks: list[Task]) -> list[list[Task]]:
    """``tasks`` as groups to re-run apart: whole when they take long (halved on a break,
    so few fresh workers are needed), one by one when they are quick."""
    per_task = tasks[0].plan.per_task if tasks else None
    if len(tasks) > 1 and (per_task is None or len(tasks) * per_task < SUSPECT_GROUP_SECONDS):
        return [[task] for task in tasks]
    return [tasks]


class Clock:
    """Time as the runner sees it: a seam so tests can drive retries without sleeping."""

    # The real function itself, not a wrapper: ``run`` reads the clock twice per call.
    monotonic: Callable[[], float] = staticmethod(time.monotonic)

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        """Wait ``seconds``, or less when ``wake`` is set (the runner was shut down)."""
        wake.wait(seconds)

    def wait(self, wake: threading.Event, timeout: float) -> None:
        """Block until ``wake`` is set (a work item finished) or ``timeout`` seconds passed."""
        wake.wait(timeout)


class SigintDeferred:
    """Holds Ctrl-C back while a standard pool records a work item.

    A ``KeyboardInterrupt`` raised inside ``ThreadPoolExecutor.submit`` can land between
    starting a worker thread and recording it, and ``shutdown()`` then never joins that
    thread. Deferred, the interrupt is delivered by :meth:`deliver` once the coordinator
    has recorded the new future, where it can cancel it. Only the main thread receives
    signals and may install handlers, so it is used only there, decided at submit time.
    """

    __slots__ = ("pending", "previous")

    def __enter__(self) -> SigintDeferred:
        self.pending: tuple[int, Any] | None = None
        self.previous = _signals.getsignal(signal.SIGINT)
        if callable(self.previous):
            _signals.signal(signal.SIGINT, self._record)
        return self

    def _record(self, signum: int, frame: Any) -> None:
        self.pending = (signum, frame)

    def __exit__(self, *exc_info: object) -> None:
        if callable(self.previous):
            _signals.signal(signal.SIGINT, self.previous)

    def deliver(self) -> None:
        """Act on a Ctrl-C that arrived while deferred (raises ``KeyboardInterrupt``)."""
        if self.pending is not None and callable(self.previous):
            pending, self.pending = self.pending, None
            self.previous(*pending)


class Lane:
    """One executor within a coordinator: the pool's state, shared by every owner using it."""

    __slots__ = (
        "budget",
        "executor",
        "in_flight",
        "inline",
        "isolating",
        "isolation",
        "key",
        "pool",
        "ready",
        "slots_are_tasks",
        "suspects",
        "workers",
    )

    def __init__(self, executor: Executor, key: ExecutorKey | None) -> None:
        self.executor = executor
        #: The cache key of a pool the runner owns (and replaces when broken); else None.
        self.key = key
        #: A standard pool, whose submit() Ctrl-C must not interrupt (see SigintDeferred).
        self.pool = is_standard_pool(executor)
        # Two work items per worker keep every worker busy between completions; an inline
        # executor runs one at a time, so a stop takes effect before the next task starts.
        self.workers = 1 if type(executor) is DefaultExecutor else worker_count(executor)
        #: On an AsyncExecutor the budget counts attempts, not work items: a batch's
        #: attempts run at once, and max_workers bounds attempts.
        self.slots_are_tasks = isinstance(executor, AsyncExecutor)
        self.budget = (
            1
            if type(executor) is DefaultExecutor
            else self.workers
            if self.slots_are_tasks
            else 2 * self.workers
        )
        #: The inline executor: its tasks are added one at a time, each run as it is
        #: added, so that a stop is seen before the next input is even read.
        self.inline = type(executor) is DefaultExecutor
        self.in_flight = 0
        self.ready: dict[Plan, Ready] = {}
        #: Groups of tasks that were in a pool when it broke, re-run one group at a time;
        #: a group that breaks the pool again is split in two, down to the culprit.
        self.suspects: deque[list[Task]] = deque()
        self.isolating = False
        #: Suspects of a pool the runner owns re-run on a one-worker pool of this
        #: coordinator's own; other executors (a Dask cluster survives losing a worker)
        #: re-run them in place.
        self.isolation: Executor | None = None

    def batch_size(self, plan: Plan) -> int:
        if plan.unbatched:
            return 1
        if plan.batch_size is not None:
            return plan.batch_size
        if self.slots_are_tasks:
            # Coroutines of a batch all run at once on the loop: the batch only saves
            # submissions, and costs slots held until its last attempt ends.
            return ASYNC_BATCH
        per_task = plan.per_task
        if per_task is None:
            return 1
        target = PROCESS_BATCH_TARGET_SECONDS if plan.remote else BATCH_TARGET_SECONDS
        by_time = int(target / max(per_task, 1e-9))
        return max(1, min(MAX_BATCH, by_time))


def _main_thread_ident() -> int:
    return threading.main_thread().ident or 0


class Coordinator:
    """Schedules the tasks of one call on the runner's executors, in the calling thread.

    Args:
        cache: the runner's executors; the coordinator asks it for replacements.
        clock: time and waiting (a seam for tests).
        hooks: the runner's hooks, or None when there are none.
        progress: counts tasks for a progress display, or None.
    """

    def __init__(
        self,
        cache: ExecutorCache,
        clock: Clock,
        hooks: Hooks | None = None,
        progress: ProgressTracker | None = None,
    ) -> None:
        self.cache = cache
        self.clock = clock
        self.hooks = hooks
        self.progress = progress
        #: Called with the last snapshot when the call ends (the progress line's close).
        self.progress_done: Callable[[Any], object] | None = None
        #: Something watches results: deliver() reports each one first.
        self.observed = progress is not None or (hooks is not None and bool(hooks.on_result))
        self.lanes: dict[object, Lane] = {}
        self.in_flight: dict[Future[Any], WorkItem] = {}
        self.retries: list[tuple[float, int, Task]] = []
        #: Final results to deliver: a task's, or the outcomes of a batch of a fresh run
        #: that each returned ``(bool, value)`` at the first attempt (its owner, the first
        #: task's index, the outcomes, their duration and the event's name).
        self.completed: deque[
            tuple[Task, EventResult] | tuple[BulkOwner, int, list[Any], float, str]
        ] = deque()
        #: When attempts with a timeout must end.
        self.deadlines = Deadlines()
        #: Futures whose attempt passed its deadline: what they return is ignored.
        self.expired: set[Future[Any]] = set()
        # Finished futures, appended by their done-callbacks in whatever thread finishes
        # them; one Event wakes the loop. Unlike concurrent.futures.wait(), which hooks
        # every future in flight on each call, this costs the same however many are.
        self.finished: deque[Future[Any]] = deque()
        # Made with the first future to wait for: an inline call never needs one.
        self.wake: threading.Event | None = None
        self.owners: list[Owner] = []
        self.delivering = False
        self._sequence = itertools.count()

    # -- adding work ---------------------------------------------------------------------
    def attach(self, owner: Owner) -> None:
        """Ask ``owner`` for tasks at every step until it says no more will come."""
        self.owners.append(owner)

    def lane(self, plan: Plan) -> Lane:
        # By the executor's identity: plans on one executor share its lane (an int key
        # hashes faster than the executor key's tuple, and this runs once per task).
        lane = self.lanes.get(id(plan.executor))
        if lane is None:
            lane = self.lanes[id(plan.executor)] = Lane(plan.executor, plan.key)
        return lane

    def add(self, task: Task, window: int, lane: Lane | None = None) -> None:
        """Queue ``task`` on its lane, and submit at once when the lane can take it.

        Submitting as each input is read (rather than once the window is full) lets an
        input that yields its next item only after earlier work started make progress.
        ``lane`` saves the look-up when the caller knows it (``self.lane(task.plan)``).
        """
        plan = task.plan
        if lane is None:
            lane = self.lane(plan)
        queue = self._ready(lane, plan)
        queue.append(task)
        if self.progress is not None:
            self.progress.submitted()
        if lane.in_flight < lane.budget and (
            lane.in_flight == 0 or len(queue) >= lane.batch_size(plan)
        ):
            self._dispatch(lane, window)

    def add_fresh(self, fresh: Fresh, window: int, lane: Lane) -> None:
        """Queue a run of new tasks (``fresh.plan``'s, on ``lane``) and submit what the
        lane can take."""
        self._ready(lane, fresh.plan).append_fresh(fresh)
        if self.progress is not None:
            self.progress.submitted(len(fresh.calls))
        # What results add while they are delivered (a chain's next step, a flow's next
        # event) is gathered and goes out at the start of the next turn, with whatever
        # else is ready then: in full batches, not one thin slice per result.
        if lane.in_flight < lane.budget and not self.delivering:
            self._dispatch(lane, window)

    def flush(self, plan: Plan, window: int) -> None:
        """Take in finished work, then submit ``plan``'s ready tasks while its lane has room,
        whole batches or not: called before reading an input that may wait for them."""
        finished = self.finished
        while finished:
            future = finished.popleft()
            if future in self.in_flight:
                self._complete(future)
        lane = self.lane(plan)
        if lane.ready and lane.in_flight < lane.budget:
            self._dispatch(lane, window)

    def resume(self, task: Task, kind: int, value: Any, started: float) -> None:
        """Take over a task whose first attempt already ran elsewhere, with its outcome."""
        task.attempts = 1
        task.started = started
        self._settle(task, kind, value, self.clock.monotonic())

    # -- the loop ------------------------------------------------------------------------
    def step(self, window: int) -> None:
        """One turn: admit, release due retries, submit, wait for a completion, deliver.

        Results are handed to their owners at the end; an owner may add work then, which
        the next turn submits.
        """
        self._admit()
        self._release_due_retries()
        for lane in self.lanes.values():
            if lane.ready or lane.suspects:
                self._dispatch(lane, window)
        if self.completed:
            # Work that finished as it was submitted: what its owners add goes out before
            # the wait, not after it.
            self.deliver()
            for lane in self.lanes.values():
                if lane.ready and lane.in_flight < lane.budget:
                    self._dispatch(lane, window)
        if self.in_flight:
            self._wait_for_completions()
        elif self.retries and not self.completed:
            self._sleep_until_due()
        self.deliver()
        if self.progress is not None:
            self.progress.tick()

    def deliver(self) -> None:
        """Hand every queued result to its owner.

        Not re-entrant: an owner that adds work while a result is delivered (a flow
        opening its next step) may call this again, and that inner call returns at once;
        the outer loop delivers what the new work produced.
        """
        if self.delivering:
            return
        self.delivering = True
        try:
            completed = self.completed
            observed = self.observed
            while completed:
                entry = completed.popleft()
                if len(entry) == 5:
                    owner, first, outcomes, duration, name = entry
                    if observed:
                        results = first_try_results(
                            outcomes, first, owner.task_prefix, name, duration
                        )
                        for result in results:
                            self.observe(result)
                        owner.on_results(first, results)
                    else:
                        owner.on_plain(first, outcomes, duration)
                    continue
                task, result = entry
                if not task.dropped:
                    if observed:
                        self.observe(result)
                    task.owner.on_result(task, result)
        finally:
            self.delivering = False

    def observe(self, result: EventResult) -> None:
        """Report a final result to the hooks and the progress display."""
        if self.progress is not None:
            self.progress.task_done(result.error)
        hooks = self.hooks
        if hooks is not None and hooks.on_result:
            hooks.emit_result(result)

    def _admit(self) -> None:
        if self.owners:
            self.owners = [owner for owner in self.owners if owner.admit()]

    def _release_due_retries(self) -> None:
        retries = self.retries
        if not retries:
            return
        now = self.clock.monotonic()
        while retries and retries[0][0] <= now:
            task = heapq.heappop(retries)[2]
            if task.dropped:
                continue
            lane = self.lane(task.plan)
            if task.isolate:
                lane.suspects.append([task])
            else:
                self._ready(lane, task.plan).push_front([task])

    def _wait_for_completions(self) -> None:
        finished = self.finished
        if not finished:
            timeout = WAIT_SLICE
            if self.retries or self.deadlines:
                now = self.clock.monotonic()
                if self.retries:
                    timeout = min(timeout, max(0.0, self.retries[0][0] - now))
                due = self.deadlines.next_due(now)
                if due is not None:
                    timeout = min(timeout, max(0.0, due - now))
            wake = self.wake
            if wake is None:
                wake = self.wake = threading.Event()
            wake.clear()
            if not finished:
                self.clock.wait(wake, timeout)
        in_flight = self.in_flight
        while finished:
            future = finished.popleft()
            if future in in_flight:
                self._complete(future)
        if self.deadlines:
            now = self.clock.monotonic()
            due = self.deadlines.next_due(now)
            if due is not None and due <= now:
                self._expire(now)

    def _finished(self, future: Future[Any]) -> None:
        self.finished.append(future)
        wake = self.wake
        assert wake is not None  # made before any callback was added
        wake.set()

    def _expire(self, now: float) -> None:
        """End every attempt whose deadline has passed with a ``TimeoutError``.

        On the loop the attempt's coroutine is cancelled; a process pool of the runner's
        has its workers stopped, which breaks it (the other tasks that were in it re-run
        uncharged, as after a crash); a thread cannot be stopped, so the attempt is
        abandoned and its slot stays taken until it returns.
        """
        deadlines = self.deadlines
        for item in list(deadlines.expired(now)):
            future = item.future
            assert future is not None  # set when submitted, before its deadline was
            if self.in_flight.get(future) is not item or future in self.expired or future.done():
                continue
            timeout = item.plan.timeout
            assert timeout is not None
            if not item.plan.remote:
                # A thread pool's or the loop's batch notes when it began.
                began = item.began
                if began is not None:
                    if began + timeout > now:
                        # It started after it was submitted: its time counts from then.
                        deadlines.move(item, began + timeout)
                        continue
                elif not future.running():
                    # Still queued in the executor (a loop or pool shared with other
                    # calls): its time has not begun. Look again soon.
                    deadlines.move(item, now + _start_poll(timeout))
                    continue
            self.expired.add(future)
            executor = item.executor
            cancel_running = getattr(executor, "cancel_running", None)
            if cancel_running is not None:
                cancel_running(future)
            elif is_process_pool(executor) and item.lane.key is not None:
                stop_workers(executor)
            for task in item.tasks:
                plan = task.plan
                task.attempts += 1
                error = TimeoutError(
                    f"{plan.name}: task {task.task_id} timed out after {plan.timeout:g} s "
                    f"(attempt {task.attempts})"
                )
                self._settle(task, self._classify(plan, error), error, now)

    def _sleep_until_due(self) -> None:
        delay = self.retries[0][0] - self.clock.monotonic()
        if delay > 0:
            self.clock.sleep(delay, self.cache.closed_event)
        self.cache.check_open()

    # -- stopping ------------------------------------------------------------------------
    def cancel(self, owner: Owner | None = None) -> None:
        """Drop the tasks of ``owner`` (of everyone when None) that have not started.

        Work items holding only its tasks are cancelled if they have not started; running
        ones are not waited for, and what they return is ignored.
        """

        def dropped(task: Task) -> bool:
            if owner is None or task.owner is owner:
                task.dropped = True
            return task.dropped

        for lane in self.lanes.values():
            for plan, queue in list(lane.ready.items()):
                for task in queue.drop(owner):
                    task.dropped = True
                if not queue:
                    del lane.ready[plan]
            groups = ([task for task in group if not dropped(task)] for group in lane.suspects)
            lane.suspects = deque(group for group in groups if group)
        for _, _, task in self.retries:
            dropped(task)
        for future, item in self.in_flight.items():
            if all([dropped(task) for task in item.tasks]):
                future.cancel()
        if owner is None:
            self.owners.clear()
        else:
            self.owners = [o for o in self.owners if o is not owner]

    def close(self, wait: bool = True) -> None:
        """Shut down the isolation pools this coordinator built (never the runner's).

        Without ``wait`` (the call is being abandoned) the cache finishes the shutdown in
        the background, and the runner's own ``shutdown()`` waits for that.
        """
        for lane in self.lanes.values():
            if lane.isolation is not None:
                self.cache.dispose(lane.isolation, wait=wait)
                lane.isolation = None

    # -- submitting ----------------------------------------------------------------------
    def _dispatch(self, lane: Lane, window: int) -> None:
        if lane.suspects and not lane.isolating:
            self._submit(lane, lane.suspects.popleft(), isolated=True)
        ready = lane.ready
        # Spread what is ready on the lane now (for every event on it: a flow's steps share
        # a pool) over the workers, or over the free slots when fewer: batching never
        # leaves a worker idle that could take a task, and short tasks go in one batch per
        # worker, not two, nor in ever smaller ones as the slots fill up.
        waiting = sum(map(len, ready.values()))
        share = -(-waiting // max(1, min(lane.budget - lane.in_flight, lane.workers)))
        submitted = True
        while ready and lane.in_flight < lane.budget and submitted:
            submitted = False
            # One batch per event in turn, so no event starves another on a shared pool.
            for plan in list(ready):
                if lane.in_flight >= lane.budget:
                    break
                queue = ready.get(plan)
                if (
                    queue
                    and plan.timeout is not None
                    and plan.remote
                    and lane.in_flight >= lane.workers
                ):
                    # A process pool does not say when a work item starts: one timed
                    # attempt per idle worker, so that its submission is its start. Thread
                    # pools and the loop mark a future running when it starts.
                    continue
                if queue:
                    if lane.slots_are_tasks:
                        free = lane.budget - lane.in_flight
                        size = min(lane.batch_size(plan), free, len(queue))
                    else:
                        size = min(lane.batch_size(plan), share)
                        if plan.remote and plan.per_task is not None:
                            # Long batches shrink as the waiting work runs out (to a share
                            # per slot, down to TAIL_SECONDS of work): the workers end
                            # together, not one waiting for another's last long batch.
                            tail = round(TAIL_SECONDS / max(plan.per_task, 1e-9))
                            size = min(size, max(-(-waiting // lane.budget), tail, 1))
                    batch = queue.take(size)
                    if not queue:
                        del ready[plan]
                    if isinstance(batch, list):
                        ran = self._submit(lane, batch)
                    else:
                        ran = self._submit_fresh(lane, *batch)
                    if ran:
                        # It ran inside submit() (the inline executor, or one like it):
                        # what it did is delivered, and a stop seen, before more runs.
                        return
                    submitted = True
                else:
                    ready.pop(plan, None)

    def _pack(self, tasks: list[Task], now: float) -> tuple[list[Task], Any] | None:
        """The batch for a worker process: one pickle of every task's arguments, or one
        pickle per task once a batch did not load in a worker. A task whose arguments
        cannot be pickled fails alone (uncharged); None when none is left."""
        if all(task.payload is None for task in tasks):
            try:
                blob = pickle.dumps(
                    [task.call for task in tasks], pickle.HIGHEST_PROTOCOL
                )
            except Exception:
                pass
            else:
                return tasks, blob
        kept = []
        for task in tasks:
            if task.payload is None:
                try:
                    task.payload = pickle.dumps(task.call, pickle.HIGHEST_PROTOCOL)
                except Exception as exc:
                    error = TypeError(
                        f"{task.plan.name}: the arguments of task {task.task_id} cannot be "
                        f"sent to a worker process ({describe_exception(exc)}); pass "
                        "picklable values, with classes and functions defined at module level"
                    )
                    error.__cause__ = exc
                    self._settle(task, FATAL, error, now)
                    continue
            kept.append(task)
        if not kept:
            return None
        return kept, [task.payload for task in kept]

    def _isolation_executor(self, lane: Lane) -> Executor:
        if lane.key is None or not lane.pool:
            return lane.executor
        if lane.isolation is None:
            lane.isolation = lane.key.single().build()
        return lane.isolation

    def _submit(self, lane: Lane, tasks: list[Task], isolated: bool = False) -> bool:
        """Submit ``tasks`` as one work item; True when it ran inside submit()."""
        now = self.clock.monotonic()
        for task in tasks:
            if task.started is None:
                task.started = now
        plan = tasks[0].plan
        executor = self._isolation_executor(lane) if isolated else lane.executor
        if plan.remote:
            packed = self._pack(tasks, now)
            if packed is None:
                return False
            tasks, work = packed
        else:
            work = [task.call for task in tasks]
        item = WorkItem(lane, executor, plan, now, tasks=tasks, isolated=isolated)
        return self._send(item, work)

    def _submit_fresh(self, lane: Lane, fresh: Fresh, start: int, end: int) -> bool:
        """Submit tasks ``start`` to ``end`` of a fresh run, without a Task object each;
        True when it ran inside submit()."""
        plan = fresh.plan
        calls = fresh.calls[start:end]
        single = fresh.single
        if single and (plan.remote or plan.is_async):
            # Single arguments go as they are to a thread pool's worker only.
            calls = list(map(as_call, calls))
            single = False
        item = WorkItem(
            lane,
            lane.executor,
            plan,
            self.clock.monotonic(),
            owner=fresh.owner,
            first=fresh.first + start,
            calls=calls,
            single=single,
        )
        work: Any = calls
        if fresh.plan.remote:
            try:
                work = pickle.dumps(calls, pickle.HIGHEST_PROTOCOL)
            except Exception:
                # Some argument cannot travel: the per-task path says which.
                return self._submit(lane, item.tasks)
        return self._send(item, work)

    def _send(self, item: WorkItem, work: Any) -> bool:
        """Submit ``item`` with its ``work`` (the calls, or their pickle) to its executor;
        True when it ran inside submit()."""
        lane, executor, plan, now = item.lane, item.executor, item.plan, item.submitted
        if plan.remote:
            function: Callable[..., Any] = run_pickled
        else:
            function = run_batch_async if plan.is_async else run_batch
        arguments: tuple[Any, ...] = (plan.event, work, plan.retry_on)
        timeout = plan.timeout
        if timeout is not None:
            # The deadline counts from the attempt's start, at the earliest its submission
            # (an attempt seen starting later is given its full time: see _expire). A
            # thread pool's or the loop's batch notes its start on the work item; a
            # process pool's cannot, so one timed attempt per idle worker is submitted.
            item.deadline = now + timeout
            deadlines = self.deadlines
            if timeout == deadlines.timeout:
                deadlines.queue.append(item)  # the common case of Deadlines.add
            else:
                deadlines.add(item, timeout)
            note: WorkItem | None = item
        else:
            note = None
        if function is run_batch:
            arguments = (*arguments, id(executor), note, item.single)
        elif function is run_batch_async:
            arguments = (*arguments, note)
        deferred: SigintDeferred | None = None
        try:
            if lane.pool and threading.get_ident() == _main_thread_ident():
                with SigintDeferred() as deferred:
                    future = executor.submit(function, *arguments)
            else:
                future = executor.submit(function, *arguments)
        except Exception as exc:
            if item.deadline is not None:
                item.deadline = None  # it never started
                self.deadlines.finished(item, timeout)  # type: ignore[arg-type]
            self._refused(lane, item.tasks, executor, item.isolated, exc, now)
            return False
        if item.isolated:
            lane.isolating = True
        else:
            lane.in_flight += item.count if lane.slots_are_tasks else 1
        item.future = future
        self.in_flight[future] = item
        # Done already: it ran inside submit() (or so quickly that it makes no difference).
        ran = future.done()
        if ran:
            self._complete(future)
        else:
            if self.wake is None:
                self.wake = threading.Event()
            future.add_done_callback(self._finished)
        if deferred is not None:
            deferred.deliver()
        return ran

    def _refused(
        self,
        lane: Lane,
        tasks: list[Task],
        executor: Executor,
        isolated: bool,
        exc: Exception,
        now: float,
    ) -> None:
        """``executor.submit`` raised: the tasks never ran and are charged nothing."""
        if isinstance(exc, BrokenExecutor):
            check_main_guard(executor)  # before a replacement shuts it down
        if lane.key is not None:
            self.cache.check_open()
            if isolated and lane.isolation is executor:
                self.cache.dispose(executor)
                lane.isolation = None
                self._requeue(lane, tasks, isolated)
                return
            current = self.cache.current(lane.key)
            if isinstance(exc, BrokenExecutor) or current is not executor:
                # Broken before it took these tasks, or retired by another call: they
                # wait for the fresh pool.
                lane.executor = (
                    self.cache.replace(lane.key, executor) if current is executor else
                    (current if current is not None else self.cache.get(lane.key))
                )
                self._requeue(lane, tasks, isolated)
                return
        # Shut down by its owner, broken, or unable to reach its workers: the tasks end
        # failed and uncharged, each with its one result.
        self.cache.check_open()
        error_type = type(exc) if isinstance(exc, BrokenExecutor) else RuntimeError
        error = error_type(
            f"{tasks[0].plan.name}: the executor {executor!r} refused new work "
            f"({describe_exception(exc)})"
        )
        error.__cause__ = exc
        for task in tasks:
            self._settle(task, FATAL, error, now)

    @staticmethod
    def _ready(lane: Lane, plan: Plan) -> Ready:
        queue = lane.ready.get(plan)
        if queue is None:
            queue = lane.ready[plan] = Ready()
        return queue

    @staticmethod
    def _requeue(lane: Lane, tasks: list[Task], isolated: bool) -> None:
        if isolated:
            lane.suspects.appendleft(tasks)
        else:
            Coordinator._ready(lane, tasks[0].plan).push_front(tasks)

    # -- completions ---------------------------------------------------------------------
    def _complete(self, future: Future[Any]) -> None:
        item = self.in_flight.pop(future)
        lane, plan, isolated = item.lane, item.plan, item.isolated
        if isolated:
            lane.isolating = False
        else:
            lane.in_flight -= item.count if lane.slots_are_tasks else 1
        if item.deadline is not None:
            # Ended before its deadline: out of its queue, at once (see _deadlines).
            item.deadline = None
            queue = self.deadlines.queue
            if queue and queue[0] is item:
                queue.popleft()  # the common case of Deadlines.finished
            else:
                self.deadlines.finished(item, plan.timeout)  # type: ignore[arg-type]
        if future in self.expired:
            self.expired.discard(future)  # its attempt already ended at the deadline
            return
        now = self.clock.monotonic()
        if future.cancelled():
            self.cache.check_open()
            error = CancelledError(f"{plan.name}: the executor cancelled the task")
            for task in item.tasks:
                self._settle(task, FATAL, error, now)
            return
        exc = future.exception()
        if exc is not None:
            self._failed(item, exc, now)
            return
        elapsed, outcomes, plain = future.result()
        if item.count:
            per_task = elapsed / item.count
            previous = plan.per_task
            plan.per_task = per_task if previous is None else 0.7 * previous + 0.3 * per_task
        if plan.remote:
            if outcomes == SPLIT:
                # The batch's arguments did not load in the worker: send each task again
                # alone, to find which cannot. Nothing ran: nothing is charged.
                tasks = item.tasks
                for task in tasks:
                    task.payload = pickle.dumps(task.call, pickle.HIGHEST_PROTOCOL)
                self._requeue(lane, tasks, isolated)
                return
            outcomes, plain = load_outcomes(plan.name, outcomes, item.count, plain)
        if plain and item.fresh:
            # The common case, in bulk: a fresh run's slice whose every attempt returned
            # (bool, value). Each task is final after one attempt; the owner takes their
            # outcomes all at once, and makes results of them if it keeps any.
            owner = item.owner
            assert owner is not None
            self.completed.append(
                (owner, item.first, outcomes, now - item.submitted, plan.name)
            )
            return
        if plain:
            outcomes = [(OK, value) for value in outcomes]
        for task, (kind, value) in zip(item.tasks, outcomes, strict=False):
            task.attempts += 1
            if kind == BASE:
                raise value
            if isolated:
                task.isolate = False  # it ran alone and did not break the pool: innocent
            self._settle(task, kind, value, now)

    def _failed(self, item: WorkItem, exc: BaseException, now: float) -> None:
        """The work item itself failed: a lost worker, or the executor failing it."""
        if not isinstance(exc, Exception):
            raise exc
        if lost_a_worker(item.executor, exc):
            self._broken(item, exc)
            return
        # The executor itself failed the work item (a Dask worker lost, say): that is
        # each task's attempt raising, judged by its retry policy like any other.
        for task in item.tasks:
            task.attempts += 1
            self._settle(task, self._classify(task.plan, exc), exc, now)

    def _broken(self, item: WorkItem, exc: BaseException) -> None:
        """A worker died, failing the work items that were with it: ``item`` among them.

        The standard library fails every task that was in a broken pool, guilty or not, and
        Dask every task queued on a dead worker. Those tasks become suspects, re-run apart
        from other work (on a one-worker pool of this coordinator's for the runner's own
        pools), a work item's tasks together: a group that breaks the pool again is halved
        until the culprit is alone, which is charged an attempt that raised ``exc``; the
        others were innocent and are charged nothing. A broken pool of
        the user's own cannot be replaced: every task that was in it is charged.
        """
        lane, tasks, executor, isolated = item.lane, item.tasks, item.executor, item.isolated
        if isinstance(exc, BrokenExecutor):
            check_main_guard(executor)
            if lane.key is None:
                self._charge(tasks, exc, f"was in the executor {executor!r} when it broke")
                return
            if isolated and lane.isolation is executor:
                self.cache.dispose(executor)
                lane.isolation = None
            elif executor is lane.executor or not isolated:
                lane.executor = self.cache.replace(lane.key, executor)
        if isolated and len(tasks) == 1:
            self._charge(tasks, exc, "lost its worker process when run alone")
            return
        if isolated:
            # The culprit is in this group: halve it, and try the halves in turn.
            middle = len(tasks) // 2
            lane.suspects.extendleft(reversed(_suspect_groups(tasks[middle:])))
            lane.suspects.extendleft(reversed(_suspect_groups(tasks[:middle])))
            return
        for task in tasks:
            task.isolate = True
        lane.suspects.extend(_suspect_groups(tasks))

    def _charge(self, tasks: list[Task], exc: BaseException, why: str) -> None:
        """End an attempt of each task with ``exc``, restated to name the event and task."""
        now = self.clock.monotonic()
        for task in tasks:
            task.attempts += 1
            message = f"{task.plan.name}: task {task.task_id} {why}: {describe_exception(exc)}"
            try:
                error: BaseException = type(exc)(message)
            except Exception:  # an exception type that takes other arguments: keep it as is
                error = exc
            else:
                error.__cause__ = exc
            self._settle(task, self._classify(task.plan, error), error, now)

    @staticmethod
    def _classify(plan: Plan, exc: BaseException) -> int:
        retry_on = plan.retry_on
        return RETRY if retry_on is not None and is_retryable(retry_on, exc) else FATAL

    def _settle(self, task: Task, kind: int, value: Any, now: float) -> None:
        """Schedule ``task``'s retry, or queue its final result for its owner."""
        plan = task.plan
        if kind == RETRY and task.attempts < plan.max_attempts():
            delay = plan.retry_wait(task.attempts)
            self._log_retry(task, value, delay)
            if self.progress is not None:
                self.progress.task_retried()
            hooks = self.hooks
            if hooks is not None and hooks.on_retry:
                hooks.emit_retry(Retry(plan.name, task.task_id, task.attempts, value, delay))
            heapq.heappush(self.retries, (now + delay, next(self._sequence), task))
            return
        duration = now - (now if task.started is None else task.started)
        prefix, index = task.owner.task_prefix, task.index  # the id is made when read
        if kind == OK:
            ok, content = value
            result = task_result(
                not ok, content, None, prefix, plan.name, task.attempts, duration, index
            )
        else:
            result = task_result(
                True, value, value, prefix, plan.name, task.attempts, duration, index
            )
        self.completed.append((task, result))

    @staticmethod
    def _log_retry(task: Task, exc: BaseException, delay: float) -> None:
        name = task.plan.name
        logger.info(
            "retrying %s task %s: attempt %d raised %s; next attempt in %.3fs",
            name,
            task.task_id,
            task.attempts,
            type(exc).__name__,
            delay,
            extra={
                "event_name": name,
                "task_id": task.task_id,
                "attempt": task.attempts,
                "exception_type": type(exc).__name__,
                "delay": delay,
            },
        )

