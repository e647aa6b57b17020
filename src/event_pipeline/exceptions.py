"""The exceptions event_pipeline raises on purpose.

Each one subclasses the builtin that already describes it, so ``except TypeError`` or
``except ValueError`` clauses written before this library keep working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._flowrun import FlowRun
    from ._results import EventRun

__all__ = ["FlowSyntaxError", "ImproperlyConfigured", "StopProcessingError"]


class ImproperlyConfigured(TypeError, ValueError):
    """An event, or a configuration object, was declared with a value it cannot run with.

    Raised when the class is created wherever possible, so a mistake fails at import time.
    The message names the event class, the attribute and the offending value.
    """


class StopProcessingError(Exception):
    """A task of an event with ``stop_on_exception=True`` ended with an exception.

    The task's exception is the ``__cause__``; the results finished so far are in :attr:`run`.

    Attributes:
        run: the partial :class:`~event_pipeline.EventRun` (its ``success`` is False).
    """

    def __init__(self, message: str, run: EventRun | FlowRun) -> None:
        super().__init__(message)
        self.run = run

    def __reduce__(self) -> tuple[type[StopProcessingError], tuple[str, EventRun | FlowRun]]:
        return type(self), (str(self), self.run)


class FlowSyntaxError(SyntaxError):
    """The text form of a flow does not parse (SPEC §11.3).

    Built like :class:`SyntaxError`, so tracebacks show the line with a caret under the
    offending place.

    Attributes:
        filename: the name given to ``Flow.parse`` (default ``"<flow>"``).
        lineno: the line of the error, from 1.
        offset: the column (in characters) where the offending text begins, from 1.
        end_offset: the column just after it.
        text: the source line.
    """
