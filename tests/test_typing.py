"""``@event`` keeps the decorated function's type: ``mypy --strict`` over user-style code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER_CODE = Path(__file__).with_name("typing_user_code.py")


@pytest.fixture(scope="module")
def mypy_output(tmp_path_factory: pytest.TempPathFactory) -> str:
    pytest.importorskip("mypy", reason="mypy is installed by the test extra")
    done = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict",
            # Only the user's file is judged; the package has its own `mypy --strict src`.
            "--follow-imports=silent",
            "--cache-dir", str(tmp_path_factory.mktemp("mypy_cache")),
            str(USER_CODE.relative_to(ROOT)),
        ],
        cwd=ROOT,  # pyproject.toml's [tool.mypy]: Python 3.10, mypy_path = src
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_user_code_passes_mypy_strict(mypy_output: str) -> None:
    """Decorated events typecheck wherever an event class goes, and wrong calls are rejected
    (each carries a ``type: ignore`` that --strict would report as unused otherwise)."""
    assert "Success: no issues found" in mypy_output


def test_func_keeps_the_function_signature(mypy_output: str) -> None:
    """``double.func`` has the decorated function's signature, and its result type."""
    revealed = [line.split("Revealed type is ", 1)[1] for line in mypy_output.splitlines()
                if "Revealed type is " in line]
    assert revealed == [
        '"def (number: int) -> tuple[bool, int]"',
        '"tuple[bool, int]"',
        '"def (number: int, *, prefix: str =) -> tuple[bool, str]"',
    ]


def test_user_code_runs() -> None:
    """The same code runs: ``.func`` returns the function's value, the events run."""
    sys.path.insert(0, str(USER_CODE.parent))
    try:
        import typing_user_code as user
    finally:
        sys.path.remove(str(USER_CODE.parent))
    assert user.double.func(21) == (True, 42)
    assert user.unit_tests() == 44
    runs = user.decorated_names_are_events()
    assert [run.results[0].content for run in runs] == [42, "#1", 3, 8, 10]
