"""What an event *is*: a class with a ``process`` method and declarative run settings.

How an event is run lives in ``_runner``; this module only knows the contract and checks
the declaration, at class creation and again whenever a setting was reassigned since.
"""

from __future__ import annotations

import abc
import difflib
import inspect
import math
import warnings
import weakref
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from ._config import (
    ExecutorInitializerConfig,
    RetryPolicy,
    coerce_executor_config,
    coerce_retry_policy,
    set_fields,
)
from ._evaluation import EventExecutionEvaluationState
from ._executors import DefaultExecutor
from .exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from ._results import EventResult, EventRun
    from ._runner import Runner

__all__ = ["EventBase", "EventSettings", "settings_of"]

RESERVED_NAMES = ("run", "map", "imap", "func")

#: The class attributes that declare how an event runs, in the order they are checked.
SETTING_NAMES = (
    "executor",
    "executor_config",
    "retry_policy",
    "execution_evaluation_state",
    "stop_on_exception",
    "timeout",
)

# Assigning one of these on an instance changes nothing (each attempt gets a fresh instance
# and the settings are read from the class), so EventBase.__setattr__ warns about it.
_SETTINGS = frozenset(SETTING_NAMES)

# Names a misspelt class attribute is compared with.
_SUGGESTED_NAMES = SETTING_NAMES

# Slips difflib's ratio misses (no generic words: ``retries = 3`` may be the user's own), and
# executor_config's fields written on the class as @event takes them.
_KNOWN_SLIPS = {
    "evaluation_state": "execution_evaluation_state",
    "execution_state": "execution_evaluation_state",
}
_CONFIG_FIELDS = ("max_workers", "max_tasks_per_child", "thread_name_prefix")

# Event classes already warned about a setting assigned on an instance: once is enough.
_warned_instance_settings: weakref.WeakSet[type[EventBase]] = weakref.WeakSet()
# Bound once: a global lookup is cheaper than ``object.__setattr__`` or ``super()`` per call.
_object_setattr = object.__setattr__


class EventSettings(NamedTuple):
    """An event's run settings, validated and normalised."""

    executor: type[Executor] | Executor
    executor_config: ExecutorInitializerConfig
    retry_policy: RetryPolicy | None
    #: ``None`` when the task never retries; else the policy's exception classes.
    retry_on: tuple[type[BaseException], ...] | None
    execution_evaluation_state: EventExecutionEvaluationState
    stop_on_exception: bool
    #: Seconds allowed to one attempt, or None.
    timeout: float | None
    #: ``process`` is a coroutine function: the event runs on an AsyncExecutor.
    is_async: bool
    #: The value of the settings generation these were validated in.
    generation: int
    #: Copies of the settings that are dicts, by name: a dict can change in place.
    dict_snapshots: tuple[tuple[str, dict[Any, Any]], ...]


# Bumped whenever a setting is assigned on any event class after its creation, so a cached
# validation is known to be current with one integer comparison.
_generation = 0


class _EventMeta(abc.ABCMeta):
    """Notices reassigned settings, so they are validated again before the next run."""

    def __setattr__(cls, name: str, value: Any) -> None:
        global _generation
        super().__setattr__(name, value)
        if name in SETTING_NAMES:
            _generation += 1

    def __delattr__(cls, name: str) -> None:
        global _generation
        super().__delattr__(name)
        if name in SETTING_NAMES:
            _generation += 1


def _validate(cls: type[EventBase]) -> EventSettings:
    raw = [getattr(cls, name) for name in SETTING_NAMES]
    executor, config_value, policy_value, state, stop, timeout = raw
    name = cls.__name__
    is_async = inspect.iscoroutinefunction(getattr(cls, "process", None))
    executor = _check_executor(cls, executor, is_async)
    config = coerce_executor_config(config_value, f"{name}.executor_config")
    if not isinstance(executor, type) and set_fields(config):
        raise ImproperlyConfigured(
            f"{name}.executor_config: {config!r} cannot configure the executor instance "
            f"{executor!r}; configure the instance itself, or set executor to its class"
        )
    policy = coerce_retry_policy(policy_value, f"{name}.retry_policy")
    if not isinstance(state, EventExecutionEvaluationState):
        raise ImproperlyConfigured(
            f"{name}.execution_evaluation_state: expected an EventExecutionEvaluationState "
            f"member, got {state!r}"
        )
    if not isinstance(stop, bool):
        raise ImproperlyConfigured(f"{name}.stop_on_exception: expected a bool, got {stop!r}")
    timeout = check_timeout(timeout, f"{name}.timeout")
    if timeout is not None and isinstance(executor, type) and not enforces_timeout(executor):
        raise ImproperlyConfigured(
            f"{name}.timeout: {timeout!r} cannot be enforced on {executor.__name__}; "
            f"{TIMEOUT_EXECUTORS}"
        )
    retry_on = None
    if policy is not None and policy.max_attempts > 1:
        retry_on = tuple(policy.retry_on_exceptions)
    snapshots = tuple(
        (name, dict(value))
        for name, value in zip(SETTING_NAMES, raw, strict=True)
        if isinstance(value, dict)
    )
    return EventSettings(
        executor, config, policy, retry_on, state, stop, timeout, is_async, _generation,
        snapshots,
    )


TIMEOUT_EXECUTORS = (
    "timeouts are enforced on AsyncExecutor, ThreadPoolExecutor and ProcessPoolExecutor "
    "(classes the runner builds)"
)


def enforces_timeout(executor: type[Executor] | Executor) -> bool:
    """Whether the runner can end an attempt at its deadline on ``executor``."""
    from ._async import AsyncExecutor
    from ._executors import is_process_pool

    if isinstance(executor, type):
        return issubclass(executor, (AsyncExecutor, ThreadPoolExecutor)) or is_process_pool(
            executor
        )
    return isinstance(executor, AsyncExecutor)


def check_timeout(value: object, where: str) -> float | None:
    """``value`` as a number of seconds allowed to one attempt, or None."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ImproperlyConfigured(
            f"{where}: expected a positive number of seconds or None, got {value!r}"
        )
    return float(value)


def _check_executor(
    cls: type[EventBase], executor: object, is_async: bool
) -> type[Executor] | Executor:
    from ._async import AsyncExecutor

    name = cls.__name__
    if isinstance(executor, type):
        if not issubclass(executor, Executor):
            raise ImproperlyConfigured(
                f"{name}.executor: expected an Executor subclass or instance, "
                f"got the class {executor!r}"
            )
    elif not isinstance(executor, Executor):
        raise ImproperlyConfigured(
            f"{name}.executor: expected an Executor subclass or instance, got {executor!r}"
        )
    on_loop = (
        issubclass(executor, AsyncExecutor)
        if isinstance(executor, type)
        else isinstance(executor, AsyncExecutor)
    )
    if is_async and not on_loop:
        own = [klass for klass in cls.__mro__ if klass not in (EventBase, object)]
        declared = any("executor" in klass.__dict__ for klass in own)
        if not declared:
            return AsyncExecutor  # the default executor of an async event
        raise ImproperlyConfigured(
            f"{name}.executor: {executor!r} cannot run an async def process; async events "
            f"run on AsyncExecutor (leave executor unset, or set it to AsyncExecutor)"
        )
    if on_loop and not is_async:
        raise ImproperlyConfigured(
            f"{name}.executor: {executor!r} runs coroutines, but {name}.process is not "
            f"async def; use another executor, or make process a coroutine function"
        )
    return executor


def _check_misspelt_settings(cls: type[EventBase]) -> None:
    """Fail on a public class attribute whose name is a near miss of a setting's.

    Such an attribute would otherwise be ignored in silence: ``retry_polciy = {...}`` runs
    with no retries at all.
    """
    for name in cls.__dict__:
        if name.startswith("_") or name in _SUGGESTED_NAMES:
            continue
        if name in _CONFIG_FIELDS:
            value = cls.__dict__[name]
            raise ImproperlyConfigured(
                f"{cls.__name__}.{name}: not an event setting; did you mean "
                f"executor_config = {{{name!r}: {value!r}}}?"
            )
        suggestion = _KNOWN_SLIPS.get(name.lower())
        if suggestion is None:
            close = difflib.get_close_matches(name.lower(), _SUGGESTED_NAMES, n=1, cutoff=0.8)
            suggestion = close[0] if close else None
        if suggestion is not None:
            raise ImproperlyConfigured(
                f"{cls.__name__}.{name}: not an event setting; did you mean {suggestion!r}? "
                f"(an attribute of your own may start with '_')"
            )


def settings_of(cls: type[EventBase]) -> EventSettings:
    """The validated settings of ``cls``, re-checked when an attribute changed since.

    Raises:
        ImproperlyConfigured: a setting reassigned after class creation is invalid.
    """
    cached: EventSettings | None = cls.__dict__.get("_event_pipeline_settings")
    if (
        cached is not None
        and cached.generation == _generation
        and (
            not cached.dict_snapshots
            or all(getattr(cls, name) == snapshot for name, snapshot in cached.dict_snapshots)
        )
    ):
        return cached
    settings = _validate(cls)
    type.__setattr__(cls, "_event_pipeline_settings", settings)
    return settings


def _warn_instance_setting(cls: type[EventBase], name: str) -> None:
    if cls in _warned_instance_settings:
        return
    _warned_instance_settings.add(cls)
    warnings.warn(
        f"{cls.__name__}.{name} was assigned on an instance, which changes nothing: every "
        f"attempt runs on a fresh instance and settings are read from the class; declare "
        f"{name} on the class {cls.__name__} instead",
        RuntimeWarning,
        stacklevel=3,
    )


class EventBase(metaclass=_EventMeta):
    """Base class of every event: subclass it and define :meth:`process`.

    Class attributes declare how the event runs; every one is optional and inherited:

    * ``executor``: an :class:`~concurrent.futures.Executor` subclass, which the runner
      builds and reuses, or an instance, which it uses as is and never shuts down
      (default :class:`DefaultExecutor`);
    * ``executor_config``: :class:`ExecutorInitializerConfig` or an equivalent dict;
    * ``retry_policy``: :class:`RetryPolicy`, an equivalent dict, or ``None`` (no retry);
    * ``execution_evaluation_state``: how task outcomes decide the event's success;
    * ``stop_on_exception``: stop the whole run at the first task that ends with an
      exception, raising :class:`StopProcessingError`;
    * ``timeout``: seconds allowed to one attempt, or ``None``.

    A ``process`` written ``async def`` makes an async event, run on
    :class:`AsyncExecutor` by default.

    They are checked when the subclass is created; a mistake raises
    :class:`ImproperlyConfigured` naming the class, the attribute and the value.
    """

    executor: ClassVar[type[Executor] | Executor] = DefaultExecutor
    executor_config: ClassVar[ExecutorInitializerConfig | dict[str, Any]] = (
        ExecutorInitializerConfig()
    )
    retry_policy: ClassVar[RetryPolicy | dict[str, Any] | None] = None
    execution_evaluation_state: ClassVar[EventExecutionEvaluationState] = (
        EventExecutionEvaluationState.SUCCESS_ON_ALL_EVENTS_SUCCESS
    )
    stop_on_exception: ClassVar[bool] = False
    timeout: ClassVar[float | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        made_by_decorator = cls.__dict__.get("_event_pipeline_function", False)
        for reserved in RESERVED_NAMES:
            if reserved in cls.__dict__ and not (reserved == "func" and made_by_decorator):
                raise ImproperlyConfigured(
                    f"{cls.__name__}.{reserved}: {reserved!r} is reserved on events "
                    f"(names reserved: {', '.join(RESERVED_NAMES)}); rename it"
                )
        _check_misspelt_settings(cls)
        settings_of(cls)

    def __setattr__(self, name: str, value: Any) -> None:
        # Only a frozenset lookup on the way: ``self.x = ...`` in process() stays cheap.
        if name in _SETTINGS:
            _warn_instance_setting(type(self), name)
        _object_setattr(self, name, value)

    @abc.abstractmethod
    def process(self, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
        """Do the work of one task.

        Returns:
            ``(True, value)`` on success, ``(False, value)`` on a failure that is not an
            exception (it is not retried). Raise to signal an exception; the retry policy
            decides whether it is tried again.
        """

    @classmethod
    def route(cls, run: EventRun) -> int:
        """Choose the branch a flow takes after this event's step (0-9).

        Called once per step that has a branch list, in the calling process. The default
        is ``1`` when the step's run succeeded and ``0`` when it failed; override it to
        route on what the tasks returned (``run.results[0].content``, say).
        """
        return 1 if run.success else 0

    # The calls take ``cls`` positional-only, so every keyword reaches ``process``.
    @classmethod
    def run(cls, /, *args: Any, **kwargs: Any) -> EventRun:
        """Run one task, ``process(*args, **kwargs)``, on the default runner."""
        # The runner read inline: this is the one call per task that users make directly.
        runner = _runners.default
        if runner is None:
            runner = _default_runner()
        return runner.run(cls, *args, **kwargs)

    @classmethod
    def map(cls, /, *iterables: Iterable[Any]) -> EventRun:
        """Run one task per zipped item of ``iterables`` on the default runner."""
        return _default_runner().map(cls, *iterables)

    @classmethod
    def imap(cls, /, *iterables: Iterable[Any]) -> Iterator[EventResult]:
        """Stream one result per zipped item of ``iterables``, in input order, on the default
        runner."""
        return _default_runner().imap(cls, *iterables)


def _default_runner() -> Runner:
    """The default runner, looked up without an import statement once it exists."""
    runner = _runners.default
    if runner is None:
        from ._runner import default_runner

        runner = default_runner()
    return runner


class _DefaultRunnerSlot:
    """Where ``_runner`` publishes the default runner, so event class methods reach it in
    one attribute read (``_event`` cannot import ``_runner`` at import time: a cycle)."""

    __slots__ = ("default",)

    def __init__(self) -> None:
        self.default: Runner | None = None


_runners = _DefaultRunnerSlot()
