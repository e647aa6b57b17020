"""Flows: events composed into sequences, parallel groups, pipes, fan-outs and branches.

Build them in Python::

    from event_pipeline.flow import step, parallel, pipe, each

    flow = step(Fetch, attempts=3).then(parallel(Parse, Scan), pipe(Store))

or parse the same from text with :meth:`Flow.parse` (``"Fetch * 3 -> Parse || Scan |-> Store"``).
"""

from __future__ import annotations

from ._model import Flow, each, parallel, pipe, step

__all__ = ["Flow", "each", "parallel", "pipe", "step"]
