"""``benchmarks/gpu_check.sh --dry-run``: the steps it would run on a GPU exist and take the options it passes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks/gpu_check.sh"
#: The whole check's limit on one H100 (issue: under 8 minutes).
BUDGET_S = 480


def dry_run_steps() -> list[tuple[str, int, str]]:
    out = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert re.fullmatch(rf"gpu_check: \d+ steps, at most {BUDGET_S} s", lines[0]), lines[0]
    steps = [re.fullmatch(r"(.+?)\s+(\d+) s  (.+)", line).groups() for line in lines[1:]]
    return [(name.strip(), int(limit), command) for name, limit, command in steps]


def test_dry_run_lists_steps_within_the_budget() -> None:
    steps = dry_run_steps()
    names = [name for name, _, _ in steps]
    assert names[:2] == ["environment", "gpu tests"], names
    assert sum(limit for _, limit, _ in steps) <= BUDGET_S


def test_benchmark_steps_use_existing_scripts_and_options() -> None:
    benchmarks = [command for _, _, command in dry_run_steps() if command.startswith("python benchmarks/")]
    assert len(benchmarks) >= 4
    for command in benchmarks:
        script, *args = command.split()[1:]
        source = (REPO / script).read_text()
        assert "--device cuda" in command, command
        for option in (arg for arg in args if arg.startswith("--")):
            assert f'"{option}"' in source, f"{script} has no option {option}"


def test_the_gpu_test_step_collects_the_gpu_marked_tests() -> None:
    (command,) = [command for name, _, command in dry_run_steps() if name == "gpu tests"]
    args = command.split()[3:]                            # after "python -m pytest"
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", *args], capture_output=True,
                         text=True, cwd=REPO).stdout
    collected = [line for line in out.splitlines() if "::" in line]
    # The selection is the gpu-marked tests only: CUDA tests of training and TTA, no CPU test.
    assert any("test_training.py::test_bf16_autocast_step_matches_fp32_on_cuda" in line for line in collected), out
    assert any("test_tta.py::test_batched_equals_sequential_cuda" in line for line in collected), out
    assert not any("matches_fp32_on_cpu" in line or "test_gpu_check" in line for line in collected), out
