"""The demonstration README.md points to runs and says what it shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs() -> None:
    """examples/quickstart.py finishes and prints every part of the tour."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "hello, world" in out
    assert "after 3 attempts" in out and out.count("log: retrying FlakyService") == 2
    assert "event success: True (1 of 3 failed)" in out
    assert "78498 primes below 1,000,000" in out
    assert out.rstrip().endswith("shut its pools down.")
