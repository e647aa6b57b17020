"""Configuration objects an event declares: how its executor is built, how it retries.

Both are frozen dataclasses that validate on construction, so a bad value fails where it is
written. The ``coerce_*`` helpers accept the dict spelling too and re-raise with the event
and attribute named, which is what a user needs to find the mistake.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from ._sentinel import EMPTY, EmptyType
from .exceptions import ImproperlyConfigured

__all__ = [
    "ExecutorInitializerConfig",
    "RetryPolicy",
    "coerce_executor_config",
    "coerce_retry_policy",
    "set_fields",
]


def _is_int(value: object) -> bool:
    # bool is an int subclass, but ``max_workers=True`` is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    # NaN and infinity make no sense as a number of seconds to wait.
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


@dataclasses.dataclass(frozen=True)
class ExecutorInitializerConfig:
    """How the runner builds an event's executor from its class.

    Only fields that are set (not ``EMPTY``) *and* that the executor class's ``__init__``
    accepts are passed to it.

    Args:
        max_workers: most threads or processes; ``EMPTY`` means the number of processors
            available to this process (for thread pools too).
        max_tasks_per_child: tasks a process-pool worker runs before it is replaced;
            ``EMPTY`` means workers live as long as the pool.
        thread_name_prefix: prefix of worker thread names (thread pools only).

    Raises:
        ImproperlyConfigured: a field has the wrong type or is out of range.
    """

    max_workers: int | EmptyType = EMPTY
    max_tasks_per_child: int | EmptyType = EMPTY
    thread_name_prefix: str | EmptyType = EMPTY

    def __post_init__(self) -> None:
        for name in ("max_workers", "max_tasks_per_child"):
            value = getattr(self, name)
            if value is not EMPTY and not (_is_int(value) and value >= 1):
                raise ImproperlyConfigured(
                    f"{name} must be an int greater than 0 or EMPTY, got {value!r}"
                )
        prefix = self.thread_name_prefix
        if prefix is not EMPTY and not isinstance(prefix, str):
            raise ImproperlyConfigured(f"thread_name_prefix must be a str or EMPTY, got {prefix!r}")


def set_fields(config: ExecutorInitializerConfig) -> dict[str, Any]:
    """The fields of ``config`` that are not ``EMPTY``, by name."""
    return {
        field.name: getattr(config, field.name)
        for field in dataclasses.fields(config)
        if getattr(config, field.name) is not EMPTY
    }


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When and how a task whose ``process`` raised is tried again.

    Args:
        max_attempts: calls of ``process`` a task may make, the first included
            (``1`` means no retry).
        backoff_factor: the wait before retry *n* is
            ``min(max_backoff, backoff_factor * 2 ** (n - 1))`` seconds.
        max_backoff: the longest wait between two attempts, in seconds.
        retry_on_exceptions: exception classes worth a retry (subclasses included);
            empty means any :class:`Exception`. Stored as a new list.

    Raises:
        ImproperlyConfigured: a field has the wrong type or is out of range.
    """

    max_attempts: int = 5
    backoff_factor: float = 0.05
    max_backoff: float = 100.0
    retry_on_exceptions: Sequence[type[Exception]] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if not (_is_int(self.max_attempts) and self.max_attempts >= 1):
            raise ImproperlyConfigured(
                f"max_attempts must be an int greater than 0, got {self.max_attempts!r}"
            )
        for name in ("backoff_factor", "max_backoff"):
            value = getattr(self, name)
            if not (_is_number(value) and value >= 0):
                raise ImproperlyConfigured(f"{name} must be a finite number >= 0, got {value!r}")
        entries = self.retry_on_exceptions
        if isinstance(entries, (str, bytes)) or not isinstance(entries, (Sequence, set, frozenset)):
            raise ImproperlyConfigured(
                f"retry_on_exceptions must be a list of Exception subclasses, got {entries!r}"
            )
        for entry in entries:
            if not (isinstance(entry, type) and issubclass(entry, Exception)):
                raise ImproperlyConfigured(
                    f"retry_on_exceptions entries must be Exception subclasses, got {entry!r}"
                )
        # A copy, so the policy cannot change behind the event that holds it.
        object.__setattr__(self, "retry_on_exceptions", list(entries))


def _from_mapping(cls: type[Any], value: Mapping[Any, Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    for key in value:
        if key not in names:
            raise ImproperlyConfigured(
                f"unknown key {key!r} (expected one of {', '.join(names)})"
            )
    return cls(**value)


def _coerce(cls: type[Any], value: object, where: str) -> Any:
    try:
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return _from_mapping(cls, value)
    except ImproperlyConfigured as exc:
        raise ImproperlyConfigured(f"{where}: {exc}") from None
    raise ImproperlyConfigured(
        f"{where}: expected {cls.__name__} or dict, got {value!r}"
    )


def coerce_executor_config(value: object, where: str) -> ExecutorInitializerConfig:
    """Turn an ``executor_config`` attribute into a validated config.

    Args:
        value: an :class:`ExecutorInitializerConfig` or an equivalent dict.
        where: ``"Event.attribute"``, prefixed to error messages.
    """
    config: ExecutorInitializerConfig = _coerce(ExecutorInitializerConfig, value, where)
    return config


def coerce_retry_policy(value: object, where: str) -> RetryPolicy | None:
    """Turn a ``retry_policy`` attribute into a validated policy, or ``None`` for no retry."""
    if value is None:
        return None
    policy: RetryPolicy = _coerce(RetryPolicy, value, where)
    return policy
