"""Hooks: objects told about retries, results and runs as they happen (SPEC §13).

A hook is any object with one or more of the methods named in :data:`HOOK_METHODS`. Hooks come
from two places, merged into one :class:`Hooks` plan per runner::

    Runner(hooks=[...]) ──┐
                          ├─► resolve_hooks(local, previous) ─► Hooks ─► scheduler call sites:
    add_hook/remove_hook ─┘     (rebuilt only when the            if hooks.on_result:
      process-wide registry,     registry's generation moved)         hooks.emit_result(result)
      generation += 1 per change

The plan holds, per kind, a tuple of the hooks' bound methods, empty when no hook has that
method, so a call site with nothing to call costs one attribute read and a truth test. Each
``emit_*`` calls the methods in order; a method that raises is logged once at ERROR on the
``event_pipeline`` logger and every method of its hook leaves *this plan* (and the plans later
resolved from it), so one runner stops calling it while other runners keep theirs.

Hooks are called in the thread that drives a call, never in a worker; the scheduler owns that.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._results import EventResult, EventRun

__all__ = [
    "HOOK_METHODS",
    "Hooks",
    "Retry",
    "add_hook",
    "check_hook",
    "hook_generation",
    "remove_hook",
    "resolve_hooks",
]

logger = logging.getLogger("event_pipeline")

#: The methods a hook may implement, in the order they are documented.
HOOK_METHODS: Final = ("on_retry", "on_result", "on_run", "on_step", "on_flow")


@dataclass(frozen=True, slots=True)
class Retry:
    """A failed attempt that will be tried again, as passed to a hook's ``on_retry``.

    Attributes:
        event_name: the event class's ``__name__``.
        task_id: the task that failed, as in its :class:`~event_pipeline.EventResult`.
        attempt: the 1-based number of the attempt that failed (1 for the first call of
            ``process``), so the next attempt is ``attempt + 1``.
        exception: the exception that ended the attempt.
        delay: seconds the runner waits before the next attempt.
    """

    event_name: str
    task_id: str
    attempt: int
    exception: BaseException
    delay: float

    def __repr__(self) -> str:
        return (
            f"Retry({self.event_name} task {self.task_id}: attempt {self.attempt} failed "
            f"with {self.exception!r}, next in {self.delay:.6f}s)"
        )

    # Spelled out because a frozen slotted dataclass only pickles by itself from 3.10.1 on,
    # and this also keeps the pickle small.
    def __reduce__(self) -> tuple[type[Retry], tuple[Any, ...]]:
        return Retry, (self.event_name, self.task_id, self.attempt, self.exception, self.delay)


_NOT_HOOKS = (str, bytes, bytearray, int, float, complex, type(None))


def _methods_of(hook: object) -> dict[str, Callable[[Any], object]]:
    """The hook methods ``hook`` has: callable attributes named in :data:`HOOK_METHODS`."""
    found: dict[str, Callable[[Any], object]] = {}
    for name in HOOK_METHODS:
        method = getattr(hook, name, None)
        if callable(method):
            found[name] = method
    return found


def _describe(value: object) -> str:
    """``value``'s repr and type for a message, even when its ``__repr__`` is broken."""
    try:
        text = repr(value)
    except Exception:
        text = object.__repr__(value)
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{text} ({type(value).__qualname__})"


def check_hook(hook: object) -> object:
    """Check that ``hook`` can be used as a hook and return it.

    Args:
        hook: an instance of a class with any of the methods ``on_retry``, ``on_result``,
            ``on_run``, ``on_step``, ``on_flow``.

    Returns:
        ``hook`` itself.

    Raises:
        TypeError: ``hook`` is a class rather than an instance, a string, a number or
            ``None``, or has none of the five methods.
    """
    if isinstance(hook, type):
        raise TypeError(
            f"hook must be an instance, not a class: got {hook.__module__}.{hook.__qualname__} "
            f"(did you mean {hook.__qualname__}()?)"
        )
    expected = ", ".join(HOOK_METHODS)
    if isinstance(hook, _NOT_HOOKS):
        raise TypeError(
            f"hook must be an object with any of the methods {expected}; got {_describe(hook)}"
        )
    if not _methods_of(hook):
        raise TypeError(
            f"hook {_describe(hook)} has none of the hook methods (expected at least one of "
            f"{expected})"
        )
    return hook


# The process-wide registry. Readers take the tuple and the generation without the lock: each
# is replaced whole under it, and a runner that reads a stale generation rebuilds next time.
_lock = threading.Lock()
_global_hooks: tuple[object, ...] = ()
_generation = 0


def add_hook(hook: object) -> None:
    """Register ``hook`` process-wide: every runner calls it, the default one included.

    Adding a hook that is already registered does nothing. Runners notice the change at
    their next call.

    Args:
        hook: an object with any of the methods ``on_retry``, ``on_result``, ``on_run``,
            ``on_step``, ``on_flow``.

    Raises:
        TypeError: ``hook`` is not a hook (see :func:`check_hook`).
    """
    global _global_hooks, _generation
    check_hook(hook)
    with _lock:
        if any(known is hook for known in _global_hooks):
            return
        _global_hooks = (*_global_hooks, hook)
        _generation += 1


def remove_hook(hook: object) -> None:
    """Unregister a hook added with :func:`add_hook`.

    Args:
        hook: the very object that was added.

    Raises:
        ValueError: ``hook`` is not registered.
    """
    global _global_hooks, _generation
    with _lock:
        kept = tuple(known for known in _global_hooks if known is not hook)
        if len(kept) == len(_global_hooks):
            raise ValueError(f"remove_hook: {_describe(hook)} is not a registered hook")
        _global_hooks = kept
        _generation += 1


def hook_generation() -> int:
    """A number that changes whenever a process-wide hook is added or removed."""
    return _generation


class Hooks:
    """The hooks one runner calls: its own, then the process-wide ones, resolved into methods.

    For each kind, ``on_retry``, ``on_result``, ``on_run``, ``on_step`` and ``on_flow`` hold
    a tuple of bound methods, empty when no hook has that method: a call site tests the tuple
    before building anything (``if hooks.on_result: hooks.emit_result(result)``). The object
    is true when any hook is left.

    A hook method that raises (an :class:`Exception`; ``KeyboardInterrupt`` and the like
    propagate) is logged once at ERROR on the ``event_pipeline`` logger with its traceback,
    and all of that hook's methods are dropped from this object: the runner holding it never
    calls that hook again. The emit returns normally and the other hooks are called as usual.

    Safe to share between the threads driving calls of one runner. A call already under way
    in another thread when a hook is dropped may still reach that hook once.

    Build one with :func:`resolve_hooks`, not directly.

    Attributes:
        generation: the registry generation (:func:`hook_generation`) it was resolved at.
        hooks: the hooks still called, in call order.
    """

    __slots__ = (
        "_dropped",
        "_local",
        "_lock",
        "_owners",
        "generation",
        "hooks",
        "on_flow",
        "on_result",
        "on_retry",
        "on_run",
        "on_step",
    )

    on_retry: tuple[Callable[[Retry], object], ...]
    on_result: tuple[Callable[[EventResult], object], ...]
    on_run: tuple[Callable[[EventRun], object], ...]
    on_step: tuple[Callable[[Any], object], ...]
    on_flow: tuple[Callable[[Any], object], ...]

    def __init__(
        self,
        local: tuple[object, ...],
        hooks: tuple[object, ...],
        generation: int,
        dropped: tuple[object, ...] = (),
    ) -> None:
        self._local = local
        self._dropped = dropped
        self._lock = threading.Lock()
        self.generation = generation
        self._install(hooks)

    def _install(self, hooks: tuple[object, ...]) -> None:
        """Resolve ``hooks`` into the five method tuples (replacing each tuple whole)."""
        methods: dict[str, list[Callable[[Any], object]]] = {name: [] for name in HOOK_METHODS}
        owners: dict[int, tuple[object, str, Callable[[Any], object]]] = {}
        for hook in hooks:
            for name, method in _methods_of(hook).items():
                methods[name].append(method)
                # Keyed by the identity of the stored method object, which the tuples keep
                # alive; a failing call is traced back to its hook without any search.
                owners[id(method)] = (hook, name, method)
        self._owners = owners
        self.hooks = hooks
        self.on_retry = tuple(methods["on_retry"])
        self.on_result = tuple(methods["on_result"])
        self.on_run = tuple(methods["on_run"])
        self.on_step = tuple(methods["on_step"])
        self.on_flow = tuple(methods["on_flow"])

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{name}={len(getattr(self, name))}" for name in HOOK_METHODS)
        return f"Hooks({len(self.hooks)} hooks: {kinds})"

    def emit_retry(self, retry: Retry) -> None:
        """Call every ``on_retry`` with ``retry``."""
        for method in self.on_retry:
            try:
                method(retry)
            except Exception:
                self._failed(method)

    def emit_result(self, result: EventResult) -> None:
        """Call every ``on_result`` with ``result`` (a task's final outcome)."""
        for method in self.on_result:
            try:
                method(result)
            except Exception:
                self._failed(method)

    def emit_run(self, run: EventRun) -> None:
        """Call every ``on_run`` with ``run`` (an event run, after all its results)."""
        for method in self.on_run:
            try:
                method(run)
            except Exception:
                self._failed(method)

    def emit_step(self, step: Any) -> None:
        """Call every ``on_step`` with ``step`` (a ``StepRun`` whose status is final)."""
        for method in self.on_step:
            try:
                method(step)
            except Exception:
                self._failed(method)

    def emit_flow(self, run: Any) -> None:
        """Call every ``on_flow`` with ``run`` (a ``FlowRun``, after its last ``on_step``)."""
        for method in self.on_flow:
            try:
                method(run)
            except Exception:
                self._failed(method)

    def _failed(self, method: Callable[[Any], object]) -> None:
        """Log the exception being handled and drop the hook ``method`` belongs to.

        Called from an ``except`` block. Only the first failure of a hook is logged: another
        thread may be calling the same hook from the old tuples when it is dropped.
        """
        with self._lock:
            owner = self._owners.get(id(method))
            if owner is None:
                return  # its hook was dropped already, by a failure in another thread
            hook, name, _ = owner
            self._dropped = (*self._dropped, hook)
            self._install(tuple(known for known in self.hooks if known is not hook))
        logger.error(
            "hook %s raised in %s; this runner will not call it again",
            _describe(hook),
            name,
            exc_info=True,
        )


def resolve_hooks(local: Sequence[object], previous: Hooks | None = None) -> Hooks:
    """The :class:`Hooks` a runner calls: ``local`` ones first, then the process-wide ones.

    A runner resolves its ``Runner(hooks=...)`` once when it is created (which checks them)
    and then at each call passes the previous plan back in: while no process-wide hook was
    added or removed, that plan is returned as it is (one integer comparison). Otherwise a new
    plan is built, which keeps the hooks ``previous`` dropped out. A hook found in both places
    is called once.

    Args:
        local: the runner's own hooks, in order.
        previous: the plan this runner resolved before from the same ``local``, or ``None``.

    Returns:
        The plan to call.

    Raises:
        TypeError: an element of ``local`` is not a hook (see :func:`check_hook`).
    """
    if previous is not None and previous.generation == _generation:
        return previous
    with _lock:
        generation = _generation
        global_hooks = _global_hooks
    if previous is not None:
        own = previous._local
        dropped = previous._dropped
    else:
        if isinstance(local, (str, bytes)):
            raise TypeError(f"hooks must be a sequence of hooks, not {_describe(local)}")
        own = tuple(check_hook(hook) for hook in local)
        dropped = ()
    merged: list[object] = []
    for hook in (*own, *global_hooks):
        if any(hook is known for known in merged) or any(hook is gone for gone in dropped):
            continue
        merged.append(hook)
    return Hooks(own, tuple(merged), generation, dropped)
