"""Checks that nothing a runner started outlives it."""

from __future__ import annotations

import multiprocessing
import threading


def leftovers(
    threads_before: set[threading.Thread],
    children_before: set[multiprocessing.process.BaseProcess] = frozenset(),  # type: ignore[assignment]
) -> tuple[list[str], list[str]]:
    """Threads and child processes started since the snapshots and still alive."""
    threads = [t.name for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    children = [repr(p) for p in multiprocessing.active_children() if p not in children_before]
    return threads, children
