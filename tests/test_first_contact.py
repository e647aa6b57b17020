"""What a newcomer meets first: the install names, typo'd settings, and plain output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest

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
