"""Declaring events: validation at class creation (SPEC §3, §4)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from event_pipeline import (
    EMPTY,
    EventBase,
    EventExecutionEvaluationState,
    ExecutorInitializerConfig,
    ImproperlyConfigured,
    RetryPolicy,
    Runner,
)


def declare(**attrs: Any) -> type[EventBase]:
    def process(self: EventBase, *args: Any) -> tuple[bool, Any]:
        return True, args

    return type("MyEvent", (EventBase,), {"process": process, **attrs})


BAD_DECLARATIONS = [
    ({"executor_config": {"max_wrokers": 2}}, "executor_config", "unknown key 'max_wrokers'"),
    ({"executor_config": {"max_workers": 0}}, "executor_config", "max_workers"),
    ({"executor_config": {"max_workers": "4"}}, "executor_config", "'4'"),
    ({"executor_config": {"max_workers": True}}, "executor_config", "True"),
    ({"executor_config": {"max_tasks_per_child": -1}}, "executor_config", "-1"),
    ({"executor_config": {"thread_name_prefix": 7}}, "executor_config", "7"),
    ({"executor_config": [("max_workers", 2)]}, "executor_config", "expected Executor"),
    ({"retry_policy": {"max_attempts": 0}}, "retry_policy", "max_attempts"),
    ({"retry_policy": {"max_attempts": 2.5}}, "retry_policy", "2.5"),
    ({"retry_policy": {"backoff_factor": -1}}, "retry_policy", "backoff_factor"),
    ({"retry_policy": {"max_backoff": -0.5}}, "retry_policy", "max_backoff"),
    ({"retry_policy": {"max_backoff": float("inf")}}, "retry_policy", "inf"),
    ({"retry_policy": {"retry_on_exceptions": [KeyboardInterrupt]}}, "retry_policy", "Keyboard"),
    ({"retry_policy": {"retry_on_exceptions": ["ValueError"]}}, "retry_policy", "'Value"),
    ({"retry_policy": {"retry_on_exceptions": ValueError}}, "retry_policy", "ValueError"),
    ({"retry_policy": {"retries": 3}}, "retry_policy", "unknown key 'retries'"),
    ({"retry_policy": 3}, "retry_policy", "3"),
    ({"executor": int}, "executor", "int"),
    ({"executor": "ThreadPoolExecutor"}, "executor", "'ThreadPoolExecutor'"),
    ({"execution_evaluation_state": "SUCCESS"}, "execution_evaluation_state", "'SUCCESS'"),
    ({"stop_on_exception": "yes"}, "stop_on_exception", "'yes'"),
]


@pytest.mark.parametrize(
    ("attrs", "attribute", "shown"), BAD_DECLARATIONS, ids=lambda v: repr(v)[:40]
)
def test_bad_declaration_fails_at_class_creation(
    attrs: dict[str, Any], attribute: str, shown: str
) -> None:
    """The error names the class, the attribute and the offending value."""
    with pytest.raises(ImproperlyConfigured) as info:
        declare(**attrs)
    message = str(info.value)
    assert message.startswith(f"MyEvent.{attribute}: ")
    assert shown in message


def test_improperly_configured_is_type_and_value_error() -> None:
    """Existing ``except TypeError``/``except ValueError`` clauses catch it."""
    assert issubclass(ImproperlyConfigured, TypeError)
    assert issubclass(ImproperlyConfigured, ValueError)


def test_config_beside_executor_instance() -> None:
    """A non-empty executor_config next to an executor instance is a mistake."""
    pool = ThreadPoolExecutor(max_workers=1)
    try:
        with pytest.raises(ImproperlyConfigured, match=r"MyEvent\.executor_config: .*instance"):
            declare(executor=pool, executor_config={"max_workers": 2})
        declare(executor=pool, executor_config={})  # empty is fine
    finally:
        pool.shutdown()


@pytest.mark.parametrize("name", ["run", "map", "imap", "func"])
def test_reserved_names(name: str) -> None:
    """A subclass may not define run, map, imap or func."""
    with pytest.raises(ImproperlyConfigured, match=rf"MyEvent\.{name}: '{name}' is reserved"):
        declare(**{name: lambda self: None})


def test_process_is_abstract() -> None:
    """An event without ``process`` cannot be instantiated."""

    class NoProcess(EventBase):
        pass

    with pytest.raises(TypeError):
        NoProcess()  # type: ignore[abstract]


def test_settings_are_inherited() -> None:
    """Settings are ordinary class attributes: subclasses inherit them."""
    parent = declare(executor=ThreadPoolExecutor, retry_policy={"max_attempts": 2})
    child = type("Child", (parent,), {})
    assert child.executor is ThreadPoolExecutor
    assert child.retry_policy == {"max_attempts": 2}


def test_reassigned_attribute_is_validated_on_next_run() -> None:
    """An attribute changed after class creation is checked when the event next runs."""
    event = declare()
    event.retry_policy = {"max_attempts": -1}
    with Runner() as runner, pytest.raises(ImproperlyConfigured, match=r"MyEvent\.retry_policy"):
        runner.run(event)
    event.retry_policy = {"max_attempts": 2}
    with Runner() as runner:
        assert runner.run(event).success


def test_dict_config_mutated_in_place_is_revalidated() -> None:
    """A dict setting changed in place counts as changed."""
    config: dict[str, Any] = {"max_workers": 2}
    event = declare(executor=ThreadPoolExecutor, executor_config=config)
    config["max_workers"] = 0
    with Runner() as runner, pytest.raises(ImproperlyConfigured, match="max_workers"):
        runner.run(event)


def test_config_objects_validate_on_construction() -> None:
    """ExecutorInitializerConfig and RetryPolicy check their fields themselves."""
    with pytest.raises(ImproperlyConfigured, match="max_workers must be an int greater than 0"):
        ExecutorInitializerConfig(max_workers=0)
    with pytest.raises(ImproperlyConfigured, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ImproperlyConfigured, match="retry_on_exceptions"):
        RetryPolicy(retry_on_exceptions=[object])  # type: ignore[list-item]


def test_config_defaults() -> None:
    """Defaults: every executor field EMPTY; RetryPolicy 5 attempts, 0.05 s, 100 s, any error."""
    config = ExecutorInitializerConfig()
    assert (config.max_workers, config.max_tasks_per_child, config.thread_name_prefix) == (
        EMPTY,
        EMPTY,
        EMPTY,
    )
    assert RetryPolicy() == RetryPolicy(5, 0.05, 100.0, [])
    policy = RetryPolicy(retry_on_exceptions=[ConnectionError])
    assert policy.retry_on_exceptions == [ConnectionError]
    assert RetryPolicy().retry_on_exceptions == []
    assert repr(EMPTY) == "EMPTY" and not EMPTY


def test_dict_forms_are_equivalent() -> None:
    """Every dict key is optional; a dict means the same as the object."""
    from event_pipeline._event import settings_of

    event = declare(
        executor=ThreadPoolExecutor,
        executor_config={"max_workers": 3},
        retry_policy={"backoff_factor": 0.5},
        execution_evaluation_state=EventExecutionEvaluationState.FAILURE_FOR_PARTIAL_ERROR,
    )
    settings = settings_of(event)
    assert settings.executor_config == ExecutorInitializerConfig(max_workers=3)
    assert settings.retry_policy == RetryPolicy(backoff_factor=0.5)


def test_executor_kwargs_follow_the_signature() -> None:
    """Only set fields the executor accepts are passed; max_workers defaults to the CPUs."""
    from concurrent.futures import ProcessPoolExecutor

    from event_pipeline import DefaultExecutor
    from event_pipeline._config import set_fields
    from event_pipeline._executors import available_cpus, executor_kwargs

    full = ExecutorInitializerConfig(max_workers=3, max_tasks_per_child=5, thread_name_prefix="p")
    assert executor_kwargs(ThreadPoolExecutor, full) == {
        "max_workers": 3,
        "thread_name_prefix": "p",
    }
    assert executor_kwargs(ProcessPoolExecutor, full) == {
        "max_workers": 3,
        "max_tasks_per_child": 5,
    }
    assert executor_kwargs(ThreadPoolExecutor, ExecutorInitializerConfig()) == {
        "max_workers": available_cpus()
    }
    assert executor_kwargs(DefaultExecutor, full) == {}

    class Anything(DefaultExecutor):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__()

    assert executor_kwargs(Anything, full) == set_fields(full)
