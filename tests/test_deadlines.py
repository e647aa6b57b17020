"""The deadline queues on their own: what expires, what finishing does, nothing kept."""

from __future__ import annotations

from typing import Any

from event_pipeline._deadlines import Deadlines
from event_pipeline._tasks import WorkItem


def _item() -> WorkItem:
    return WorkItem(None, None, None, 0.0, calls=[])  # type: ignore[arg-type]


def _start(deadlines: Deadlines, item: WorkItem, now: float, timeout: float) -> None:
    """What the coordinator does when it submits a timed work item."""
    item.deadline = now + timeout
    deadlines.add(item, timeout)


def _end(deadlines: Deadlines, item: WorkItem, timeout: float) -> None:
    """What the coordinator does when a timed work item's attempt ends in time."""
    item.deadline = None
    deadlines.finished(item, timeout)


def _queued(deadlines: Deadlines) -> int:
    return sum(len(queue) for queue in deadlines._queues.values())


def test_attempts_expire_in_deadline_order_and_only_once_due() -> None:
    deadlines = Deadlines()
    items = [_item() for _ in range(3)]
    for start, item in enumerate(items):
        _start(deadlines, item, float(start), 10.0)
    assert deadlines.next_due(0.0) == 10.0
    assert list(deadlines.expired(10.999)) == [items[0]]
    assert list(deadlines.expired(12.0)) == items[1:]
    assert not deadlines and deadlines.next_due(12.0) is None


def test_finishing_in_any_order_leaves_nothing_behind() -> None:
    deadlines = Deadlines()
    items = [_item() for _ in range(8)]
    for item in items:
        _start(deadlines, item, 0.0, 5.0)
    for index in [3, 0, 7, 1, 2, 6, 5, 4]:
        _end(deadlines, items[index], 5.0)
        assert items[index].deadline is None
    assert _queued(deadlines) == 0 and not deadlines
    assert list(deadlines.expired(100.0)) == []


def test_a_moved_attempt_expires_at_its_new_deadline_or_not_at_all_once_finished() -> None:
    deadlines = Deadlines()
    late, other = _item(), _item()
    _start(deadlines, late, 0.0, 1.0)
    _start(deadlines, other, 0.5, 1.0)
    [due] = deadlines.expired(1.0)
    deadlines.move(due, 3.0)  # it was seen starting at 2.0
    assert deadlines.pending() == [1.5, 3.0]
    assert list(deadlines.expired(2.9)) == [other]
    assert list(deadlines.expired(3.0)) == [late]

    moved = _item()
    _start(deadlines, moved, 10.0, 1.0)
    [due] = deadlines.expired(11.0)
    deadlines.move(due, 20.0)
    _end(deadlines, moved, 1.0)  # ended before its new deadline
    assert list(deadlines.expired(30.0)) == []
    assert deadlines.pending() == []


def test_a_long_queue_behind_a_running_attempt_is_swept() -> None:
    """Attempts finishing behind one that runs on are swept out once they pile up, so
    the queue stays about as long as what is still running."""
    deadlines = Deadlines()
    stuck = _item()
    _start(deadlines, stuck, 0.0, 60.0)
    running: list[Any] = []
    for n in range(1_000):
        item = _item()
        _start(deadlines, item, float(n), 60.0)
        running.append(item)
        if len(running) > 40:
            _end(deadlines, running.pop(0), 60.0)
    assert _queued(deadlines) <= 64 + 2 * (len(running) + 1) + 1
    assert deadlines.pending()[0] == 60.0
    assert len(deadlines.pending()) == len(running) + 1
