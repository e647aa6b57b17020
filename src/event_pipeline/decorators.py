"""``@event``: turn a function into an event class."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from ._config import ExecutorInitializerConfig, RetryPolicy
from ._evaluation import EventExecutionEvaluationState
from ._event import EventBase
from ._sentinel import EMPTY, EmptyType
from .exceptions import ImproperlyConfigured

__all__ = ["event"]

_Function = Callable[..., tuple[bool, Any]]

_P = ParamSpec("_P")
_R = TypeVar("_R", bound="tuple[bool, Any]")

if TYPE_CHECKING:

    class FunctionEvent(EventBase, Generic[_P, _R]):
        """What ``@event`` returns, as type checkers see it: an event whose ``func`` keeps
        the decorated function's signature, so ``double.func(21)`` is checked like a call
        of ``double`` before decoration. It exists only for type checkers: at run time the
        class made by ``@event`` subclasses :class:`EventBase` directly.
        """

        func: Callable[_P, _R]


def _process(self: EventBase, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    result: tuple[bool, Any] = type(self).func(*args, **kwargs)  # type: ignore[attr-defined]
    return result


async def _process_async(self: EventBase, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    result: tuple[bool, Any] = await type(self).func(*args, **kwargs)  # type: ignore[attr-defined]
    return result


def _make_event(function: _Function, settings: dict[str, Any]) -> type[EventBase]:
    is_async = inspect.iscoroutinefunction(function)
    namespace: dict[str, Any] = {
        "__module__": function.__module__,
        "__qualname__": function.__qualname__,
        "__doc__": function.__doc__,
        "_event_pipeline_function": True,
        "func": staticmethod(function),
        "process": _process_async if is_async else _process,
        **settings,
    }
    return type(function.__name__, (EventBase,), namespace)


@overload
def event(function: Callable[_P, _R], /) -> type[FunctionEvent[_P, _R]]: ...


@overload
def event(
    *,
    executor: type[Executor] | Executor | EmptyType = ...,
    max_workers: int | EmptyType = ...,
    max_tasks_per_child: int | EmptyType = ...,
    thread_name_prefix: str | EmptyType = ...,
    stop_on_exception: bool | EmptyType = ...,
    timeout: float | EmptyType | None = ...,
    retry_policy: RetryPolicy | dict[str, Any] | EmptyType | None = ...,
    executor_config: ExecutorInitializerConfig | dict[str, Any] | EmptyType = ...,
    execution_evaluation_state: EventExecutionEvaluationState | EmptyType = ...,
) -> Callable[[Callable[_P, _R]], type[FunctionEvent[_P, _R]]]: ...


def event(
    function: _Function | None = None,
    /,
    *,
    executor: type[Executor] | Executor | EmptyType = EMPTY,
    max_workers: int | EmptyType = EMPTY,
    max_tasks_per_child: int | EmptyType = EMPTY,
    thread_name_prefix: str | EmptyType = EMPTY,
    stop_on_exception: bool | EmptyType = EMPTY,
    timeout: float | EmptyType | None = EMPTY,
    retry_policy: RetryPolicy | dict[str, Any] | EmptyType | None = EMPTY,
    executor_config: ExecutorInitializerConfig | dict[str, Any] | EmptyType = EMPTY,
    execution_evaluation_state: EventExecutionEvaluationState | EmptyType = EMPTY,
) -> type[EventBase] | Callable[[_Function], type[EventBase]]:
    """Make an :class:`EventBase` subclass whose ``process`` calls the decorated function.

    Works bare (``@event``) and with arguments (``@event(executor=ThreadPoolExecutor)``).
    The class takes the function's name, module, qualified name and docstring, so the
    module-level name now refers to the class, which process pools pickle by reference.
    The function stays reachable as the class's ``func`` attribute. Arguments left out
    keep :class:`EventBase`'s defaults.

    Args:
        function: the function, when used bare.
        executor: the executor class or instance.
        max_workers: shorthand for ``executor_config`` field of the same name.
        max_tasks_per_child: shorthand for ``executor_config`` field of the same name.
        thread_name_prefix: shorthand for ``executor_config`` field of the same name.
        stop_on_exception: stop the run at the first task that ends with an exception.
        timeout: seconds allowed to one attempt, or ``None``.
        retry_policy: a :class:`RetryPolicy`, an equivalent dict, or ``None``.
        executor_config: an :class:`ExecutorInitializerConfig` or an equivalent dict.
        execution_evaluation_state: how task outcomes decide the event's success.

    Returns:
        The event class, or a decorator that makes it.

    Raises:
        ImproperlyConfigured: a setting is invalid, or ``executor_config`` was given
            together with ``max_workers``, ``max_tasks_per_child`` or ``thread_name_prefix``.
    """
    loose = {
        "max_workers": max_workers,
        "max_tasks_per_child": max_tasks_per_child,
        "thread_name_prefix": thread_name_prefix,
    }
    loose = {name: value for name, value in loose.items() if value is not EMPTY}
    settings: dict[str, Any] = {
        name: value
        for name, value in {
            "executor": executor,
            "stop_on_exception": stop_on_exception,
            "timeout": timeout,
            "retry_policy": retry_policy,
            "execution_evaluation_state": execution_evaluation_state,
        }.items()
        if value is not EMPTY
    }

    def decorate(func: _Function) -> type[EventBase]:
        if not callable(func):
            raise TypeError(f"@event decorates a function, got {func!r}")
        if executor_config is not EMPTY and loose:
            raise ImproperlyConfigured(
                f"{func.__name__}: pass either executor_config or "
                f"{', '.join(loose)}, not both"
            )
        if executor_config is not EMPTY:
            settings["executor_config"] = executor_config
        elif loose:
            settings["executor_config"] = loose
        return _make_event(func, dict(settings))

    if function is not None:
        return decorate(function)
    return decorate
