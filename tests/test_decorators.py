"""Function-based events (SPEC §5)."""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from event_pipeline import (
    EventBase,
    EventExecutionEvaluationState,
    ExecutorInitializerConfig,
    ImproperlyConfigured,
    RetryPolicy,
    Runner,
)
from event_pipeline._event import settings_of
from event_pipeline.decorators import event


@event
def bare(x: int) -> tuple[bool, Any]:
    """Doubles x."""
    return True, 2 * x


@event(
    executor=ThreadPoolExecutor,
    max_workers=3,
    thread_name_prefix="configured",
    retry_policy={"max_attempts": 2},
    stop_on_exception=True,
    execution_evaluation_state=EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS,
)
def configured(x: int) -> tuple[bool, Any]:
    return x > 0, x


def test_bare_decorator_makes_an_event_class() -> None:
    """The class is an EventBase subclass named after the function, with its metadata."""
    assert isinstance(bare, type) and issubclass(bare, EventBase)
    assert bare.__name__ == "bare"
    assert bare.__qualname__ == "bare"
    assert bare.__module__ == __name__
    assert bare.__doc__ == "Doubles x."
    assert bare.func(4) == (True, 8)  # type: ignore[attr-defined]


def test_empty_parentheses_work_too() -> None:
    """``@event()`` is the same as bare ``@event``."""

    @event()
    def local(x: int) -> tuple[bool, Any]:
        return True, x

    with Runner() as runner:
        assert runner.run(local, 5).results[0].content == 5


def test_arguments_become_settings() -> None:
    """Loose config arguments make the executor_config; the rest map to attributes."""
    settings = settings_of(configured)
    assert settings.executor is ThreadPoolExecutor
    assert settings.executor_config == ExecutorInitializerConfig(
        max_workers=3, thread_name_prefix="configured"
    )
    assert settings.retry_policy == RetryPolicy(max_attempts=2)
    assert settings.stop_on_exception is True
    assert settings.execution_evaluation_state is (
        EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS
    )


def test_runs_through_runner_and_class_methods() -> None:
    """The class runs like any event; kwargs reach the function."""
    with Runner() as runner:
        run = runner.map(bare, [1, 2, 3])
    assert [r.content for r in run.results] == [2, 4, 6]
    assert run.event_name == "bare"
    assert bare.run(x=5).results[0].content == 10


def test_pickles_by_reference() -> None:
    """The module-level name refers to the class, so it pickles by reference."""
    assert pickle.loads(pickle.dumps(bare)) is bare


def test_executor_config_and_loose_arguments_conflict() -> None:
    """executor_config together with max_workers & co is an error."""
    with pytest.raises(ImproperlyConfigured, match="either executor_config or max_workers"):

        @event(executor_config={"max_workers": 2}, max_workers=2)
        def both() -> tuple[bool, Any]:
            return True, None


def test_bad_settings_name_the_function() -> None:
    """Validation messages name the function-made class and the attribute."""
    with pytest.raises(ImproperlyConfigured, match=r"^wrong\.executor_config: max_workers"):

        @event(max_workers=0)
        def wrong() -> tuple[bool, Any]:
            return True, None


def test_decorating_a_non_callable_fails() -> None:
    """Only functions can be decorated."""
    with pytest.raises(TypeError, match="decorates a function"):
        event(42)  # type: ignore[call-overload]
