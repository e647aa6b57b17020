"""Module-level events for the flow tests, and a generator of random flows.

The events cover the signatures the up-front argument check must tell apart: one
positional parameter, a required named input, ``**kwargs`` only, no parameter at all,
keyword-only parameters, ``*args``, and a function made into an event with ``@event``.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from event_pipeline import EventBase, EventExecutionEvaluationState, RetryPolicy, event
from event_pipeline.flow import Flow, each, parallel, pipe, step


class Fetch(EventBase):
    def process(self, url: str) -> tuple[bool, Any]:
        return True, f"<{url}>"


class Parse(EventBase):
    def process(self, text: str) -> tuple[bool, Any]:
        return True, text.strip("<>")


class Pack(EventBase):
    def process(self, item: Any, size: int = 1) -> tuple[bool, Any]:
        return True, [item] * size


class Store(EventBase):
    """Needs the named input ``table`` besides what it stores."""

    def process(self, record: Any, *, table: str) -> tuple[bool, Any]:
        return True, (table, record)


class Notify(EventBase):
    """Takes any named inputs and nothing positional."""

    def process(self, **kwargs: Any) -> tuple[bool, Any]:
        return True, sorted(kwargs)


class Tick(EventBase):
    """Takes nothing at all."""

    def process(self) -> tuple[bool, Any]:
        return True, None


class Ping(EventBase):
    """Takes one keyword-only input, so nothing can be piped into it."""

    def process(self, *, host: str = "localhost") -> tuple[bool, Any]:
        return True, host


class Total(EventBase):
    """Takes any number of positional arguments."""

    def process(self, *values: int) -> tuple[bool, Any]:
        return True, sum(values)


class Flaky(EventBase):
    """Has its own retry policy, which a step's ``attempts`` adjusts."""

    retry_policy = RetryPolicy(
        max_attempts=3, backoff_factor=0.5, max_backoff=4.0, retry_on_exceptions=[ConnectionError]
    )

    def process(self, *args: Any) -> tuple[bool, Any]:
        return True, args


class Slow(EventBase):
    """Declares an attempt timeout on a thread pool (an executor that can enforce one)."""

    executor = ThreadPoolExecutor
    timeout = 5

    def process(self, *args: Any) -> tuple[bool, Any]:
        return True, args


@event
def double(x: int, factor: int = 2) -> tuple[bool, Any]:
    return True, x * factor


EVENTS: list[type[EventBase]] = [Fetch, Parse, Pack, Store, Notify, Tick, Ping, Total, Flaky]
EVENTS.append(double)


def random_flow(rng: random.Random, budget: int = 12, depth: int = 0) -> Flow:
    """A random flow of every kind of node, with at most about ``budget`` steps."""
    kinds = ["step"] * 3 + ["then", "parallel", "pipe", "each", "optional", "branch"]
    kind = "step" if budget <= 1 or depth > 6 else rng.choice(kinds)
    if kind == "step":
        return step(
            rng.choice(EVENTS),
            attempts=rng.choice([None, None, 1, 3, 10**20]),
            timeout=rng.choice([None, None, 2, 0.25, 1e-5, 3.5e9]),
        )
    if kind in ("then", "parallel"):
        count = rng.randint(2, 4)
        parts = [random_flow(rng, budget // count, depth + 1) for _ in range(count)]
        if kind == "then":
            return parts[0].then(*parts[1:])
        return parallel(*parts, evaluation=rng.choice(list(EventExecutionEvaluationState)))
    inner = random_flow(rng, budget - 1, depth + 1)
    if kind == "optional":
        return inner.optional()
    if kind == "branch":
        codes = rng.sample(range(10), rng.randint(1, 3))
        return inner.branch({code: random_flow(rng, budget // 3, depth + 1) for code in codes})
    try:
        return (pipe if kind == "pipe" else each)(inner)
    except ValueError:  # inner already receives the previous value
        return inner
