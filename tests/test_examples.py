"""The demonstration README.md points to runs and says what it shows."""

from __future__ import annotations

import subprocess
import sys
import time
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


def test_flow_etl_runs() -> None:
    """examples/flow_etl.py survives the injected 500s, loads both sinks and reports, quickly."""
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "flow_etl.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"flow_etl.py took {elapsed:.1f}s"
    assert "server answered: 500, 500, 200" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    for name in ("Fetch", "Parse", "Validate", "WriteJsonLines", "WriteSqlite", "Report"):
        assert "SUCCEEDED" in lines[name], out
    assert "3 attempts" in lines["Fetch"] and "50 attempts" in lines["Validate"]
    assert "report: 47 of 50 payments loaded into payments.jsonl and payments.db" in out
    assert "after 3 fetch attempts; 3 rejected" in out
