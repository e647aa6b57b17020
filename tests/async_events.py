"""Module-level async events for the AsyncExecutor tests: each ``process`` is ``async def``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from event_pipeline import EventBase


class PlannedError(ConnectionError):
    """Raised on purpose by the events below."""


class Doubles(EventBase):
    """Succeeds with twice its argument, after yielding to the loop once."""

    async def process(self, x: int) -> tuple[bool, int]:
        await asyncio.sleep(0)
        return True, 2 * x


class Raises(EventBase):
    """Raises the exception it is given."""

    async def process(self, exc: BaseException) -> Any:
        await asyncio.sleep(0)
        raise exc


class ReturnsBadly(EventBase):
    """Returns something that is not ``(bool, value)``."""

    async def process(self) -> Any:
        return "not a tuple"


class NotAsync(EventBase):
    """A synchronous ``process``: wrong on an AsyncExecutor."""

    def process(self) -> tuple[bool, None]:
        return True, None


class WaitsForAll(EventBase):
    """Waits on an ``asyncio.Event`` that the last of ``count`` attempts to arrive sets.

    Only attempts that run concurrently can all finish; shared state lives in ``room``.
    """

    async def process(self, room: dict[str, Any], count: int, x: int) -> tuple[bool, int]:
        room["arrived"] += 1
        if room["arrived"] == count:
            room["all_here"].set()
        await room["all_here"].wait()
        return True, x


class Gate:
    """Opened once from any thread; awaited by coroutines on any loop until then."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def wait(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._opened:
                return
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, waiter))
        await waiter

    def open(self) -> None:
        with self._lock:
            self._opened = True
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            loop.call_soon_threadsafe(_release, waiter)


def _release(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Blocks(EventBase):
    """Sets ``entered`` and waits for a gate; if cancelled, sets ``cleaned`` and re-raises."""

    async def process(
        self, gate: Gate, cleaned: threading.Event, entered: threading.Event | None = None
    ) -> tuple[bool, str]:
        if entered is not None:
            entered.set()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            cleaned.set()
            raise
        return True, "opened"
