"""What runs inside a worker: exactly one attempt per task, never a backoff wait.

A batch is a list of tasks of one event; each task's attempt is judged here, where its
exception is still the real object, and comes back as an *outcome* ``(kind, value)``:

* ``OK``: ``process`` returned a well-formed ``(bool, value)`` tuple (``value`` is it);
* ``RETRY``: ``process`` raised an exception the retry policy retries (``value`` is it);
* ``FATAL``: anything else that ends the task (``value`` is the exception);
* ``BASE``: a ``BaseException`` that is not an ``Exception`` (``SystemExit``) ended the
  attempt in a worker process; the batch stops there and the parent raises it.

For executors that run work in other processes the batch travels as pickled bytes, one
blob per task, both ways: a task whose arguments or result cannot cross the boundary fails
alone, with a message that says so, and never breaks the pool.
"""

from __future__ import annotations

import pickle
import threading
import time
import traceback
from typing import Any, Protocol

from ._retry import is_retryable

__all__ = [
    "BASE",
    "FATAL",
    "OK",
    "RETRY",
    "RemoteException",
    "RemoteTraceback",
    "StartNote",
    "describe_exception",
    "portable_exception",
    "run_batch",
    "run_pickled",
]

OK = 0
RETRY = 1
FATAL = 2
BASE = 3

Outcome = tuple[int, Any]
Item = tuple[tuple[Any, ...], dict[str, Any]]


def _describe(value: object, limit: int = 200) -> str:
    """``repr(value)``, shortened; never raises, whatever ``__repr__`` does."""
    try:
        text = repr(value)
        if not isinstance(text, str):
            raise TypeError("__repr__ returned a non-string")
    except Exception:
        return f"<{describe_type(value)} object (its repr() failed)>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_type(value: object) -> str:
    """The qualified name of ``value``'s real type (not what ``__class__`` claims)."""
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}" if cls.__module__ != "builtins" else cls.__name__


def describe_exception(exc: BaseException) -> str:
    """``"Type: message"`` for ``exc``; never raises (falls back to the type name)."""
    try:
        message = str(exc)
        if not isinstance(message, str):
            raise TypeError("__str__ returned a non-string")
    except Exception:
        return f"{type(exc).__name__} (its message could not be read)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def judge(event_class: type[Any], returned: object) -> Outcome:
    """Classify what ``process`` returned: ``OK`` with a plain ``(bool, value)`` tuple, else
    ``FATAL`` with a ``TypeError`` naming the event.

    The checks go through ``tuple``'s own slots, so a subclass whose ``__len__``,
    ``__getitem__`` or ``__class__`` lies cannot fool them or raise from them.
    """
    if issubclass(type(returned), tuple) and tuple.__len__(returned) == 2:  # type: ignore[arg-type]
        first = tuple.__getitem__(returned, 0)  # type: ignore[call-overload]
        if type(first) is bool:
            return OK, (first, tuple.__getitem__(returned, 1))  # type: ignore[call-overload]
        return FATAL, TypeError(
            f"{event_class.__name__}.process must return (bool, value), but it returned "
            f"{_describe(returned)}: the first item must be True or False, not "
            f"{_describe(first)} ({describe_type(first)})"
        )
    return FATAL, TypeError(
        f"{event_class.__name__}.process must return a 2-tuple (bool, value), "
        f"but it returned {_describe(returned)}"
    )


def attempt(
    event_class: type[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    retry_on: tuple[type[BaseException], ...] | None,
) -> Outcome:
    """Call ``process`` once and classify what happened; ``retry_on`` None means no retry."""
    try:
        returned = event_class().process(*args, **kwargs)
    except Exception as exc:
        return raised(exc, retry_on)
    return judge(event_class, returned)


def raised(exc: Exception, retry_on: tuple[type[BaseException], ...] | None) -> Outcome:
    """The outcome of an attempt that raised ``exc``."""
    if retry_on is not None and is_retryable(retry_on, exc):
        return RETRY, exc
    return FATAL, exc


#: Which executor (by id) the current thread is running a batch for: a call made from a
#: task then knows it is inside that executor's worker.
running_in = threading.local()


class StartNote(Protocol):
    """Where a batch notes the monotonic time it started (a timed work item)."""

    began: float | None


def run_batch(
    event_class: type[Any],
    items: list[Item],
    retry_on: tuple[type[BaseException], ...] | None,
    executor_id: int = 0,
    note: StartNote | None = None,
    single: bool = False,
) -> tuple[float, list[Any], bool]:
    """One attempt for each task of a batch, in the calling process.

    ``note``, when given, gets the monotonic time the batch started as its ``began`` (the
    runner's deadline for a timed attempt counts from it). With ``single``, each item is
    a task's one positional argument rather than its ``(args, kwargs)``.

    Returns:
        The seconds the batch took (the runner sizes later batches with it), what came of
        each task, and whether every attempt returned a plain ``(bool, value)`` tuple.
        When they all did, the entries are those tuples; otherwise each entry is an
        outcome ``(kind, value)``.
    """
    if note is not None:
        note.began = time.monotonic()
    began = time.perf_counter()
    previous = getattr(running_in, "executor", 0)
    running_in.executor = executor_id
    try:
        values: list[Any] = []
        odd = _run_plain(event_class, items, retry_on, values, single)
        if odd is None:
            return time.perf_counter() - began, values, True
        outcomes: list[Outcome] = [(OK, value) for value in values]
        outcomes.append(odd)
        for item in items[len(outcomes) :]:
            args, kwargs = ((item,), {}) if single else item
            outcomes.append(attempt(event_class, args, kwargs, retry_on))
    finally:
        running_in.executor = previous
    return time.perf_counter() - began, outcomes, False


def _run_plain(
    event_class: type[Any],
    items: list[Any],
    retry_on: tuple[type[BaseException], ...] | None,
    values: list[Any],
    single: bool = False,
) -> Outcome | None:
    """Attempt tasks in order while each returns a plain ``(bool, value)`` tuple, appending
    those tuples to ``values``: the common case, with no outcome built per task. Each item
    is a task's ``(args, kwargs)``, or with ``single`` its one positional argument.

    Returns:
        The outcome of the first task that did otherwise (it is not attempted again), or
        None when every task did. A ``BaseException`` that is not an ``Exception``
        propagates, with ``values`` holding what came before it.
    """
    append = values.append
    for item in items:
        try:
            if single:
                returned = event_class().process(item)
            elif item[1]:
                returned = event_class().process(*item[0], **item[1])
            else:
                returned = event_class().process(*item[0])
        except Exception as exc:
            return raised(exc, retry_on)
        # Only the exact tuple type: a subclass could lie about its length or items.
        if type(returned) is tuple and len(returned) == 2 and type(returned[0]) is bool:
            append(returned)
        else:
            return judge(event_class, returned)
    return None


class RemoteTraceback(Exception):
    """Carries the text of a traceback formatted in a worker process."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class RemoteException(Exception):
    """Stands in for an exception raised in a worker process that could not be pickled.

    Attributes:
        type_name: the original exception's qualified type name.
        message: ``str()`` of the original exception.
    """

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(type_name, message)
        self.type_name = type_name
        self.message = message

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message} (the original exception could not be pickled)"


def _format_traceback(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:  # a hostile exception: its type is what we can still say
        return describe_exception(exc)


def portable_exception(exc: BaseException) -> tuple[BaseException, str]:
    """``exc`` made fit to cross a process boundary, and its formatted traceback.

    An exception that does not survive a pickle round trip becomes a stand-in of the same
    kind: a :class:`RemoteException` for an ``Exception``, the nearest built-in type for
    other ``BaseException`` s (so a ``SystemExit`` still propagates as one). Never raises.
    """
    tb_text = _format_traceback(exc)
    exc.__traceback__ = None
    try:
        # Loading matters too: an exception whose __init__ needs other arguments
        # pickles fine and then fails to load in the parent.
        pickle.loads(pickle.dumps(exc))
    except Exception:
        cls = type(exc)
        try:
            name = f"{cls.__module__}.{cls.__qualname__}"
        except Exception:  # pragma: no cover - a type without a name
            name = "exception"
        if isinstance(exc, Exception):
            return RemoteException(name, describe_exception(exc)), tb_text
        builtin = next(
            (base for base in cls.__mro__ if base.__module__ == "builtins"), BaseException
        )
        return builtin(f"{name}: {describe_exception(exc)}"), tb_text
    return exc, tb_text


def _portable(event_class: type[Any], outcome: Outcome) -> bytes:
    return _dump_entry(event_class, _entry(outcome))


#: What :func:`run_pickled` returns when a batch's arguments do not load as one: the
#: runner sends those tasks again one blob each, to find which cannot.
SPLIT = b""


def run_pickled(
    event_class: type[Any],
    payloads: bytes | list[bytes],
    retry_on: tuple[type[BaseException], ...] | None,
) -> tuple[float, bytes | list[bytes], bool]:
    """Like :func:`run_batch`, for pickled ``(args, kwargs)`` tasks and pickled outcomes.

    ``payloads`` is one pickle of the batch's ``(args, kwargs)`` list (the usual case, one
    pickle both ways), or one pickle per task. What comes back is one pickle of the plain
    ``(bool, value)`` tuples when every attempt returned one (the flag is then True), else
    of ``(kind, value, traceback text)`` entries, else (some entry cannot be pickled) one
    pickle per entry, so an outcome that cannot travel fails alone.
    """
    started = time.perf_counter()
    if isinstance(payloads, bytes):
        try:
            items = pickle.loads(payloads)
        except Exception:
            return time.perf_counter() - started, SPLIT, False
        values: list[Any] = []
        try:
            odd = _run_plain(event_class, items, retry_on, values)
        except BaseException as exc:  # SystemExit and friends: the batch ends here
            odd = (BASE, exc)
            items = []
        if odd is None:
            try:
                blob = pickle.dumps(values, pickle.HIGHEST_PROTOCOL)
            except Exception:
                pass  # some value cannot travel: the per-entry path says which
            else:
                return time.perf_counter() - started, blob, True
        entries: list[tuple[int, Any, str | None]] = [(OK, v, None) for v in values]
        if odd is not None:
            entries.append(_entry(odd))
            for args, kwargs in items[len(entries) :]:
                try:
                    outcome = attempt(event_class, args, kwargs, retry_on)
                except BaseException as exc:  # SystemExit and friends: the batch ends here
                    entries.append(_entry((BASE, exc)))
                    break
                entries.append(_entry(outcome))
        try:
            blob = pickle.dumps(entries, pickle.HIGHEST_PROTOCOL)
        except Exception:
            dumped = [_dump_entry(event_class, e) for e in entries]
            return time.perf_counter() - started, dumped, False
        return time.perf_counter() - started, blob, False
    outcomes = []
    for payload in payloads:
        try:
            args, kwargs = pickle.loads(payload)
        except Exception as exc:
            failure = TypeError(
                f"{event_class.__name__}: the arguments of a task could not be unpickled in "
                f"the worker process ({describe_exception(exc)})"
            )
            failure.__cause__ = exc
            outcomes.append(_portable(event_class, (FATAL, failure)))
            continue
        try:
            outcome = attempt(event_class, args, kwargs, retry_on)
        except BaseException as exc:  # SystemExit and friends: the batch ends here
            outcomes.append(_portable(event_class, (BASE, exc)))
            break
        outcomes.append(_portable(event_class, outcome))
    return time.perf_counter() - started, outcomes, False


def _entry(outcome: Outcome) -> tuple[int, Any, str | None]:
    """An outcome as sent back in a batch: an exception made portable, with its traceback."""
    kind, value = outcome
    if kind == OK:
        return kind, value, None
    return (kind, *portable_exception(value))


def _dump_entry(event_class: type[Any], entry: tuple[int, Any, str | None]) -> bytes:
    try:
        return pickle.dumps(entry, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        failure = TypeError(
            f"{event_class.__name__}.process returned a value that cannot be sent back from "
            f"a worker process: {type(entry[1][1]).__name__} ({describe_exception(exc)})"
        )
        return pickle.dumps((FATAL, failure, None), pickle.HIGHEST_PROTOCOL)


def load_outcomes(
    event_name: str, returned: bytes | list[bytes], count: int, plain: bool
) -> tuple[list[Any], bool]:
    """What :func:`run_pickled` sent back for ``count`` tasks, loaded in the parent: the
    plain tuples (and True) when ``plain`` says so and they load, else outcomes (and False).
    """
    if isinstance(returned, list):
        return [load_outcome(event_name, blob) for blob in returned], False
    try:
        entries = pickle.loads(returned)
    except Exception as exc:
        # A value that pickled in the worker and does not load here: every task of the
        # batch still gets its one result, a failure that says so.
        failure = TypeError(
            f"{event_name}: the outcomes of a batch could not be unpickled in the parent "
            f"process ({describe_exception(exc)})"
        )
        return [(FATAL, failure)] * count, False
    if plain:
        return entries, True
    outcomes: list[Outcome] = []
    for kind, value, tb_text in entries:
        if tb_text is not None:
            value.__cause__ = RemoteTraceback(tb_text)
        outcomes.append((kind, value))
    return outcomes, False


def load_outcome(event_name: str, blob: bytes) -> Outcome:
    """Unpickle one outcome from :func:`run_pickled`, in the parent."""
    try:
        kind, value, tb_text = pickle.loads(blob)
    except Exception as exc:
        return FATAL, TypeError(
            f"{event_name}: the outcome of a task could not be unpickled in the parent "
            f"process ({describe_exception(exc)})"
        )
    if tb_text is not None:
        value.__cause__ = RemoteTraceback(tb_text)
    return kind, value
