"""The benchmark scripts still run: each prints its Markdown rows at the smallest settings (the figures themselves
are taken by hand, idle, for BENCHMARKS.md; this only keeps the scripts from rotting between those runs)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, *args: str) -> str:
    """``python benchmarks/<script> <args>`` from the benchmarks folder (as BENCHMARKS.md runs them); its stdout."""
    done = subprocess.run([sys.executable, script, *args], cwd=BENCHMARKS, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_tta_pipeline_benchmark_prints_a_row_per_shape():
    out = run_benchmark("bench_tta_pipeline.py", "--shapes", "gen1", "1mpx-ds2", "--reprs", "6", "--repeats", "1",
                        "--batch", "1")
    rows = [line for line in out.splitlines() if line.startswith(("| gen1 ", "| 1mpx-ds2 "))]
    assert [row.split()[1] for row in rows] == ["gen1", "1mpx-ds2"]
    for row in rows:
        assert re.search(r"\| \d+% \| [\d.]+x \| [\d.]+x \|$", row), row  # e2e / model, 4 views / 1 view twice


def test_projection_prints_every_gpu_and_stage():
    out = run_benchmark("projection.py", "--gpu", "T4", "--gpus", "1", "8")
    rows = [line for line in out.splitlines() if line.startswith("| T4 |")]
    assert [row.split("|")[2].strip() for row in rows][:3] == ["train", "pseudo-label", "evaluate"]
    assert len(rows) == 4 and "**all**" in rows[3]
