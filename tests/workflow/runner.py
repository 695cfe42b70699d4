"""Running the workflow from tests: snakemake in a scratch working directory with a copy of workflow_config,
the embedded default shrunk to toy size, and the per-rule job counts of a dry run."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parents[2]
EXP = "results/synth/wsod_0.1"


def snakemake_command(workdir: Path, *args: str, dry_run: bool = True) -> list[str]:
    return ["snakemake", *(["-n"] if dry_run else []), "--cores", "2", "--directory", str(workdir),
            "--snakefile", str(REPO / "Snakefile"), *args]


def snakemake(workdir: Path, *args: str, dry_run: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(snakemake_command(workdir, *args, dry_run=dry_run), capture_output=True, text=True,
                          cwd=REPO)


def job_counts(output: str) -> dict[str, int]:
    """Per-rule job counts of the last "Job stats" table a dry run prints."""
    table = output.rsplit("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not match:
            break
        counts[match[1]] = int(match[2])
    return counts


def copy_config(workdir: Path) -> Path:
    """A working directory with its own copy of workflow_config (so tests can edit it)."""
    shutil.copytree(REPO / "workflow_config", workdir / "workflow_config")
    return workdir


def edit_config(workdir: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``edit`` to the working directory's config.yaml."""
    path = workdir / "workflow_config/config.yaml"
    config = yaml.safe_load(path.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config))


def shrink(workdir: Path, threshold: float = 0.0, max_rounds: int = 1, num_train: int = 3) -> None:
    """The embedded default at toy size: ``num_train`` train sequences of 2 s, 10 steps per round, checkpoints and
    validations every 5 steps."""

    def toy(config: dict[str, Any]) -> None:
        synth = config["datasets"]["synth"]
        synth["synth"].update(duration_s=2.0, num_train=num_train, num_val=1, num_test=1)
        synth["train"]["optim"]["max_steps"] = 10
        synth["train"]["data"]["batch_size"] = 2
        synth["train"]["trainer"]["checkpoint_every_n_steps"] = 5
        synth["train"]["validation"]["every_n_steps"] = 5
        synth["self_train"]["optim"]["max_steps"] = 10
        config["self_training"]["gate"]["threshold"] = threshold
        config["self_training"]["max_rounds"] = max_rounds

    edit_config(workdir, toy)
