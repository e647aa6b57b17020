"""The public surface is exactly SPEC §2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import event_pipeline

SPEC_NAMES = {
    "EventBase", "event", "DefaultExecutor", "EMPTY", "ExecutorInitializerConfig",
    "RetryPolicy", "EventExecutionEvaluationState", "Runner", "run", "EventResult",
    "EventRun", "ImproperlyConfigured", "StopProcessingError",
    "Flow", "FlowRun", "StepRun", "StepStatus", "FlowSyntaxError",
    "Retry", "Progress", "add_hook", "remove_hook",
    "AsyncExecutor",
}


def test_all_is_the_spec_list() -> None:
    """``__all__`` lists exactly the public names, once each, and each exists."""
    assert set(event_pipeline.__all__) == SPEC_NAMES
    assert len(event_pipeline.__all__) == len(SPEC_NAMES)
    for name in SPEC_NAMES:
        assert getattr(event_pipeline, name) is not None


def test_submodule_paths() -> None:
    """The seed's import paths resolve to the same objects."""
    from event_pipeline import base, decorators, exceptions

    assert decorators.event is event_pipeline.event
    for name in ("EventBase", "RetryPolicy", "ExecutorInitializerConfig",
                 "EventExecutionEvaluationState"):
        assert getattr(base, name) is getattr(event_pipeline, name)
    assert exceptions.ImproperlyConfigured is event_pipeline.ImproperlyConfigured
    assert exceptions.StopProcessingError is event_pipeline.StopProcessingError


def test_py_typed_ships() -> None:
    """The package is marked typed."""
    assert (Path(event_pipeline.__file__).parent / "py.typed").exists()


def test_public_names_have_docstrings() -> None:
    """Every public name is documented."""
    for name in SPEC_NAMES - {"EMPTY"}:
        assert getattr(event_pipeline, name).__doc__, name


def test_import_loads_only_the_standard_library() -> None:
    """Importing the package pulls in nothing outside the standard library."""
    code = (
        "import sys; before = set(sys.modules); import event_pipeline; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "print(sorted(new - set(sys.stdlib_module_names) - {'event_pipeline'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version() -> None:
    """``__version__`` is the version of the installed distribution, event-pipeline-futures."""
    from importlib.metadata import version

    assert event_pipeline.__version__ == version("event-pipeline-futures") == "0.1.0"
