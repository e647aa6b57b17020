"""A tour of event_pipeline in one script: run it with ``python examples/quickstart.py``.

It shows a class-based event, a decorated function, a retry with visible backoff, a fan-out
judged by an evaluation state, and an event on a process pool, then prints a summary.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

from event_pipeline import (
    EventBase,
    EventExecutionEvaluationState,
    RetryPolicy,
    Runner,
)
from event_pipeline.decorators import event


class Greet(EventBase):
    """A class-based event: process() returns (success, value)."""

    def process(self, name: str) -> tuple[bool, Any]:
        return True, f"hello, {name}"


@event(executor=ThreadPoolExecutor, max_workers=4)
def word_length(word: str) -> tuple[bool, Any]:
    """A decorated function is an event too, here on four threads."""
    return True, len(word)


_calls: dict[str, int] = {}
_started: dict[str, float] = {}


class FlakyService(EventBase):
    """Fails twice with a connection error, then answers; retried with backoff."""

    retry_policy = RetryPolicy(
        max_attempts=4, backoff_factor=0.1, max_backoff=1.0, retry_on_exceptions=[ConnectionError]
    )

    def process(self, request: str) -> tuple[bool, Any]:
        _calls[request] = _calls.get(request, 0) + 1
        now = time.monotonic()
        elapsed = now - _started.setdefault(request, now)
        print(f"    attempt {_calls[request]} of {request!r} at +{elapsed:.2f}s")
        if _calls[request] < 3:
            raise ConnectionError("service unavailable")
        return True, f"{request}: ok"


class CheckMirror(EventBase):
    """Fan-out over mirrors; the event succeeds if at least one mirror answers."""

    executor = ThreadPoolExecutor
    executor_config = {"max_workers": 3}
    execution_evaluation_state = EventExecutionEvaluationState.SUCCESS_FOR_PARTIAL_SUCCESS

    def process(self, mirror: str) -> tuple[bool, Any]:
        if mirror.endswith(".invalid"):
            return False, f"{mirror} did not answer"
        return True, f"{mirror} is up"


class CountPrimes(EventBase):
    """CPU-bound work on a process pool (events for process pools live at module level)."""

    executor = ProcessPoolExecutor
    executor_config = {"max_workers": 2}

    def process(self, limit: int) -> tuple[bool, Any]:
        sieve = bytearray([1]) * (limit + 1)
        sieve[0:2] = b"\x00\x00"
        for i in range(2, int(limit**0.5) + 1):
            if sieve[i]:
                sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
        return True, (limit, sum(sieve), os.getpid())


def main() -> None:
    # The library logs each retry on the "event_pipeline" logger; show them here.
    logging.basicConfig(level=logging.INFO, format="    log: %(message)s", stream=sys.stdout)
    with Runner() as runner:
        print("1. A class-based event")
        print("   ", runner.run(Greet, "world").results[0].content)

        print("2. A decorated function over many inputs")
        run = runner.map(word_length, ["the", "quick", "brown", "fox"])
        print("   ", [r.content for r in run.results], "success:", run.success)

        print("3. A retry with backoff (0.1 s, then 0.2 s)")
        result = runner.run(FlakyService, "GET /status").results[0]
        print(f"    -> {result.content!r} after {result.attempts} attempts, {result.duration:.2f}s")

        print("4. Fan-out judged by SUCCESS_FOR_PARTIAL_SUCCESS")
        run = runner.map(CheckMirror, ["a.example", "b.invalid", "c.example"])
        for r in run.results:
            print(f"    {'ok ' if r.success else 'err'} {r.content}")
        print(f"    event success: {run.success} ({len(run.errors)} of {len(run.results)} failed)")

        print("5. A process pool")
        run = runner.map(CountPrimes, [10_000, 100_000, 1_000_000])
        for r in run.results:
            limit, count, pid = r.content
            print(f"    {count} primes below {limit:,} (worker pid {pid})")

    print("Done: every task gave exactly one result; the runner shut its pools down.")


if __name__ == "__main__":
    main()
