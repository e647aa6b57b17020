"""Many runs of a chain in bulk: ``runner.map``/``imap`` of a flow whose steps run one after
another, one task each, on pools (``A |-> B -> C``, with no group, branch, fan-out,
tolerated step or inline step).

The general driver gives each flow run a :class:`~event_pipeline.flow._run.FlowRunUnit` that
walks its plan and hands the coordinator one task per step. Runs of a chain need no walking:
each goes through the same steps in the same order, and its only decision is whether to go
on. So each step is a *stage*, one owner of tasks on the coordinator for every run of the
call, and runs move through the stages the way a map's inputs move through one event: a
window of inputs is read at once and queued as one fresh run of the first stage's tasks, and
a batch of results that came back at the first attempt goes on as one fresh run of the next
stage's tasks. A task that needed more (a retry, an exception, a broken pool) comes back
alone and goes on alone. A run whose step fails ends there, its later steps skipped; its
:class:`FlowRun` is made once, when it ends.

A flow run made here reports exactly what the general driver reports: statuses, values,
reasons, attempts, task ids and hooks (a test runs both over the same inputs).
"""

from __future__ import annotations

import bisect
import itertools
import operator
from typing import Any

from .._flowrun import ChainInfo, chain_run, chain_successes
from .._results import EventResult, EventRun, first_try_results
from .._tasks import Fresh, Task
from ._compile import Feed
from ._run import FlowStream, report

__all__ = ["ChainMapUnit"]

#: The first item of a pair (a plain outcome's ``ok``; a one-argument call's argument).
_ok = operator.itemgetter(0)
_second = operator.itemgetter(1)


class _Stage:
    """One step of the chain, as the coordinator's owner of that step's tasks (one per
    flow run, numbered by the run)."""

    __slots__ = ("chain", "index", "task_prefix")

    def __init__(self, chain: ChainMapUnit, index: int, task_prefix: tuple[str, str]) -> None:
        self.chain = chain
        self.index = index
        #: ``("3:", ":Fetch:0")``: run 7's task is ``3:7:Fetch:0``, as the general driver
        #: names it.
        self.task_prefix = task_prefix

    def admit(self) -> bool:
        return False

    def on_result(self, task: Task, result: EventResult) -> None:
        self.chain.ended_one(self.index, task.index, result)

    def on_results(self, first: int, results: list[EventResult]) -> None:
        self.chain.ended(self.index, first, results)

    def on_plain(self, first: int, outcomes: list[tuple[bool, Any]], duration: float) -> None:
        self.chain.ended_plain(self.index, first, outcomes, duration)


class _Block:
    """Runs admitted together, numbered from ``first``: each step's values and times kept
    column by column (a slice of results is stored with one assignment per column)."""

    __slots__ = ("first", "left", "odd", "times", "values")

    def __init__(self, first: int, size: int, steps: int, now: float) -> None:
        self.first = first
        #: Per step, each run's value once it ended the step.
        self.values: list[list[Any]] = [[None] * size for _ in range(steps)]
        #: ``times[0]``: when each run began (and so its first step); ``times[j + 1]``:
        #: when it ended step j (and so began step j + 1).
        self.times: list[list[float]] = [[now] * size, *([0.0] * size for _ in range(steps))]
        #: By (step, run - first): an outcome that was not a plain first-try success (a
        #: retry, a failure), or the EventRun made for ``on_run`` hooks.
        self.odd: dict[tuple[int, int], EventResult | EventRun] = {}
        #: Runs not finished yet.
        self.left = size


class ChainMapUnit(FlowStream):
    """Many runs of a chain, moved through its steps together (see the module docstring).
    Its tasks belong to its stages."""

    def _prepare(self) -> None:
        coordinator, program, call_prefix = self.coordinator, self.program, self.call_prefix
        rows = program.rows
        self.plans = [row[6] for row in rows]
        self.lanes = [coordinator.lane(plan) for plan in self.plans]
        #: Run 7's task of step "Fetch" is ``3:7:Fetch:0``, as the general driver names it.
        parts = tuple((call_prefix, ":" + row[10]) for row in rows)
        self.stages = [_Stage(self, k, part) for k, part in enumerate(parts)]
        self.info = ChainInfo(tuple((row[0], row[1]) for row in rows), parts, program.flow)
        #: Per step: whether it receives the previous step's value.
        self.piped = [row[3] is Feed.PIPE for row in rows]
        #: Per step: its named inputs (bound with the first input).
        self.kwargs: list[dict[str, Any]] = []
        self.steps = len(rows)
        self.last = self.steps - 1
        #: The blocks with a run in flight, oldest first, and their first runs.
        self.blocks: list[_Block] = []
        self.firsts: list[int] = []
        self.in_flight = 0

    # -- reading inputs ----------------------------------------------------------------
    def admit(self) -> bool:
        """Read what fits in the window and queue it as one fresh run of the first step."""
        inputs = self.inputs
        if inputs is None:
            return False
        room = self.window - self.in_flight - len(self.done)
        if room <= 0:
            return True
        batch = list(itertools.islice(inputs, room))
        if batch:
            if not self.kwargs:
                # Every input of a map has the same width: checked once, before any step.
                named = self.named
                self.kwargs = [
                    {key: named[key] for key in names} if names else {}
                    for names in self.program.bind(batch[0], named)
                ]
            first = self.admitted
            self.admitted = first + len(batch)
            self.in_flight += len(batch)
            now = self.coordinator.clock.monotonic()
            self.blocks.append(_Block(first, len(batch), self.steps, now))
            self.firsts.append(first)
            kwargs = self.kwargs[0]
            if len(batch[0]) == 1 and not kwargs:  # one iterable: its items, as they are
                fresh = Fresh(self.plans[0], self.stages[0], first, list(map(_ok, batch)), True)
            else:
                fresh = Fresh(
                    self.plans[0], self.stages[0], first, [(args, kwargs) for args in batch]
                )
            self.coordinator.add_fresh(fresh, self.window, self.lanes[0])
        if len(batch) < room:
            self.inputs = None
            return False
        return True

    def _block(self, run: int) -> _Block:
        return self.blocks[bisect.bisect_right(self.firsts, run) - 1]

    # -- results ---------------------------------------------------------------------------
    def ended_plain(
        self, k: int, first: int, outcomes: list[tuple[bool, Any]], duration: float
    ) -> None:
        """Runs ``first``, ``first + 1``... ended step ``k`` at the first attempt, returning
        each ``(ok, content)`` of ``outcomes``."""
        hooks = self.coordinator.hooks
        if not all(map(_ok, outcomes)) or (hooks is not None and hooks.on_run):
            # Some returned (False, value), or hooks want EventRuns: each its own result.
            parts = self.stages[k].task_prefix
            name = self.plans[k].name
            self.ended(k, first, first_try_results(outcomes, first, parts, name, duration))
            return
        self._went_on(k, first, list(map(_second, outcomes)))

    def ended(self, k: int, first: int, results: list[EventResult]) -> None:
        """Runs ``first``, ``first + 1``... ended step ``k`` at the first attempt with
        these ``results``, which hooks may have seen: each run keeps its own, and goes on
        or ends by itself."""
        now = self.coordinator.clock.monotonic()
        block = self._block(first)
        hooks = self.coordinator.hooks
        for offset, result in enumerate(results, first - block.first):
            if hooks is not None and hooks.on_run:
                block.odd[k, offset] = self._emit_run(k, block, offset, result, now)
            self._one(k, block, offset, result, now)

    def _went_on(self, k: int, first: int, contents: list[Any]) -> None:
        """Runs ``first``, ``first + 1``... succeeded at step ``k`` at the first attempt,
        with these ``contents``: on to the next step (or the end) together."""
        now = self.coordinator.clock.monotonic()
        block = self._block(first)
        start = first - block.first
        end = start + len(contents)
        block.values[k][start:end] = contents
        block.times[k + 1][start:end] = itertools.repeat(now, len(contents))
        if k == self.last:
            self._finish_many(block, start, end)
            return
        following = k + 1
        kwargs = self.kwargs[following]
        plan, stage = self.plans[following], self.stages[following]
        if not self.piped[following]:
            fresh = Fresh(plan, stage, first, [((), kwargs)] * len(contents))
        elif kwargs:
            fresh = Fresh(plan, stage, first, [((value,), kwargs) for value in contents])
        else:  # the values themselves, one argument per task
            fresh = Fresh(plan, stage, first, contents, True)
        self.coordinator.add_fresh(fresh, self.window, self.lanes[following])

    def ended_one(self, k: int, run: int, result: EventResult) -> None:
        """Run ``run`` ended step ``k`` with ``result``, after a retry or an exception."""
        now = self.coordinator.clock.monotonic()
        block = self._block(run)
        offset = run - block.first
        hooks = self.coordinator.hooks
        if hooks is not None and hooks.on_run:
            block.odd[k, offset] = self._emit_run(k, block, offset, result, now)
        self._one(k, block, offset, result, now)

    def _one(self, k: int, block: _Block, offset: int, result: EventResult, now: float) -> None:
        """One run ended step ``k``: it goes on, or ends."""
        block.odd.setdefault((k, offset), result)
        block.values[k][offset] = result.content
        block.times[k + 1][offset] = now
        if result.error or k == self.last:
            self._finish_one(block, offset, k, not result.error)
            return
        following = k + 1
        call = ((result.content,) if self.piped[following] else (), self.kwargs[following])
        task = Task(self.plans[following], self.stages[following], block.first + offset, call)
        self.coordinator.add(task, self.window, self.lanes[following])

    def _emit_run(
        self, k: int, block: _Block, offset: int, result: EventResult, now: float
    ) -> EventRun:
        """A step's one-task EventRun, for the ``on_run`` hooks, as the general driver
        makes it."""
        began = block.times[k][offset]
        event_run = EventRun(self.plans[k].name, not result.error, [result], now - began)
        self.coordinator.hooks.emit_run(event_run)  # type: ignore[union-attr]
        return event_run

    # -- finishing runs ------------------------------------------------------------------
    def _finish_many(self, block: _Block, start: int, end: int) -> None:
        """Runs ``start`` to ``end`` of ``block`` ended the last step, each at the first
        attempt: make their FlowRuns."""
        columns = [values[start:end] for values in block.values]
        columns.extend(times[start:end] for times in block.times)
        # Their records, ``(v0, ..., t0, ...)`` each (see chain_run), one zip makes.
        records = zip(*columns, strict=True)
        first = block.first + start
        # No run of theirs has an odd outcome: a run that had one went on alone.
        runs = chain_successes(self.info, first, records)
        self.done.update(zip(range(first, first + len(runs)), runs, strict=True))
        if self.coordinator.hooks is not None:
            for flow_run in runs:
                report(self.coordinator, flow_run)
        self._retire(block, end - start)

    def _finish_one(self, block: _Block, offset: int, k: int, success: bool) -> None:
        """The run at ``offset`` of ``block`` ended at step ``k``: make its FlowRun."""
        record = tuple(block.values[j][offset] for j in range(k + 1)) + tuple(
            block.times[j][offset] for j in range(k + 2)
        )
        odd = block.odd
        mine = {j: odd.pop((j, offset)) for j in range(k + 1) if (j, offset) in odd}
        run = block.first + offset
        self.done[run] = flow_run = chain_run(self.info, run, record, mine or None, success)
        report(self.coordinator, flow_run)
        self._retire(block, 1)

    def _retire(self, block: _Block, finished: int) -> None:
        self.in_flight -= finished
        block.left -= finished
        if not block.left:
            index = self.blocks.index(block)
            del self.blocks[index]
            del self.firsts[index]

    # -- for the driver -------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.inputs is None and not self.in_flight and not self.done

    def raise_stop(self) -> None:  # pragma: no cover - no step of a chain stops the run
        raise AssertionError("a chain has no step that stops the run")
