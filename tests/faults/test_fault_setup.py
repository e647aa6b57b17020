"""The suite's own footing: spawned workers import the helper module from this directory."""

from __future__ import annotations

import os
from pathlib import Path

import fault_events
import pytest
from fault_events import WhereAmI
from fault_helpers import Leaks

from event_pipeline import Runner

pytestmark = pytest.mark.timeout(60)


def test_spawned_workers_import_fault_events(runner: Runner, leaks: Leaks) -> None:
    """A spawn worker finds ``fault_events`` on the sys.path it inherits from pytest."""
    run = runner.run(WhereAmI)
    assert run.success, run.results[0]
    path, pid, in_worker = run.results[0].content
    assert Path(path).resolve() == Path(fault_events.__file__).resolve()
    assert pid != os.getpid() and in_worker
    runner.shutdown()
    leaks.check()
