"""Smoke test of ``benchmarks/peers.py``: the quick run finishes and prints its table.

Only that it runs: no timing is asserted (performance is measured by the benchmark, not by
tests). Skipped where joblib, a benchmark-only dependency, is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "peers.py"


@pytest.mark.slow
@pytest.mark.timeout(60)
@pytest.mark.skipif(
    importlib.util.find_spec("joblib") is None,
    reason="joblib is not installed (benchmark-only peer: pip install joblib tenacity)",
)
def test_peers_quick_run_prints_a_table(tmp_path: Path) -> None:
    markdown = tmp_path / "peers.md"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--markdown", str(markdown)],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("| workload | contestant |") for line in lines), proc.stdout
    rows = [line for line in lines if line.startswith("| ") and "event_pipeline" in line]
    assert len(rows) >= 6, proc.stdout
    for number in range(1, 7):
        assert any(line.startswith(f"| {number}. ") for line in lines), f"workload {number}"
    assert "ERROR" not in proc.stdout
    assert markdown.read_text(encoding="utf-8").startswith("# event_pipeline against its peers")
