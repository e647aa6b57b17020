"""What a newcomer meets first: the install names, typo'd settings, and plain output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

from event_pipeline import EventBase, ImproperlyConfigured, Runner

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DISTRIBUTION = "event-pipeline-futures"

# An install command that would fetch the upstream project of the same import name.
_UPSTREAM_INSTALL = re.compile(r"pip install\s+[\"']?event[-_]pipeline(?![-_\w])")


def _install_texts() -> dict[str, str]:
    paths = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]
    paths += sorted((ROOT / "src" / "event_pipeline").rglob("*.py"))
    return {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in paths}


# -- 1. The distribution's name ------------------------------------------------------------------


def test_distribution_name_is_not_the_upstream_one() -> None:
    """pyproject names the distribution event-pipeline-futures, keeping the import name."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == DISTRIBUTION
    assert project["scripts"] == {"event-pipeline": "event_pipeline.__main__:main"}
    extras = project["optional-dependencies"]
    assert extras["otel"] == ["opentelemetry-api>=1.20"]
    assert "opentelemetry-sdk>=1.20" in extras["test"]
    assert {re.split(r"[<>=!~ ]", req)[0] for req in extras["bench"]} == {"joblib", "tenacity"}


def test_installed_distribution_is_this_code() -> None:
    """event-pipeline-futures is installed in this version, and upstream event-pipeline is not."""
    import event_pipeline

    try:
        assert distribution(DISTRIBUTION).version == event_pipeline.__version__
    except PackageNotFoundError:  # pragma: no cover - only without `pip install -e .`
        pytest.skip(f"{DISTRIBUTION} is not installed (run `pip install -e .`)")
    # Both install the package event_pipeline: with upstream present, imports are a coin toss.
    with pytest.raises(PackageNotFoundError):
        distribution("event-pipeline")


def test_no_install_instruction_fetches_the_upstream_project() -> None:
    """README, docs and source hints never say `pip install event-pipeline` as an instruction."""
    offenders = []
    for name, text in _install_texts().items():
        for line in text.splitlines():
            warns = re.search(r"(?i)\bnot\b|different|uninstall", line)
            if _UPSTREAM_INSTALL.search(line) and not warns:
                offenders.append(f"{name}: {line.strip()}")
    assert offenders == []


def test_readme_warns_about_the_upstream_project() -> None:
    """README says upstream event-pipeline shares the import name, so both cannot coexist."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert DISTRIBUTION in readme
    assert "same import name" in readme and "cannot share an\nenvironment" in readme
    assert 'python -m pip install -e ".[test,docs,dask]" && python -m pytest' in readme


def test_missing_dask_extra_names_this_distribution() -> None:
    """Without distributed, DaskExecutor's ImportError says how to install this code's extra."""
    pythonpath = os.pathsep.join(p for p in [str(SRC), os.environ.get("PYTHONPATH", "")] if p)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['distributed'] = None\n"
            "from event_pipeline.executors.dask import DaskExecutor\n"
            "try:\n"
            "    DaskExecutor()\n"
            "except ImportError as exc:\n"
            "    print(exc)\n",
        ],
        env={**os.environ, "PYTHONPATH": pythonpath},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert f'pip install "{DISTRIBUTION}[dask]"' in done.stdout
    assert 'pip install -e ".[dask]"' in done.stdout


def test_version_matches_pyproject() -> None:
    """``__version__`` is written in the package and agrees with pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    import event_pipeline

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert event_pipeline.__version__ == project["version"]


# -- 2. A misspelt setting fails at class creation -----------------------------------------------


def _make(attributes: dict[str, object]) -> type[EventBase]:
    def process(self: EventBase) -> tuple[bool, object]:
        return True, None

    return type("MyEvent", (EventBase,), {"__module__": __name__, "process": process, **attributes})


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("retry_polciy", "retry_policy"),
        ("retry_policies", "retry_policy"),
        ("executor_configs", "executor_config"),
        ("executer", "executor"),
        ("stop_on_exeption", "stop_on_exception"),
        ("stop_on_exceptions", "stop_on_exception"),
        ("execution_evaluation_states", "execution_evaluation_state"),
        ("evaluation_state", "execution_evaluation_state"),
        ("Retry_Policy", "retry_policy"),
        ("time_out", "timeout"),
    ],
)
def test_misspelt_setting_names_the_setting_meant(name: str, meant: str) -> None:
    """A public attribute close to a setting's name is ImproperlyConfigured, with a suggestion."""
    with pytest.raises(ImproperlyConfigured) as caught:
        _make({name: {"max_attempts": 3}})
    assert str(caught.value).startswith(f"MyEvent.{name}: ")
    assert f"did you mean {meant!r}" in str(caught.value)


def test_class_statement_with_misspelt_setting_fails() -> None:
    """The check runs for an ordinary class statement, as the newcomer wrote it."""
    with pytest.raises(ImproperlyConfigured, match=r"Fetch\.retry_polciy: .*'retry_policy'"):

        class Fetch(EventBase):
            retry_polciy = {"max_attempts": 3}

            def process(self) -> tuple[bool, object]:
                return True, None


def test_executor_config_field_on_the_class_points_to_executor_config() -> None:
    """``max_workers = 4`` on a class (as @event takes it) says to put it in executor_config."""
    with pytest.raises(ImproperlyConfigured, match=r"MyEvent\.max_workers: .*"
                       r"did you mean executor_config = \{'max_workers': 4\}"):
        _make({"max_workers": 4})


@pytest.mark.parametrize(
    "attributes",
    [
        {"_retry_polciy": 1, "_executer": 2},  # private: the user's own business
        {"route": classmethod(lambda cls, run: 1)},  # a hook, not a typo
        {"retries": 3, "name": "x", "executors_used": [], "policy": None, "stop": False},
        {"retry_policy": {"max_attempts": 2}, "stop_on_exception": True},
    ],
)
def test_settings_private_and_unrelated_attributes_are_accepted(
    attributes: dict[str, object],
) -> None:
    """Real settings, private names and names unlike any setting's are left alone."""
    assert issubclass(_make(attributes), EventBase)


def test_inherited_attributes_are_checked_once() -> None:
    """Only a class's own attributes are checked, so subclasses of a valid event stay valid."""
    base = _make({"retries": 3})
    assert issubclass(type("Child", (base,), {"__module__": __name__}), base)


# -- 3. A setting assigned on the instance warns -------------------------------------------------


class _SetsOnInstance(EventBase):
    def process(self, value: int) -> tuple[bool, int]:
        self.stop_on_exception = True
        self.retry_policy = None
        self.seen = value  # not a setting: no warning
        return True, value


class _SetsOrdinaryAttributes(EventBase):
    def process(self, value: int) -> tuple[bool, int]:
        self.seen = value
        self.executor_note = "mine"
        return True, value


def test_setting_assigned_on_instance_warns_once_per_class() -> None:
    """``self.stop_on_exception = True`` in process warns once, naming event and attribute."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Runner() as runner:
            run = runner.map(_SetsOnInstance, [1, 2, 3])
            runner.run(_SetsOnInstance, 4)
    assert run.success and [r.content for r in run.results] == [1, 2, 3]
    assert [w.category for w in caught] == [RuntimeWarning]
    message = str(caught[0].message)
    assert "_SetsOnInstance.stop_on_exception" in message
    assert "declare stop_on_exception on the class _SetsOnInstance" in message
    assert caught[0].filename == __file__  # points at the user's assignment


def test_ordinary_instance_attributes_do_not_warn() -> None:
    """Attributes that are not settings are assigned as on any object, silently."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        event = _SetsOrdinaryAttributes()
        assert event.process(5) == (True, 5)
    assert vars(event) == {"seen": 5, "executor_note": "mine"}


def test_instance_setting_still_changes_nothing() -> None:
    """The class's settings decide the run, whatever process assigned on its instance."""
    with pytest.warns(RuntimeWarning), Runner() as runner:
        event = _make({})

        def process(self: EventBase) -> tuple[bool, object]:
            self.stop_on_exception = True
            raise ValueError("boom")

        event.process = process  # type: ignore[method-assign]
        run = runner.run(event)
    assert not run.success and isinstance(run.results[0].exception, ValueError)


# -- 5. Plain output -----------------------------------------------------------------------------


def test_module_help_shows_no_stray_helpers() -> None:
    """``help(event_pipeline)`` lists the public functions only, and the version."""
    import pydoc

    import event_pipeline

    text = pydoc.render_doc(event_pipeline, renderer=pydoc.plaintext)
    functions = text.split("\nFUNCTIONS\n", 1)[1].split("\nDATA\n", 1)[0]
    listed = {line.split("(", 1)[0].strip() for line in functions.splitlines()
              if line.startswith("    ") and not line.startswith("     ") and "(" in line}
    assert listed == {"add_hook", "event", "remove_hook", "run"}
    assert "__getattr__" not in text
    assert f"VERSION\n    {event_pipeline.__version__}" in text


def test_quickstart_prints_elapsed_times_with_one_sign() -> None:
    """The retry demo prints ``+0.00s``, never ``+-0.00s``."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    elapsed = re.findall(r"attempt \d of 'GET /status' at (\S+)s", out)
    assert len(elapsed) == 3 and elapsed[0] == "+0.00", out
    assert all(re.fullmatch(r"\+\d+\.\d\d", value) for value in elapsed), elapsed


def test_seed_test_skip_reason_says_what_and_where(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where the seed is absent, the skipped test says what it checks and where it runs."""
    import test_seed

    monkeypatch.setattr(test_seed, "SEED_DIR", tmp_path / "shared" / "seed")
    with pytest.raises(pytest.skip.Exception) as skipped:
        test_seed.seed_blocks()
    reason = str(skipped.value)
    assert "code block of the upstream 'Events' tutorial" in reason and "runs unchanged" in reason
    assert "beside the clone, as in CI" in reason and str(tmp_path) in reason
