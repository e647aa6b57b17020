"""Hooks (SPEC §13): Retry, check_hook, the process-wide registry and the resolved Hooks plan."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pickle
import threading
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from event_pipeline._hooks import (
    HOOK_METHODS,
    Hooks,
    Retry,
    add_hook,
    check_hook,
    hook_generation,
    remove_hook,
    resolve_hooks,
)
from event_pipeline._results import EventResult, EventRun

TIMEOUT = 10


class Recorder:
    """A hook with all five methods, recording each call as (method, argument)."""

    def __init__(self, label: str = "recorder") -> None:
        self.label = label
        self.calls: list[tuple[str, object]] = []

    def __repr__(self) -> str:
        return f"Recorder({self.label!r})"

    def on_retry(self, retry: Retry) -> None:
        self.calls.append(("on_retry", retry))

    def on_result(self, result: EventResult) -> None:
        self.calls.append(("on_result", result))

    def on_run(self, run: EventRun) -> None:
        self.calls.append(("on_run", run))

    def on_step(self, step: object) -> None:
        self.calls.append(("on_step", step))

    def on_flow(self, run: object) -> None:
        self.calls.append(("on_flow", run))


class ResultsOnly:
    """A hook with one method."""

    def __init__(self) -> None:
        self.results: list[EventResult] = []

    def on_result(self, result: EventResult) -> None:
        self.results.append(result)


class Broken(Recorder):
    """A hook whose ``on_result`` raises every time; its other methods record."""

    def on_result(self, result: EventResult) -> None:
        self.calls.append(("on_result", result))
        raise RuntimeError("hook bug")


class NoMethods:
    """Not a hook: none of the five methods."""


class NotCallable:
    """Not a hook: the names are there, but not callable."""

    on_result = 42
    on_run = None


@pytest.fixture
def add() -> Iterator[Callable[[object], object]]:
    """add_hook, undone after the test for every hook still registered."""
    added: list[object] = []

    def _add(hook: object) -> object:
        add_hook(hook)
        added.append(hook)
        return hook

    yield _add
    for hook in added:
        with contextlib.suppress(ValueError):  # the test removed it itself
            remove_hook(hook)


def _result(task_id: str = "1:0", error: bool = False) -> EventResult:
    exc = ValueError("bad") if error else None
    return EventResult(error, exc if error else 7, exc, task_id, "Fetch", 1, 0.25)


def _retry(attempt: int = 1) -> Retry:
    return Retry("Fetch", "1:0", attempt, ValueError("flaky"), 0.5)


def _emit_all(hooks: Hooks) -> list[tuple[str, object]]:
    """Call each emit once; return the (method, argument) pairs sent."""
    sent: list[tuple[str, object]] = [
        ("on_retry", _retry()),
        ("on_result", _result()),
        ("on_run", EventRun("Fetch", True, [_result()], 0.3)),
        ("on_step", SimpleNamespace(name="Fetch")),
        ("on_flow", SimpleNamespace(success=True)),
    ]
    for name, argument in sent:
        getattr(hooks, "emit_" + name.removeprefix("on_"))(argument)
    return sent


# Retry


def test_retry_fields() -> None:
    """Retry holds the event name, task id, 1-based failed attempt, exception and delay."""
    exc = ValueError("flaky")
    retry = Retry("Fetch", "3:12", 2, exc, 0.25)
    assert (retry.event_name, retry.task_id, retry.attempt, retry.exception, retry.delay) == (
        "Fetch",
        "3:12",
        2,
        exc,
        0.25,
    )


def test_retry_is_frozen_and_slotted() -> None:
    """Retry cannot be changed and has no per-instance dict."""
    retry = _retry()
    with pytest.raises(dataclasses.FrozenInstanceError):
        retry.attempt = 5  # type: ignore[misc]
    assert not hasattr(retry, "__dict__")


def test_retry_pickles() -> None:
    """A Retry survives pickling with every field."""
    retry = Retry("Fetch", "1:0", 3, KeyError("k"), 1.5)
    copy = pickle.loads(pickle.dumps(retry))
    assert (copy.event_name, copy.task_id, copy.attempt, copy.delay) == ("Fetch", "1:0", 3, 1.5)
    assert type(copy.exception) is KeyError
    assert copy.exception.args == ("k",)


def test_retry_repr_is_readable() -> None:
    """The repr names the event, task, attempt, exception and delay."""
    text = repr(Retry("Fetch", "1:4", 2, ValueError("flaky"), 0.5))
    assert (
        text
        == "Retry(Fetch task 1:4: attempt 2 failed with ValueError('flaky'), next in 0.500000s)"
    )


# check_hook


def test_check_hook_returns_a_hook() -> None:
    """An object with any one of the methods is a hook, returned as it is."""
    hook = ResultsOnly()
    assert check_hook(hook) is hook
    everything = Recorder()
    assert check_hook(everything) is everything


def test_check_hook_accepts_callable_attributes() -> None:
    """A method may be any callable attribute, not only a def in the class."""
    hook = SimpleNamespace(on_run=print)
    assert check_hook(hook) is hook


def test_check_hook_rejects_a_class() -> None:
    """A class instead of an instance is a TypeError naming the class and suggesting a call."""
    with pytest.raises(
        TypeError, match=r"instance, not a class: got .*Recorder \(did you mean Recorder\(\)\?\)"
    ):
        check_hook(Recorder)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("on_result", "'on_result' (str)"),
        (3, "3 (int)"),
        (2.5, "2.5 (float)"),
        (None, "None (NoneType)"),
    ],
)
def test_check_hook_rejects_plain_values(value: object, shown: str) -> None:
    """A string, a number or None is a TypeError naming the value and listing the methods."""
    with pytest.raises(TypeError) as info:
        check_hook(value)
    message = str(info.value)
    assert shown in message
    assert all(name in message for name in HOOK_METHODS)


@pytest.mark.parametrize("hook", [NoMethods(), NotCallable(), lambda result: None])
def test_check_hook_rejects_objects_without_methods(hook: object) -> None:
    """An object without any of the five callable methods is a TypeError naming it."""
    with pytest.raises(TypeError, match="has none of the hook methods") as info:
        check_hook(hook)
    assert type(hook).__qualname__ in str(info.value)


def test_check_hook_survives_a_broken_repr() -> None:
    """A hook whose repr raises is still named in the error."""

    class Ugly:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(TypeError, match="Ugly object at"):
        check_hook(Ugly())


# The registry


def test_add_and_remove_hook(add: Callable[[object], object]) -> None:
    """add_hook registers a hook for every new plan; remove_hook takes it away."""
    hook = add(Recorder())
    assert hook in resolve_hooks([]).hooks
    remove_hook(hook)
    assert hook not in resolve_hooks([]).hooks


def test_adding_twice_adds_once(add: Callable[[object], object]) -> None:
    """The same hook added twice is registered (and called) once; one remove takes it away."""
    hook = Recorder()
    add(hook)
    generation = hook_generation()
    add(hook)
    assert hook_generation() == generation
    resolve_hooks([]).emit_result(_result())
    assert len(hook.calls) == 1
    remove_hook(hook)
    with pytest.raises(ValueError):
        remove_hook(hook)


def test_remove_unknown_hook_names_it() -> None:
    """Removing a hook that is not registered is a ValueError naming it."""
    with pytest.raises(
        ValueError, match=r"Recorder\('stranger'\) \(Recorder\) is not a registered hook"
    ):
        remove_hook(Recorder("stranger"))


def test_add_hook_checks_the_hook() -> None:
    """add_hook refuses a non-hook with TypeError and registers nothing."""
    generation = hook_generation()
    with pytest.raises(TypeError, match="instance, not a class"):
        add_hook(Recorder)
    with pytest.raises(TypeError, match="'oops'"):
        add_hook("oops")
    assert hook_generation() == generation


def test_every_change_moves_the_generation(add: Callable[[object], object]) -> None:
    """Each add and each remove changes the generation number."""
    hook = Recorder()
    before = hook_generation()
    add(hook)
    middle = hook_generation()
    remove_hook(hook)
    after = hook_generation()
    assert before != middle != after


def test_registry_is_thread_safe() -> None:
    """Hooks added and removed from many threads at once all land, and all leave."""
    threads_count, per_thread = 8, 50
    barrier = threading.Barrier(threads_count)
    hooks = [[ResultsOnly() for _ in range(per_thread)] for _ in range(threads_count)]
    before = hook_generation()
    seen: list[int] = []

    def churn(mine: list[ResultsOnly]) -> None:
        barrier.wait(timeout=TIMEOUT)
        for hook in mine:
            add_hook(hook)
        seen.append(sum(1 for hook in resolve_hooks([]).hooks if hook in mine))
        for hook in mine:
            remove_hook(hook)

    threads = [threading.Thread(target=churn, args=(mine,)) for mine in hooks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT)
    assert seen == [per_thread] * threads_count
    assert hook_generation() == before + 2 * threads_count * per_thread
    remaining = resolve_hooks([]).hooks
    assert not any(hook in remaining for mine in hooks for hook in mine)


# The Hooks plan


def test_no_hooks_means_empty_tuples() -> None:
    """With no hooks every kind is an empty tuple and the plan is false."""
    hooks = resolve_hooks([])
    assert not hooks
    for name in HOOK_METHODS:
        assert getattr(hooks, name) == ()
    _emit_all(hooks)  # nothing to call, nothing fails


def test_only_present_methods_are_resolved() -> None:
    """A hook contributes only the methods it has; the other kinds stay empty."""
    hook = ResultsOnly()
    hooks = resolve_hooks([hook])
    assert hooks
    assert hooks.on_result == (hook.on_result,)
    assert hooks.on_retry == hooks.on_run == hooks.on_step == hooks.on_flow == ()


def test_emits_reach_every_method() -> None:
    """Each emit calls the matching method of every hook, with the object given."""
    first, second = Recorder("first"), Recorder("second")
    sent = _emit_all(resolve_hooks([first, second]))
    assert first.calls == sent
    assert second.calls == sent


def test_local_hooks_come_before_global_ones_and_repeats_count_once(
    add: Callable[[object], object],
) -> None:
    """A runner's own hooks are called first, then the process-wide ones; a hook in both, once."""
    order: list[str] = []
    local = SimpleNamespace(on_result=lambda result: order.append("local"))
    shared = SimpleNamespace(on_result=lambda result: order.append("shared"))
    glob = SimpleNamespace(on_result=lambda result: order.append("global"))
    add(glob)
    add(shared)
    resolve_hooks([local, shared]).emit_result(_result())
    assert order == ["local", "shared", "global"]


def test_resolve_checks_local_hooks() -> None:
    """A runner's hooks are checked when resolved: a non-hook element is a TypeError."""
    with pytest.raises(TypeError, match="instance, not a class"):
        resolve_hooks([Recorder(), Recorder])
    with pytest.raises(TypeError, match="sequence of hooks"):
        resolve_hooks("on_result")


def test_repr_counts_methods() -> None:
    """The plan's repr says how many hooks and methods of each kind it holds."""
    hooks = resolve_hooks([Recorder(), ResultsOnly()])
    assert repr(hooks) == (
        "Hooks(2 hooks: on_retry=1, on_result=2, on_run=1, on_step=1, on_flow=1)"
    )


# A hook that raises


def test_raising_hook_is_logged_once_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """A raising hook is logged once at ERROR with its traceback and never called again."""
    broken, healthy = Broken("broken"), Recorder("healthy")
    hooks = resolve_hooks([broken, healthy])
    with caplog.at_level(logging.ERROR, logger="event_pipeline"):
        first = _emit_all(hooks)
        second = _emit_all(hooks)
    # The failing call happened; after it, none of the broken hook's methods are called.
    assert broken.calls == first[:2]
    assert healthy.calls == first + second
    records = [r for r in caplog.records if r.name == "event_pipeline"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert "Recorder('broken') (Broken)" in record.getMessage()
    assert "on_result" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert broken not in hooks.hooks
    assert hooks.on_retry == (healthy.on_retry,)


def test_hooks_after_a_raising_one_get_the_same_call() -> None:
    """The hooks after a raising one still receive the call that raised."""
    broken, healthy = Broken("broken"), ResultsOnly()
    hooks = resolve_hooks([broken, healthy])
    result = _result()
    hooks.emit_result(result)
    assert healthy.results == [result]


def test_dropping_is_per_plan(caplog: pytest.LogCaptureFixture) -> None:
    """A hook dropped by one runner's plan is still called by another runner's."""
    broken = Broken("shared")
    one, other = resolve_hooks([broken]), resolve_hooks([broken])
    with caplog.at_level(logging.ERROR, logger="event_pipeline"):
        one.emit_result(_result())
        other.emit_run(EventRun("Fetch", True, [], 0.0))
    assert [name for name, _ in broken.calls] == ["on_result", "on_run"]


def test_base_exceptions_propagate() -> None:
    """KeyboardInterrupt from a hook is not swallowed, and the hook is not dropped."""

    class Interrupting:
        def on_result(self, result: EventResult) -> None:
            raise KeyboardInterrupt

    hook = Interrupting()
    hooks = resolve_hooks([hook])
    with pytest.raises(KeyboardInterrupt):
        hooks.emit_result(_result())
    assert hook in hooks.hooks


def test_concurrent_failures_log_once(caplog: pytest.LogCaptureFixture) -> None:
    """Threads hitting the same raising hook at once produce one log record, not one each."""
    threads_count = 8
    barrier = threading.Barrier(threads_count)

    class Racing:
        def on_result(self, result: EventResult) -> None:
            barrier.wait(timeout=TIMEOUT)
            raise RuntimeError("racing")

    hooks = resolve_hooks([Racing()])

    def call() -> None:
        # Every thread is inside the hook (at the barrier) before any failure drops it.
        hooks.emit_result(_result())

    with caplog.at_level(logging.ERROR, logger="event_pipeline"):
        threads = [threading.Thread(target=call) for _ in range(threads_count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=TIMEOUT)
    assert len([r for r in caplog.records if r.name == "event_pipeline"]) == 1
    assert not hooks


# Resolution and its cache


def test_resolve_returns_the_same_plan_while_nothing_changes() -> None:
    """With no add or remove in between, resolving again returns the previous plan itself."""
    hooks = resolve_hooks([Recorder()])
    assert resolve_hooks([], hooks) is hooks
    assert resolve_hooks([], resolve_hooks([], hooks)) is hooks


def test_resolve_notices_add_and_remove(add: Callable[[object], object]) -> None:
    """A plan resolved again after add_hook calls the new hook; after remove_hook, not any more."""
    local = Recorder("local")
    plan = resolve_hooks([local])
    late = Recorder("late")
    add(late)
    plan = resolve_hooks([local], plan)
    assert plan.hooks == (local, late)
    remove_hook(late)
    plan = resolve_hooks([local], plan)
    assert plan.hooks == (local,)


def test_resolve_keeps_dropped_hooks_out(
    add: Callable[[object], object], caplog: pytest.LogCaptureFixture
) -> None:
    """A hook a runner dropped stays dropped when its plan is rebuilt, even if added globally."""
    broken = Broken("broken")
    plan = resolve_hooks([broken])
    with caplog.at_level(logging.ERROR, logger="event_pipeline"):
        plan.emit_result(_result())
    add(broken)
    other = Recorder("other")
    add(other)
    plan = resolve_hooks([broken], plan)
    assert plan.hooks == (other,)
    # A fresh runner has not dropped it.
    assert broken in resolve_hooks([]).hooks


def _noop(argument: Any) -> None:
    return None


def test_plan_methods_can_be_called_directly() -> None:
    """The tuples hold plain callables a scheduler may call itself."""
    hook = SimpleNamespace(on_step=_noop, on_flow=_noop)
    hooks = resolve_hooks([hook])
    assert hooks.on_step == (_noop,)
    assert hooks.on_flow == (_noop,)
