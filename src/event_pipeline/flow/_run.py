"""Running a flow: each flow run is an owner of event-run units on the call's coordinator.

A :class:`FlowProgram` is a compiled flow bound to one runner: its :class:`FlowPlan` and a
:class:`Plan` per step (the step's effective settings on the runner's executors, shared by
every flow run so that the same step of many runs batches on one lane).

A :class:`FlowRunUnit` walks the plan with two queues and no recursion: *entering* a node
goes down (a step opens an :class:`EventRunUnit`; a sequence enters its first item; a group
enters every member; a branch enters its subject); a step's ``on_complete`` queues the
node as *finished*, and finishing moves up through ``parent`` and ``slot`` (the next item of
a sequence, the count of a group, the route of a branch). A step on the exact inline
executor runs its first attempt at once, without futures, as ``Runner.run`` does; only a
retry goes through the coordinator. The coordinator never learns what a flow is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from .._coordinator import Coordinator, Lane, Task
from .._evaluation import evaluate
from .._flowrun import FlowRun, StepRun, StepStatus, failure_reason, make_step_run, show
from .._plan import Plan
from .._results import EventResult, EventRun
from .._units import EventRunUnit, raise_stop
from .._worker import OK, RETRY, attempt, describe_exception
from ._compile import Feed, FlowPlan, NodeKind, check_inputs

if TYPE_CHECKING:
    from ._model import Flow

__all__ = ["FlowMapUnit", "FlowProgram", "FlowRunUnit", "FlowStream", "report"]

_NO_KWARGS: dict[str, Any] = {}
#: The ``remaining`` of a run with no group: never written.
_NO_COUNTS: list[int] = []
_STEP = NodeKind.STEP
_SEQUENCE = NodeKind.SEQUENCE
_PARALLEL = NodeKind.PARALLEL
_SUCCEEDED = StepStatus.SUCCEEDED
_FAILED = StepStatus.FAILED

#: Per step: name, event name, node, feed, source, entry, plan, ``"name:"`` (its task-id
#: part), whether its parent is a group (its task goes out at once), stop_on_exception,
#: ``"name:0"`` (the index of a one-task step's task: its id after the run's prefix).
_StepRow = tuple[str, str, int, Feed, int, bool, Plan, str, bool, bool, str]
#: Per node, for finishing it: parent (-1 for the root), the parent's kind (None for the
#: root), slot, optional, and the next item when the parent is a sequence (else -1).
_Link = tuple[int, "NodeKind | None", int, bool, int]
#: Per node, for entering it: kind, step (-1 unless a STEP), children.
_Entry = tuple[NodeKind, int, tuple[int, ...]]


class FlowProgram:
    """A compiled flow with a :class:`Plan` per step, for one runner.

    It also keeps, worked out once, the plan read as flat tuples per step and per node
    (``rows``, ``links``, ``entries``): a flow run reads them at every step.
    """

    __slots__ = (
        "_bindings",
        "chain",
        "entries",
        "first",
        "flow",
        "groups",
        "links",
        "parts",
        "plan",
        "rows",
        "step_plans",
        "window",
    )

    def __init__(self, flow: Flow, plan: FlowPlan, step_plans: list[Plan], window: int) -> None:
        self.flow = flow
        self.plan = plan
        self.step_plans = step_plans
        self.window = window
        self._bindings: dict[tuple[int, tuple[str, ...]], tuple[tuple[str, ...], ...]] = {}
        for step in plan.steps:
            if step.entry and step.feed is not Feed.NONE:
                raise ValueError(
                    f"a flow cannot begin with {step.feed.value} (pipe/each): nothing comes "
                    f"before step {step.name!r} to give it a value: {flow}"
                )
        nodes = plan.nodes
        self.rows: tuple[_StepRow, ...] = tuple(
            (
                step.name,
                step.event.__name__,
                step.node,
                step.feed,
                step.source,
                step.entry,
                step_plans[step.index],
                f"{step.name}:",
                nodes[step.node].parent >= 0
                and nodes[nodes[step.node].parent].kind is NodeKind.PARALLEL,
                bool(step_plans[step.index].settings.stop_on_exception),
                f"{step.name}:0",
            )
            for step in plan.steps
        )
        #: A one-task step's task index (``"name:0"``) to the step's index.
        self.parts = {row[10]: index for index, row in enumerate(self.rows)}
        links: list[_Link] = []
        for node in nodes:
            if node.parent < 0:
                links.append((-1, None, node.slot, node.optional, -1))
                continue
            parent = nodes[node.parent]
            following = -1
            if parent.kind is NodeKind.SEQUENCE and node.slot + 1 < len(parent.children):
                following = parent.children[node.slot + 1]
            links.append((parent.index, parent.kind, node.slot, node.optional, following))
        self.links: tuple[_Link, ...] = tuple(links)
        self.entries: tuple[_Entry, ...] = tuple(
            (node.kind, node.step, node.children) for node in nodes
        )
        #: The flow has a group: its runs count members down.
        self.groups = any(node.kind is NodeKind.PARALLEL for node in nodes)
        #: Per node, the one step entering it starts (down first items and subjects),
        #: or -1 when that reaches a group.
        first: list[int] = []
        for node in nodes:
            while node.kind is NodeKind.SEQUENCE or node.kind is NodeKind.BRANCH:
                node = nodes[node.children[0]]
            first.append(node.step if node.kind is NodeKind.STEP else -1)
        self.first: tuple[int, ...] = tuple(first)
        #: Its runs of a map go through ``ChainMapUnit``: the root is one step or a
        #: sequence of steps, none tolerated or fanned out, each on a pool and none
        #: stopping the run.
        root = nodes[0]
        self.chain = (
            (
                root.kind is NodeKind.STEP
                or (
                    root.kind is NodeKind.SEQUENCE
                    and all(nodes[child].kind is NodeKind.STEP for child in root.children)
                )
            )
            and all(not node.optional and node.feed is not Feed.EACH for node in nodes)
            and all(
                not plan.inline and not plan.settings.stop_on_exception for plan in step_plans
            )
        )

    def bind(self, args: tuple[Any, ...], inputs: Mapping[str, Any]) -> tuple[tuple[str, ...], ...]:
        """Check the call's arguments against every step (once per shape of call) and
        return, per step, the names of the inputs it receives."""
        shape = (len(args), tuple(inputs))
        received = self._bindings.get(shape)
        if received is None:
            received = check_inputs(self.plan, args, inputs)
            if len(self._bindings) < 64:
                self._bindings[shape] = received
        return received


def _run_failure_reason(run: EventRun) -> str:
    """Why a step whose event run failed did."""
    errors = run.errors
    if not errors:
        return f"{run.event_name} failed: no task succeeded"
    return failure_reason(run.event_name, errors[0])


def report(coordinator: Coordinator, run: FlowRun) -> None:
    """Every step of a finished flow run to ``on_step`` hooks, in text order, then the run
    to ``on_flow``."""
    hooks = coordinator.hooks
    if hooks is None:
        return
    if hooks.on_step:
        for step in run.steps:
            hooks.emit_step(step)
    if hooks.on_flow:
        hooks.emit_flow(run)


class FlowRunUnit:
    """One run of a flow over one set of arguments.

    Args:
        coordinator: schedules every step's tasks.
        program: the flow, compiled for the runner.
        args: positional arguments for the entry steps.
        inputs: named inputs, by parameter name.
        task_prefix: prefixed to task ids (``3:`` gives ``3:Fetch:0``).
        on_complete: called once with this unit when its ``result`` is set.
        on_stop: called once with this unit when a step stopped it.
        received: ``program.bind(args, inputs)``, when the caller has it already.
    """

    __slots__ = (
        "args",
        "coordinator",
        "draining",
        "failed",
        "finished",
        "index",
        "inputs",
        "lanes",
        "ok",
        "on_complete",
        "on_stop",
        "program",
        "received",
        "remaining",
        "result",
        "started",
        "steps",
        "stop_error",
        "stopping_step",
        "task_prefix",
        "units",
        "values",
    )

    def __init__(
        self,
        coordinator: Coordinator,
        program: FlowProgram,
        args: tuple[Any, ...],
        inputs: Mapping[str, Any],
        task_prefix: str = "",
        on_complete: Callable[[FlowRunUnit], None] | None = None,
        on_stop: Callable[[FlowRunUnit], None] | None = None,
        received: tuple[tuple[str, ...], ...] | None = None,
        lanes: list[Lane | None] | None = None,
    ) -> None:
        self.received = program.bind(args, inputs) if received is None else received
        self.coordinator = coordinator
        self.program = program
        self.args = args
        self.inputs = inputs
        self.task_prefix = task_prefix
        self.on_complete = on_complete
        self.on_stop = on_stop
        self.draining = False
        size = len(program.links)
        self.values: list[Any] = [None] * size
        #: Per node, 1 when it succeeded (or is tolerated); bytes hold no references,
        #: so the collector never looks at them.
        self.ok = bytearray(size)
        self.remaining: list[int] = [0] * size if program.groups else _NO_COUNTS
        self.steps: list[StepRun | None] = [None] * len(program.rows)
        #: What runs each step in flight: an event-run unit, or for a one-task step on a
        #: pool (its task owned by this unit) the time it started.
        self.units: dict[int, EventRunUnit | float] = {}
        #: Each step's lane, shared by the runs of a map (looked up once per call).
        self.lanes = lanes
        #: Nodes finished and not yet moved on from, oldest first (a list: most runs
        #: never hold more than one at a time).
        self.finished: list[int] = []
        self.stop_error: BaseException | None = None
        self.stopping_step = -1
        #: Some step FAILED (tolerated or not): the run's success needs a closer look.
        self.failed = False
        #: Its place among the runs of a map.
        self.index = 0
        self.started = coordinator.clock.monotonic()
        self.result: FlowRun | None = None

    # -- starting and the loop ---------------------------------------------------------
    def start(self) -> None:
        """Enter the root node and settle whatever finishes at once (inline steps)."""
        self.draining = True
        try:
            self._enter(0)
        finally:
            self.draining = False
        if self.finished:
            self._drain()

    def _drain(self) -> None:
        """Move on from every finished node. Entering a node may finish others at once
        (inline steps): they are queued and handled by this same loop, never nested."""
        if self.draining:
            return
        self.draining = True
        try:
            finished = self.finished
            while finished and self.stop_error is None:
                self._finish(finished.pop(0))
        finally:
            self.draining = False

    def _drain_from(self, node: int) -> None:
        """``node`` finished: move on from it, then from whatever that finishes. The same
        as queueing it and draining (outside a drain, nothing else is queued)."""
        if self.draining or self.stop_error is not None:
            self.finished.append(node)
            return
        self.draining = True
        try:
            # What _finish does for an item of a sequence that succeeded, in place: enter
            # the next item, or (the last) finish the sequence and move on from it at once
            # (nothing else is queued, so that is the queue's order too).
            program = self.program
            links = program.links
            ok = self.ok
            while True:
                parent, kind, _, _, following = links[node]
                if kind is not _SEQUENCE or not ok[node]:
                    self._finish(node)
                    break
                self.values[parent] = self.values[node]
                if following >= 0:
                    step = program.first[following]
                    if step >= 0:
                        self._start_step(step)
                    else:
                        self._enter(following)
                    break
                ok[parent] = True
                node = parent
            finished = self.finished
            while finished and self.stop_error is None:
                self._finish(finished.pop(0))
        finally:
            self.draining = False

    def _enter(self, index: int) -> None:
        """Enter ``index`` and everything a group or sequence enters with it, iteratively."""
        step = self.program.first[index]
        if step >= 0:  # no group on the way down: one step starts
            self._start_step(step)
            return
        entries = self.program.entries
        stack = [index]
        while stack:
            index = stack.pop()
            kind, step, children = entries[index]
            if kind is _STEP:
                self._start_step(step)
            elif kind is _PARALLEL:
                self.remaining[index] = len(children)
                stack.extend(reversed(children))
            else:  # a sequence enters its first item, a branch its subject
                stack.append(children[0])

    # -- steps ---------------------------------------------------------------------------
    def _start_step(self, index: int) -> None:
        name, _, _, feed, source, entry, step_plan, part, flush, _, part0 = self.program.rows[index]
        names = self.received[index]
        kwargs = {key: self.inputs[key] for key in names} if names else _NO_KWARGS
        if feed is not Feed.EACH:
            if entry:
                args = self.args
            elif feed is Feed.PIPE:
                args = (self.values[source],)
            else:
                args = ()
            coordinator = self.coordinator
            started = coordinator.clock.monotonic()
            if step_plan.inline:
                self._run_inline(index, step_plan, args, kwargs, started)
                return
            # A one-task step on a pool: its task goes straight to the coordinator, owned
            # by this unit (no event-run unit, no input iterator), and batches with the
            # same step of other flow runs. Its index is the step's part of the task id
            # ("Fetch:0", after this run's prefix) and tells on_result which step it is.
            self.units[index] = started
            window = step_plan.window
            task = Task(step_plan, self, part0, (args, kwargs))  # type: ignore[arg-type]
            lanes = self.lanes
            if lanes is None:
                coordinator.add(task, window)
            else:
                lane = lanes[index]
                if lane is None:
                    lane = lanes[index] = coordinator.lane(step_plan)
                coordinator.add(task, window, lane)
            if flush:
                # Out now, before a member declared after it (perhaps inline) runs: the
                # members of a group start together, in declaration order.
                coordinator.flush(step_plan, window)
            return
        planned = self.program.plan.steps[index]
        if entry:
            calls: Iterable[tuple[Any, ...]] = [self.args]
        else:
            value = self.values[source]
            try:
                items = iter(value)
            except TypeError:
                error = TypeError(
                    f"flow step {name!r} ({planned.event.__name__}): |=> needs an "
                    f"iterable value to fan out over, got {type(value).__name__}"
                )
                self._record_unrun_failure(index, error, str(error))
                return
            calls = ((item,) for item in items)
        started = self.coordinator.clock.monotonic()
        unit = EventRunUnit(
            self.coordinator,
            step_plan,
            ((args, kwargs) for args in calls),
            streaming=False,
            window=step_plan.window,
            task_prefix=self.task_prefix + part,
            on_complete=partial(self._step_completed, index),
            on_stop=partial(self._step_stopped, index),
        )
        unit.started = started
        self.units[index] = unit
        # Its tasks go out now, before a member declared after it (perhaps inline) runs:
        # the members of a group start together, in declaration order.
        if unit.admit():
            self.coordinator.attach(unit)
        self.coordinator.flush(step_plan, step_plan.window)

    # -- as the owner of its one-task steps' tasks -----------------------------------------
    def admit(self) -> bool:
        return False

    def on_result(self, task: Task, result: EventResult) -> None:
        """The task of a one-task step on a pool ended with ``result``."""
        index = self.program.parts[task.index]  # type: ignore[index]
        started: float = self.units.pop(index)  # type: ignore[assignment]  # not a unit
        row = self.program.rows[index]
        coordinator = self.coordinator
        duration = coordinator.clock.monotonic() - started
        hooks = coordinator.hooks
        if hooks is not None and hooks.on_run:
            # One task: every evaluation state says success exactly when it succeeded.
            run = EventRun(row[6].name, not result.error, [result], duration)
            hooks.emit_run(run)
            node = self._one_step(index, row, run, result, started, duration)
        elif result.error:
            node = self._one_step(index, row, result, result, started, duration)
        else:  # _one_step's success, in place: the common case
            node = row[2]
            value = self.values[node] = result.content
            self.ok[node] = True
            self.steps[index] = make_step_run(
                row[0], row[1], _SUCCEEDED, result, value, None, False, None,
                result.attempts, started - self.started, duration,
            )  # fmt: skip
        if result.exception is not None and row[9]:
            self._stopped(result.exception, index)
        self._drain_from(node)

    def _one_step(
        self,
        index: int,
        row: _StepRow,
        run: EventRun | EventResult,
        result: EventResult,
        started: float,
        duration: float,
    ) -> int:
        """A one-task step (no ``|=>``) ended with ``result``: record it; return its node
        (finished, for the caller to queue or move on from). ``run`` is its EventRun, or
        ``result`` again: the StepRun makes the EventRun when asked for it."""
        node = row[2]
        value = result.content
        if result.error:
            self.failed = True
            self.steps[index] = make_step_run(
                row[0], row[1], _FAILED, run, value, None, False,
                failure_reason(row[1], result), result.attempts, started - self.started,
                duration,
            )  # fmt: skip
            self.ok[node] = False
        else:
            self.steps[index] = make_step_run(
                row[0], row[1], _SUCCEEDED, run, value, None, False, None,
                result.attempts, started - self.started, duration,
            )  # fmt: skip
            self.ok[node] = True
        self.values[node] = value
        return node

    def _step_completed(self, index: int, run: EventRun) -> None:
        self._step_done(index, run)
        self._drain()

    def _run_inline(
        self,
        index: int,
        step_plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float,
    ) -> None:
        """The step's first attempt, here and now; a retry goes to the coordinator."""
        coordinator = self.coordinator
        if coordinator.progress is not None:
            coordinator.progress.submitted()
        kind, value = attempt(step_plan.event, args, kwargs, step_plan.retry_on)
        row = self.program.rows[index]
        if kind == RETRY:
            unit = EventRunUnit(
                self.coordinator,
                step_plan,
                iter(()),
                streaming=False,
                window=step_plan.window,
                task_prefix=self.task_prefix + row[7],
                on_complete=partial(self._step_completed, index),
                on_stop=partial(self._step_stopped, index),
            )
            unit.started = started
            unit.results.append(None)
            unit.admitted = unit.pending = 1
            self.units[index] = unit
            self.coordinator.attach(unit)
            self.coordinator.resume(Task(step_plan, unit, 0, (args, kwargs)), kind, value, started)
            return
        duration = coordinator.clock.monotonic() - started
        task_id = f"{self.task_prefix}{row[7]}0"
        name = step_plan.name
        if kind == OK:
            ok, content = value
            result = EventResult(not ok, content, None, task_id, name, 1, duration)
        else:
            result = EventResult(True, value, value, task_id, name, 1, duration)
        if coordinator.observed:
            coordinator.observe(result)
        hooks = coordinator.hooks
        if hooks is not None and hooks.on_run:
            run = EventRun(name, not result.error, [result], duration)
            hooks.emit_run(run)
            node = self._one_step(index, row, run, result, started, duration)
        else:
            node = self._one_step(index, row, result, result, started, duration)
        self.finished.append(node)  # inline steps start inside a drain: it moves on
        if result.exception is not None and row[9]:
            self._stopped(result.exception, index)

    def _step_done(self, index: int, run: EventRun, started: float | None = None) -> None:
        planned = self.program.plan.steps[index]
        unit = self.units.pop(index, None)
        if started is None:
            started = unit.started if isinstance(unit, EventRunUnit) else self.started
        results = run.results
        if planned.feed is Feed.EACH:
            value: Any = [r.content for r in results]
            attempts = sum(r.attempts for r in results)
        elif results:
            value = results[0].content
            attempts = sum(r.attempts for r in results) if len(results) > 1 else results[0].attempts
        else:
            value, attempts = None, 0
        success = run.success
        if not success:
            self.failed = True
        self.steps[index] = make_step_run(
            planned.name,
            run.event_name,
            _SUCCEEDED if success else _FAILED,
            run,
            value,
            None,
            False,
            None if success else _run_failure_reason(run),
            attempts,
            started - self.started,
            run.duration,
        )
        self.values[planned.node] = value
        self.ok[planned.node] = run.success
        self.finished.append(planned.node)

    def _record_unrun_failure(self, index: int, value: Any, reason: str) -> None:
        planned = self.program.plan.steps[index]
        self.failed = True
        self.steps[index] = StepRun(
            planned.name, planned.event.__name__, StepStatus.FAILED, value=value, reason=reason
        )
        self.values[planned.node] = value
        self.ok[planned.node] = False
        self.finished.append(planned.node)

    def _step_stopped(self, index: int, error: BaseException) -> None:
        self._stopped(error, index)

    def _stopped(self, error: BaseException, index: int = -1) -> None:
        if self.stop_error is None:
            self.stop_error = error
            self.stopping_step = index
            if self.on_stop is not None:
                self.on_stop(self)

    # -- finishing nodes -----------------------------------------------------------------
    def _finish(self, index: int) -> None:
        """``index`` finished (its ``ok`` and ``values`` are set): move on from it."""
        parent, kind, slot, optional, following = self.program.links[index]
        ok = self.ok
        if not ok[index] and optional:
            self._tolerate(index)
        if parent < 0:
            self._complete()
        elif kind is _SEQUENCE:
            if following >= 0 and ok[index]:  # the next item (the common case, in place)
                self.values[parent] = self.values[index]
                step = self.program.first[following]
                if step >= 0:
                    self._start_step(step)
                else:
                    self._enter(following)
            else:
                self._after_item(parent, slot)
        elif kind is _PARALLEL:
            self._after_member(parent)
        elif slot == 0:
            self._route(parent)
        else:  # the chosen arm finished: so did the branch
            self.values[parent] = self.values[index]
            ok[parent] = ok[index]
            self.finished.append(parent)

    def _tolerate(self, index: int) -> None:
        self.ok[index] = True
        for j in self.program.plan.nodes[index].steps:
            step = self.steps[j]
            if step is not None and step.status is StepStatus.FAILED:
                step.handled = True

    def _after_item(self, sequence: int, slot: int) -> None:
        nodes = self.program.plan.nodes
        node = nodes[sequence]
        item = node.children[slot]
        self.values[sequence] = self.values[item]
        if not self.ok[item]:
            culprit = self._culprit(item)
            for later in node.children[slot + 1 :]:
                self._mark(nodes[later].steps, StepStatus.SKIPPED, f"upstream {culprit!r} failed")
            self.ok[sequence] = False
            self.finished.append(sequence)
        elif slot + 1 < len(node.children):
            self._enter(node.children[slot + 1])
        else:
            self.ok[sequence] = True
            self.finished.append(sequence)

    def _after_member(self, group: int) -> None:
        self.remaining[group] -= 1
        if self.remaining[group]:
            return
        node = self.program.plan.nodes[group]
        members = node.children
        succeeded = sum(1 for m in members if self.ok[m])
        assert node.evaluation is not None
        ok = evaluate(node.evaluation, succeeded, len(members) - succeeded)
        if ok:
            for member in members:
                if not self.ok[member]:
                    self._tolerate(member)
        self.values[group] = tuple(self.values[m] for m in members)
        self.ok[group] = ok
        self.finished.append(group)

    def _route(self, branch: int) -> None:
        nodes = self.program.plan.nodes
        node = nodes[branch]
        subject = nodes[node.children[0]]
        subject_ok = bool(self.ok[subject.index])
        code, problem = self._code(subject.index, subject_ok)
        step = self.steps[subject.step] if subject.kind is NodeKind.STEP else None
        if step is not None and problem is None:
            step.route = code
        arm = -1 if problem is not None else node.arm(code)
        if problem is None and (arm >= 0 or code <= 1):
            for other in node.children[1:]:
                if other != arm:
                    reason = f"not taken: route {code} chosen"
                    self._mark(nodes[other].steps, StepStatus.NOT_TAKEN, reason)
        if problem is None and arm < 0 and code > 1:
            name = step.event_name if step is not None else "the group"
            problem = f"{name} routed to {code}, but no arm handles route {code}"
        if problem is not None:
            # The step fails (tolerated if it is optional); a failed step's arm is 0's.
            tolerated = subject.optional
            if step is not None:
                self.failed = True
                step.status = StepStatus.FAILED
                step.reason = problem
                step.handled = tolerated
            self.ok[subject.index] = tolerated
            arm = node.arm(0)
            for other in node.children[1:]:
                if other != arm:
                    self._mark(nodes[other].steps, StepStatus.NOT_TAKEN, f"not taken: {problem}")
            if arm >= 0:
                self._enter(arm)
                return
            self.values[branch] = self.values[subject.index]
            self.ok[branch] = tolerated
            self.finished.append(branch)
            return
        if arm < 0:  # route 0 or 1 with no arm: failure stops, success continues
            self.values[branch] = self.values[subject.index]
            self.ok[branch] = subject_ok
            self.finished.append(branch)
            return
        self._enter(arm)

    def _code(self, subject: int, subject_ok: bool) -> tuple[int, str | None]:
        """The route code after ``subject``, or a problem naming the event."""
        node = self.program.plan.nodes[subject]
        if node.kind is not NodeKind.STEP:
            return (1 if subject_ok else 0), None
        step = self.steps[node.step]
        assert step is not None
        if step.run is None:
            return 0, None
        event = self.program.plan.steps[node.step].event
        try:
            code = event.route(step.run)
        except Exception as exc:
            return 0, f"{event.__name__}.route raised {describe_exception(exc)}"
        if type(code) is not int:
            return 0, f"{event.__name__}.route must return an int from 0 to 9, got {show(code)}"
        if not 0 <= code <= 9:
            return 0, f"{event.__name__}.route returned {code}, outside 0-9"
        return code, None

    def _culprit(self, index: int) -> str:
        steps = self.steps
        for j in self.program.plan.nodes[index].steps:
            step = steps[j]
            if step is not None and step.status is StepStatus.FAILED and not step.handled:
                return step.name
        return self.program.plan.steps[self.program.plan.nodes[index].steps[0]].name

    def _mark(self, indices: range, status: StepStatus, reason: str) -> None:
        rows = self.program.rows
        steps = self.steps
        for j in indices:
            if steps[j] is None:
                name, event_name = rows[j][:2]
                steps[j] = make_step_run(
                    name, event_name, status, None, None, None, False, reason, 0, None, 0.0
                )

    def _complete(self) -> None:
        steps = self._final_steps(StepStatus.SKIPPED, "the flow run ended first")
        success = bool(self.ok[0]) and not (
            self.failed and any(s.status is StepStatus.FAILED and not s.handled for s in steps)
        )
        coordinator = self.coordinator
        elapsed = coordinator.clock.monotonic() - self.started
        result = self.result = FlowRun(success, steps, self.values[0], elapsed, self.program.flow)
        if coordinator.hooks is not None:
            self._report(result)
        if self.on_complete is not None:
            self.on_complete(self)

    def _final_steps(self, status: StepStatus, reason: str) -> list[StepRun]:
        """Every step's record, the ones that have none given ``status``. When every step
        has one, that is ``self.steps`` itself (the run is over: nothing changes it)."""
        steps = self.steps
        if None in steps:
            self._mark(range(len(steps)), status, reason)
        return steps  # type: ignore[return-value]  # no None left

    def _report(self, run: FlowRun) -> None:
        report(self.coordinator, run)

    # -- stopping ------------------------------------------------------------------------
    def partial_run(self) -> FlowRun:
        """The run as it stands, after a stop: running steps CANCELLED, the rest SKIPPED."""
        planned = self.program.plan.steps
        for index, unit in list(self.units.items()):
            if not isinstance(unit, EventRunUnit):  # a one-task step's task, in flight
                self.steps[index] = StepRun(
                    planned[index].name,
                    planned[index].event.__name__,
                    StepStatus.CANCELLED,
                    reason="cancelled: the flow run stopped",
                    started=unit - self.started,
                )
            elif index == self.stopping_step or unit.stop_error is not None:
                run = unit.partial_run()
                self.steps[index] = StepRun(
                    planned[index].name,
                    run.event_name,
                    StepStatus.FAILED,
                    run=run,
                    reason=f"stopped: {describe_exception(unit.stop_error)}"
                    if unit.stop_error is not None
                    else "stopped",
                    attempts=sum(r.attempts for r in run.results),
                    started=unit.started - self.started,
                    duration=run.duration,
                )
            else:
                self.steps[index] = StepRun(
                    planned[index].name,
                    planned[index].event.__name__,
                    StepStatus.CANCELLED,
                    reason="cancelled: the flow run stopped",
                    started=unit.started - self.started,
                )
        steps = self._final_steps(StepStatus.SKIPPED, "skipped: the flow run stopped")
        elapsed = self.coordinator.clock.monotonic() - self.started
        return FlowRun(False, steps, None, elapsed, self.program.flow)

    def cancel(self) -> None:
        tasks = False
        for unit in self.units.values():
            if isinstance(unit, EventRunUnit):
                self.coordinator.cancel(unit)
            else:
                tasks = True
        if tasks:  # the one-task steps' tasks in flight are this unit's own
            self.coordinator.cancel(self)

    def raise_stop(self) -> None:
        cause = self.stop_error
        assert cause is not None
        self.cancel()
        run = self.partial_run()
        name = (
            self.program.plan.steps[self.stopping_step].name
            if self.stopping_step >= 0
            else "a step"
        )
        self._report(run)
        raise_stop(run, f"flow step {name!r}", cause)


class FlowStream:
    """What the drivers of many runs of one flow over zipped inputs share: the call's
    inputs and window, and the finished runs, kept until they can be handed out in input
    order. It is a coordinator owner of sorts: ``admit`` starts flow runs while there is
    room (at most ``window`` in flight or finished and not yet handed out)."""

    task_prefix = ""

    def __init__(
        self,
        coordinator: Coordinator,
        program: FlowProgram,
        inputs: Iterator[tuple[Any, ...]],
        named: Mapping[str, Any],
        *,
        window: int,
        call_prefix: str,
    ) -> None:
        self.coordinator = coordinator
        self.program = program
        self.inputs: Iterator[tuple[Any, ...]] | None = inputs
        self.named = named
        self.window = window
        self.call_prefix = call_prefix
        self.done: dict[int, FlowRun] = {}
        self.next_index = 0
        self.admitted = 0
        self.stop_error: BaseException | None = None
        self._prepare()

    def _prepare(self) -> None:
        """Set up what the driver itself needs."""

    def on_result(self, task: Task, result: EventResult) -> None:  # pragma: no cover
        raise AssertionError(f"a {type(self).__name__} adds no tasks of its own")

    def ordered(self) -> Iterator[FlowRun]:
        done = self.done
        while self.next_index in done:
            run = done.pop(self.next_index)
            self.next_index += 1
            yield run


class FlowMapUnit(FlowStream):
    """Many runs of one flow, each a :class:`FlowRunUnit` of its own."""

    def _prepare(self) -> None:
        self.running: dict[int, FlowRunUnit] = {}
        self.stopped_unit: FlowRunUnit | None = None
        #: Each step's lane on the coordinator, looked up by the first run that needs it.
        self.lanes: list[Lane | None] = [None] * len(self.program.rows)

    def admit(self) -> bool:
        inputs = self.inputs
        if inputs is None:
            return False
        coordinator = self.coordinator
        program = self.program
        named = self.named
        prefix = self.call_prefix
        running = self.running
        done = self.done
        window = self.window
        on_complete = self._done
        on_stop = self._stopped
        lanes = self.lanes
        # Every input of a map has the same shape: the arguments are bound once.
        width = -1
        received: tuple[tuple[str, ...], ...] | None = None
        while len(running) + len(done) < window and self.stop_error is None:
            try:
                args = next(inputs)
            except StopIteration:
                self.inputs = None
                return False
            if len(args) != width:
                received = program.bind(args, named)
                width = len(args)
            index = self.admitted
            self.admitted = index + 1
            unit = FlowRunUnit(
                coordinator, program, args, named, f"{prefix}{index}:", on_complete, on_stop,
                received, lanes,
            )  # fmt: skip
            unit.index = index
            running[index] = unit
            unit.start()
        return self.stop_error is None

    def _done(self, unit: FlowRunUnit) -> None:
        index = unit.index
        del self.running[index]
        assert unit.result is not None
        self.done[index] = unit.result

    def _stopped(self, unit: FlowRunUnit) -> None:
        if self.stop_error is None:
            self.stop_error = unit.stop_error
            self.stopped_unit = unit

    @property
    def finished(self) -> bool:
        return self.inputs is None and not self.running and not self.done

    def raise_stop(self) -> None:
        unit = self.stopped_unit
        assert unit is not None
        for other in self.running.values():
            if other is not unit:
                other.cancel()
        unit.raise_stop()
