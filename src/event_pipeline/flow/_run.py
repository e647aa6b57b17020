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

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from .._coordinator import Coordinator, Task
from .._evaluation import evaluate
from .._flowrun import FlowRun, StepRun, StepStatus
from .._plan import Plan
from .._results import EventResult, EventRun
from .._units import EventRunUnit, raise_stop
from .._worker import OK, RETRY, attempt, describe_exception
from ._compile import Feed, FlowPlan, NodeKind, check_inputs

if TYPE_CHECKING:
    from ._model import Flow

__all__ = ["FlowMapUnit", "FlowProgram", "FlowRunUnit"]

_NO_KWARGS: dict[str, Any] = {}


class FlowProgram:
    """A compiled flow with a :class:`Plan` per step, for one runner."""

    __slots__ = ("_bindings", "flow", "plan", "step_plans", "window")

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


class FlowRunUnit:
    """One run of a flow over one set of arguments.

    Args:
        coordinator: schedules every step's tasks.
        program: the flow, compiled for the runner.
        args: positional arguments for the entry steps.
        inputs: named inputs, by parameter name.
        task_prefix: prefixed to task ids (``3:`` gives ``3:Fetch:0``).
        on_complete: called once with the :class:`FlowRun`.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        program: FlowProgram,
        args: tuple[Any, ...],
        inputs: Mapping[str, Any],
        *,
        task_prefix: str,
        on_complete: Callable[[FlowRun], None] | None = None,
        on_stop: Callable[[FlowRunUnit], None] | None = None,
    ) -> None:
        plan = program.plan
        self.received = program.bind(args, inputs)
        self.coordinator = coordinator
        self.program = program
        self.args = args
        self.inputs = inputs
        self.task_prefix = task_prefix
        self.on_complete = on_complete
        self.on_stop = on_stop
        self.draining = False
        size = len(plan.nodes)
        self.values: list[Any] = [None] * size
        self.ok: list[bool] = [False] * size
        self.remaining: list[int] = [0] * size
        self.steps: list[StepRun | None] = [None] * len(plan.steps)
        self.units: dict[int, EventRunUnit | StepTask] = {}
        self.finished: deque[int] = deque()
        self.stop_error: BaseException | None = None
        self.stopping_step = -1
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
                self._finish(finished.popleft())
        finally:
            self.draining = False

    def _enter(self, index: int) -> None:
        """Enter ``index`` and everything a group or sequence enters with it, iteratively."""
        nodes = self.program.plan.nodes
        stack = [index]
        while stack:
            node = nodes[stack.pop()]
            kind = node.kind
            if kind is NodeKind.STEP:
                self._start_step(node.step)
            elif kind is NodeKind.PARALLEL:
                self.remaining[node.index] = len(node.children)
                stack.extend(reversed(node.children))
            else:  # a sequence enters its first item, a branch its subject
                stack.append(node.children[0])

    # -- steps ---------------------------------------------------------------------------
    def _start_step(self, index: int) -> None:
        plan = self.program.plan
        planned = plan.steps[index]
        step_plan = self.program.step_plans[index]
        names = self.received[index]
        kwargs = {name: self.inputs[name] for name in names} if names else _NO_KWARGS
        feed = planned.feed
        if feed is not Feed.EACH:
            if planned.entry:
                args = self.args
            elif feed is Feed.PIPE:
                args = (self.values[planned.source],)
            else:
                args = ()
            started = self.coordinator.clock.monotonic()
            if step_plan.inline:
                self._run_inline(index, step_plan, args, kwargs, started)
            else:
                self._submit_one(index, step_plan, args, kwargs, started)
            return
        if planned.entry:
            calls: Iterable[tuple[Any, ...]] = [self.args]
        elif planned.feed is Feed.EACH:
            value = self.values[planned.source]
            try:
                items = iter(value)
            except TypeError:
                error = TypeError(
                    f"flow step {planned.name!r} ({planned.event.__name__}): |=> needs an "
                    f"iterable value to fan out over, got {type(value).__name__}"
                )
                self._record_unrun_failure(index, error, str(error))
                return
            calls = ((item,) for item in items)
        else:
            calls = [()]
        started = self.coordinator.clock.monotonic()
        unit = EventRunUnit(
            self.coordinator,
            step_plan,
            ((args, kwargs) for args in calls),
            streaming=False,
            window=step_plan.window,
            task_prefix=f"{self.task_prefix}{planned.name}:",
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

    def _submit_one(
        self,
        index: int,
        step_plan: Plan,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float,
    ) -> None:
        """A one-task step on a pool: its task goes straight to the coordinator, owned by a
        :class:`StepTask` (no event-run unit, no input iterator), and batches with the same
        step of other flow runs."""
        planned = self.program.plan.steps[index]
        owner = StepTask(self, index, f"{self.task_prefix}{planned.name}:", started)
        self.units[index] = owner
        coordinator = self.coordinator
        coordinator.add(Task(step_plan, owner, 0, args, kwargs), step_plan.window)
        node = self.program.plan.nodes[planned.node]
        if node.parent >= 0 and self.program.plan.nodes[node.parent].kind is NodeKind.PARALLEL:
            # Out now, before a member declared after it (perhaps inline) runs: the
            # members of a group start together, in declaration order.
            coordinator.flush(step_plan, step_plan.window)

    def _one_done(self, owner: StepTask, result: EventResult) -> None:
        index = owner.index
        self.units.pop(index, None)
        step_plan = self.program.step_plans[index]
        duration = self.coordinator.clock.monotonic() - owner.started
        # One task: every evaluation state says success exactly when the task succeeded.
        run = EventRun(step_plan.name, not result.error, [result], duration)
        hooks = self.coordinator.hooks
        if hooks is not None and hooks.on_run:
            hooks.emit_run(run)
        self._step_done(index, run, started=owner.started)
        if result.exception is not None and step_plan.settings.stop_on_exception:
            self._stopped(result.exception, index)
        self._drain()

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
        if kind == RETRY:
            unit = EventRunUnit(
                self.coordinator,
                step_plan,
                iter(()),
                streaming=False,
                window=step_plan.window,
                task_prefix=f"{self.task_prefix}{self.program.plan.steps[index].name}:",
                on_complete=partial(self._step_completed, index),
                on_stop=partial(self._step_stopped, index),
            )
            unit.started = started
            unit.results.append(None)
            unit.admitted = unit.pending = 1
            self.units[index] = unit
            self.coordinator.attach(unit)
            self.coordinator.resume(Task(step_plan, unit, 0, args, kwargs), kind, value, started)
            return
        duration = coordinator.clock.monotonic() - started
        task_id = f"{self.task_prefix}{self.program.plan.steps[index].name}:0"
        name = step_plan.name
        if kind == OK:
            ok, content = value
            result = EventResult(not ok, content, None, task_id, name, 1, duration)
        else:
            result = EventResult(True, value, value, task_id, name, 1, duration)
        run = EventRun(name, not result.error, [result], duration)
        if coordinator.observed:
            coordinator.observe(result)
        hooks = coordinator.hooks
        if hooks is not None and hooks.on_run:
            hooks.emit_run(run)
        self._step_done(index, run, started=started)
        if result.exception is not None and step_plan.settings.stop_on_exception:
            self._stopped(result.exception, index)

    def _step_done(self, index: int, run: EventRun, started: float | None = None) -> None:
        planned = self.program.plan.steps[index]
        unit = self.units.pop(index, None)
        if started is None:
            started = unit.started if unit is not None else self.started
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
        self.steps[index] = StepRun(
            planned.name,
            run.event_name,
            StepStatus.SUCCEEDED if success else StepStatus.FAILED,
            run=run,
            value=value,
            reason=None if success else self._failure_reason(run),
            attempts=attempts,
            started=started - self.started,
            duration=run.duration,
        )
        self.values[planned.node] = value
        self.ok[planned.node] = run.success
        self.finished.append(planned.node)

    @staticmethod
    def _failure_reason(run: EventRun) -> str:
        errors = run.errors
        if not errors:
            return f"{run.event_name} failed: no task succeeded"
        first = errors[0]
        if first.exception is not None:
            return f"{run.event_name} failed: {describe_exception(first.exception)}"
        return f"{run.event_name} failed: returned (False, {first.content!r})"

    def _record_unrun_failure(self, index: int, value: Any, reason: str) -> None:
        planned = self.program.plan.steps[index]
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
        nodes = self.program.plan.nodes
        node = nodes[index]
        if not self.ok[index] and node.optional:
            self._tolerate(index)
        if node.parent < 0:
            self._complete()
            return
        parent = nodes[node.parent]
        kind = parent.kind
        if kind is NodeKind.SEQUENCE:
            self._after_item(parent.index, node.slot)
        elif kind is NodeKind.PARALLEL:
            self._after_member(parent.index)
        elif node.slot == 0:
            self._route(parent.index)
        else:  # the chosen arm finished: so did the branch
            self.values[parent.index] = self.values[index]
            self.ok[parent.index] = self.ok[index]
            self.finished.append(parent.index)

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
        subject_ok = self.ok[subject.index]
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
            return 0, f"{event.__name__}.route must return an int from 0 to 9, got {code!r}"
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
        planned = self.program.plan.steps
        for j in indices:
            if self.steps[j] is None:
                self.steps[j] = StepRun(
                    planned[j].name, planned[j].event.__name__, status, reason=reason
                )

    def _complete(self) -> None:
        steps = self._final_steps(StepStatus.SKIPPED, "the flow run ended first")
        success = self.ok[0] and not any(
            s.status is StepStatus.FAILED and not s.handled for s in steps
        )
        elapsed = self.coordinator.clock.monotonic() - self.started
        self.result = FlowRun(success, steps, self.values[0], elapsed, self.program.flow)
        self._report(self.result)
        if self.on_complete is not None:
            self.on_complete(self.result)

    def _final_steps(self, status: StepStatus, reason: str) -> list[StepRun]:
        planned = self.program.plan.steps
        return [
            step
            if step is not None
            else StepRun(planned[j].name, planned[j].event.__name__, status, reason=reason)
            for j, step in enumerate(self.steps)
        ]

    def _report(self, run: FlowRun) -> None:
        """Every step to ``on_step`` hooks, in text order, then the run to ``on_flow``."""
        hooks = self.coordinator.hooks
        if hooks is None:
            return
        if hooks.on_step:
            for step in run.steps:
                hooks.emit_step(step)
        if hooks.on_flow:
            hooks.emit_flow(run)

    # -- stopping ------------------------------------------------------------------------
    def partial_run(self) -> FlowRun:
        """The run as it stands, after a stop: running steps CANCELLED, the rest SKIPPED."""
        planned = self.program.plan.steps
        for index, unit in list(self.units.items()):
            if isinstance(unit, EventRunUnit) and (
                index == self.stopping_step or unit.stop_error is not None
            ):
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
        for unit in self.units.values():
            self.coordinator.cancel(unit)

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


class StepTask:
    """The owner of a one-task step's task: hands its result to the flow run."""

    __slots__ = ("flow", "index", "started", "task_prefix")

    def __init__(self, flow: FlowRunUnit, index: int, task_prefix: str, started: float) -> None:
        self.flow = flow
        self.index = index
        self.task_prefix = task_prefix
        self.started = started

    def admit(self) -> bool:
        return False

    def on_result(self, task: Task, result: EventResult) -> None:
        self.flow._one_done(self, result)


class FlowMapUnit:
    """Many runs of one flow over zipped inputs: at most ``window`` flow runs in flight.

    It is a coordinator owner of sorts: ``admit`` starts flow runs while there is room;
    finished runs are kept until they can be handed out in input order.
    """

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
        streaming: bool,
    ) -> None:
        self.coordinator = coordinator
        self.program = program
        self.inputs: Iterator[tuple[Any, ...]] | None = inputs
        self.named = named
        self.window = window
        self.call_prefix = call_prefix
        self.streaming = streaming
        self.running: dict[int, FlowRunUnit] = {}
        self.done: dict[int, FlowRun] = {}
        self.next_index = 0
        self.admitted = 0
        self.stop_error: BaseException | None = None
        self.stopped_unit: FlowRunUnit | None = None

    def admit(self) -> bool:
        inputs = self.inputs
        if inputs is None:
            return False
        while len(self.running) + len(self.done) < self.window and self.stop_error is None:
            try:
                args = next(inputs)
            except StopIteration:
                self.inputs = None
                return False
            index = self.admitted
            self.admitted += 1
            unit = FlowRunUnit(
                self.coordinator,
                self.program,
                args,
                self.named,
                task_prefix=f"{self.call_prefix}{index}:",
                on_complete=partial(self._done, index),
                on_stop=self._stopped,
            )
            self.running[index] = unit
            unit.start()
        return self.stop_error is None

    def _done(self, index: int, run: FlowRun) -> None:
        self.running.pop(index, None)
        self.done[index] = run

    def _stopped(self, unit: FlowRunUnit) -> None:
        if self.stop_error is None:
            self.stop_error = unit.stop_error
            self.stopped_unit = unit

    def on_result(self, task: Task, result: EventResult) -> None:  # pragma: no cover
        raise AssertionError("a FlowMapUnit adds no tasks of its own")

    @property
    def finished(self) -> bool:
        return self.inputs is None and not self.running and not self.done

    def ordered(self) -> Iterator[FlowRun]:
        done = self.done
        while self.next_index in done:
            run = done.pop(self.next_index)
            self.next_index += 1
            yield run

    def raise_stop(self) -> None:
        unit = self.stopped_unit
        assert unit is not None
        for other in self.running.values():
            if other is not unit:
                other.cancel()
        unit.raise_stop()
