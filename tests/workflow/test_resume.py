"""Crash and resume: snakemake (and every job it runs) is killed with SIGKILL, as a node failure would, once
during a pseudo-label shard job and once during a self-training job; `--unlock` and `--rerun-incomplete` then
finish the run. The finished shard is not redone, the killed shard and the killed training job continue
from what they had written, and the results equal those of an uninterrupted run of the same configuration."""
from __future__ import annotations

import filecmp
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest
from runner import EXP, REPO, copy_config, edit_config, shrink, snakemake, snakemake_command

from leod_core.pseudo.writer import is_complete_sequence

KILL_TIMEOUT_S = 600
POLL_S = 0.02
SHARDS = (0, 1)


def resumable_config(workdir: Path) -> Path:
    """The toy default with two sequences per shard, pseudo-labelled one at a time (so a shard is half done
    between them, and batches are the same whatever was already written), and a longer round 1."""
    copy_config(workdir)
    shrink(workdir, threshold=0.0, num_train=4)

    def longer_round1(config: dict) -> None:
        config["datasets"]["synth"]["pseudo"]["tta"]["batch_size"] = 1
        config["datasets"]["synth"]["self_train"]["optim"]["max_steps"] = 30

    edit_config(workdir, longer_round1)
    return workdir


def run_killed_when(workdir: Path, condition: Callable[[], bool], *args: str) -> None:
    """Run snakemake in its own process group and SIGKILL the whole group as soon as ``condition()`` holds."""
    log = (workdir / "killed_run.log").open("a")
    proc = subprocess.Popen(snakemake_command(workdir, *args, dry_run=False), cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not condition():
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"the run ended (rc {proc.returncode}) before the moment to kill it; "
                        f"see {workdir / 'killed_run.log'}")
        time.sleep(POLL_S)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()


def shard_dir(workdir: Path, shard: int) -> Path:
    return workdir / EXP / f"round1/pseudo/shards/{shard}"


def one_shard_done_and_the_other_half_done(workdir: Path) -> bool:
    done = [k for k in SHARDS if (shard_dir(workdir, k) / "shard.json").is_file()]
    if len(done) != 1:
        return False
    (other,) = set(SHARDS) - set(done)
    written = shard_dir(workdir, other) / "train"
    return written.is_dir() and any(is_complete_sequence(seq) for seq in written.iterdir())


def round1_training_checkpointed(workdir: Path) -> bool:
    return (workdir / EXP / "round1/train_state/last.ckpt").is_file()


def label_files(root: Path) -> dict[str, Path]:
    """The pseudo labels of a merged dataset, by path relative to it (events are links to the source)."""
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*")) if p.suffix in (".npz", ".npy")}


@pytest.mark.slow
@pytest.mark.timeout(1800)     # two toy runs of the loop: ~5 min on 2 quiet cores, 15 min on a loaded machine
def test_killed_shard_and_training_jobs_resume_to_the_uninterrupted_result(tmp_path):
    reference = resumable_config(tmp_path / "uninterrupted")
    result = snakemake(reference, dry_run=False)
    assert result.returncode == 0, result.stderr[-4000:]

    workdir = resumable_config(tmp_path / "killed")
    run_killed_when(workdir, lambda: one_shard_done_and_the_other_half_done(workdir), "--resources", "gpu=1")
    (finished,) = [k for k in SHARDS if (shard_dir(workdir, k) / "shard.json").is_file()]
    (killed,) = set(SHARDS) - {finished}
    finished_manifest = (shard_dir(workdir, finished) / "shard.json").stat().st_mtime_ns
    finished_log = (workdir / f"logs/synth/wsod_0.1/round1/pseudo/shards/{finished}.log").read_text()
    assert snakemake(workdir, "--unlock", dry_run=False).returncode == 0

    run_killed_when(workdir, lambda: round1_training_checkpointed(workdir), "--rerun-incomplete")
    assert not (workdir / EXP / "round1/model.ckpt").exists()
    assert snakemake(workdir, "--unlock", dry_run=False).returncode == 0
    finish = snakemake(workdir, "--rerun-incomplete", dry_run=False)
    assert finish.returncode == 0, finish.stderr[-4000:]

    # The finished shard was not redone; the killed one kept its first sequence; training resumed.
    assert (shard_dir(workdir, finished) / "shard.json").stat().st_mtime_ns == finished_manifest
    assert (workdir / f"logs/synth/wsod_0.1/round1/pseudo/shards/{finished}.log").read_text() == finished_log
    killed_log = (workdir / f"logs/synth/wsod_0.1/round1/pseudo/shards/{killed}.log").read_text()
    assert re.search(r"2 sequences, [12] already written", killed_log), killed_log
    train_log = (workdir / "logs/synth/wsod_0.1/round1/train.log").read_text()
    assert "resuming from" in train_log and "round1/train_state/last.ckpt" in train_log

    # ... and everything equals the uninterrupted run.
    for round_ in ("round0", "round1"):
        metrics = f"{EXP}/{round_}/eval/test_metrics.json"
        assert json.loads((workdir / metrics).read_text()) == json.loads((reference / metrics).read_text())
    ours, theirs = (label_files(root / EXP / "round1/pseudo/dataset") for root in (workdir, reference))
    assert ours.keys() == theirs.keys() and len(ours) >= 8
    assert all(filecmp.cmp(ours[name], theirs[name], shallow=False) for name in ours)
    assert (workdir / "results/tables/synth.md").read_text() == (reference / "results/tables/synth.md").read_text()
