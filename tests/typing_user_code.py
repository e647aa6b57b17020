"""User-style code that ``tests/test_typing.py`` runs ``mypy --strict`` over.

It is also imported and run by that test. A wrong call carries a ``type: ignore[...]``: as
``--strict`` reports unused ignores, the ignore must be needed, so mypy must reject the call.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from event_pipeline import EventBase, EventRun, Runner, event

if TYPE_CHECKING:  # typeshed's stub: typing_extensions need not be installed
    from typing_extensions import reveal_type


@event
def double(number: int) -> tuple[bool, int]:
    """Double a number."""
    return True, number * 2


@event(executor=ThreadPoolExecutor, max_workers=2, retry_policy={"max_attempts": 2})
def label(number: int, *, prefix: str = "#") -> tuple[bool, str]:
    """Label a number."""
    return True, f"{prefix}{number}"


class Triple(EventBase):
    def process(self, number: int) -> tuple[bool, Any]:
        return True, number * 3


def run_anything(event_class: type[EventBase], *args: Any) -> EventRun:
    """A helper of the user's own that takes any event class."""
    with Runner() as runner:
        return runner.run(event_class, *args)


def unit_tests() -> int:
    """What the docs recommend for unit tests: call the function through ``.func``."""
    ok, doubled = double.func(21)
    assert ok
    twice: int = doubled + double.func(1)[1]
    assert label.func(3, prefix="n") == (True, "n3")
    if TYPE_CHECKING:
        reveal_type(double.func)
        reveal_type(double.func(21))
        reveal_type(label.func)
    return twice


def decorated_names_are_events() -> list[EventRun]:
    """The decorated names go wherever an event class goes."""
    with Runner() as runner:
        runs = [runner.run(double, 21), runner.map(label, [1, 2]), run_anything(Triple, 1)]
        runs.append(run_anything(double, 4))
        assert [r.content for r in runner.imap(double, [1, 2])] == [2, 4]
    runs.append(double.run(5))
    assert issubclass(double, EventBase)
    return runs


def wrong_calls() -> None:
    """Each of these is a type error, which mypy must report."""
    double.func("21")  # type: ignore[arg-type]
    double.func(1, 2)  # type: ignore[call-arg]
    label.func(1, prefix=2)  # type: ignore[arg-type]
    text: str = double.func(21)[1]  # type: ignore[assignment]
    del text
