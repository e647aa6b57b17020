"""A clock tests move by hand, for driving the coordinator without real time."""

from __future__ import annotations

import threading

from event_pipeline._coordinator import Clock


class HandClock(Clock):
    """Time moves only when the test moves it, or when the coordinator sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []
        self.waits: list[float] = []

    def monotonic(self) -> float:  # type: ignore[override]
        return self.now

    def sleep(self, seconds: float, wake: threading.Event) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def wait(self, wake: threading.Event, timeout: float) -> None:
        self.waits.append(timeout)
