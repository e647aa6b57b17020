"""EventResult and EventRun (SPEC §6)."""

from __future__ import annotations

import pickle

from event_pipeline import EventResult, EventRun


def make(error: bool = False) -> EventResult:
    exc = ValueError("bad") if error else None
    return EventResult(error, exc if error else 42, exc, "7.3", "MyEvent", 2, 0.125)


def test_success_is_not_error() -> None:
    """``success == not error``."""
    assert make().success and not make(error=True).success


def test_results_pickle() -> None:
    """Results and runs survive pickling."""
    result = make()
    assert pickle.loads(pickle.dumps(result)) == result
    run = EventRun("MyEvent", True, [result], 0.5)
    copy = pickle.loads(pickle.dumps(run))
    assert (copy.event_name, copy.success, copy.results, copy.duration) == (
        "MyEvent", True, [result], 0.5
    )


def test_readable_repr() -> None:
    """The repr says which event, which task, the outcome and the attempts."""
    text = repr(make(error=True))
    assert "MyEvent" in text and "7.3" in text and "ValueError('bad')" in text
    assert "attempts=2" in text
    run = EventRun("MyEvent", False, [make(), make(error=True)], 1.0)
    assert "2 tasks, 1 failed" in repr(run)
    assert run.errors == [run.results[1]]
