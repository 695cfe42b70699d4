"""Preemption: a `leod train` job whose processes (DataLoader workers included) get SIGTERM or SIGUSR1 saves
train_state/last.ckpt, exits for requeue without model.ckpt, and its rerun resumes to the weights of an
uninterrupted run; atomic checkpoint writes; no Lightning SLURM environment (its auto-requeue) under SLURM."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning_fabric.plugins.environments import LightningEnvironment

from leod_core.models.checkpoint import load_rvt_state_dict
from leod_core.models.train import (LAST_CHECKPOINT, MODEL_CHECKPOINT, PREEMPTED_EXIT_CODE, TRAIN_STATE_DIR,
                                    AtomicCheckpointIO, PreemptionHandler, TrainerConfig, build_trainer)

STEPS = 6
LEOD = str(Path(sys.executable).with_name("leod"))   # the console script, as the workflow rules run it
FAKE_SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "leod-train"}


def write_config(path: Path) -> Path:
    path.write_text("model:\n  size: tiny\n  overrides: {embed_dim: 16, dim_head: 16}\n"
                    "data: {sequence_length: 5, batch_size: 4, sampling: mixed, augment: true}\n"
                    "trainer: {log_every_n_steps: 1}\n")
    return path


def train_command(dataset, out: Path, config: Path) -> list[str]:
    return [LEOD, "--no-progress", "train", "--data", str(dataset.root), "--split", str(dataset.split),
            "--out", str(out), "--config", str(config), "--steps", str(STEPS), "--accelerator", "cpu",
            "--num-workers", "2", "--checkpoint-every", "1000"]


def job_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**env, "CUDA_VISIBLE_DEVICES": "", **extra}


def signal_after_step(cmd: list[str], signum: signal.Signals, step: int, env: dict[str, str]) -> tuple[int, str]:
    """Run ``cmd``; once it logs step ``step``, send ``signum`` to all its processes, as SLURM does; return
    (exit status, output)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if f"step {step}/{STEPS}:" in line:
            os.killpg(proc.pid, signum)
            break
    rest, _ = proc.communicate(timeout=600)
    return proc.returncode, "".join(seen) + rest


def run(cmd: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_rvt_state_dict(a), load_rvt_state_dict(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


@pytest.fixture(scope="module")
def uninterrupted(small_dataset, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("uninterrupted")
    run(train_command(small_dataset, base / "out", write_config(base / "c.yaml")), job_env())
    return base / "out" / MODEL_CHECKPOINT


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=lambda s: s.name)
def test_signal_saves_train_state_exits_and_the_rerun_resumes_exactly(signum, uninterrupted, small_dataset,
                                                                      tmp_path):
    # SIGUSR1 runs under a fake SLURM job: Lightning's auto-requeue (which must stay off) would call `scontrol`
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol_called'}\n")
    (fake_bin / "scontrol").chmod(0o755)
    slurm = FAKE_SLURM if signum == signal.SIGUSR1 else {}
    env = job_env(**slurm, PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    cmd = train_command(small_dataset, out, write_config(tmp_path / "c.yaml"))

    status, log = signal_after_step(cmd, signum, 2, env)
    assert status == PREEMPTED_EXIT_CODE, log[-3000:]
    assert f"CUDA_VISIBLE_DEVICES= SLURM_JOB_ID={slurm.get('SLURM_JOB_ID', 'unset')}" in log
    state = torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)
    assert 2 <= state["global_step"] < STEPS
    assert f"received {signum.name} at step {state['global_step']}: saved" in log
    assert sorted(p.name for p in (out / TRAIN_STATE_DIR).iterdir()) == [LAST_CHECKPOINT]   # no temporary left
    assert not (out / MODEL_CHECKPOINT).exists()
    assert not (tmp_path / "scontrol_called").exists()

    log = run(cmd, env)
    assert f"resuming from {out / TRAIN_STATE_DIR / LAST_CHECKPOINT}" in log
    assert torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)["global_step"] == STEPS
    assert_same_weights(out / MODEL_CHECKPOINT, uninterrupted)


def test_atomic_checkpoint_io_leaves_the_previous_checkpoint_when_a_save_is_interrupted(tmp_path, monkeypatch):
    path = tmp_path / LAST_CHECKPOINT
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 3}, path)

    def interrupted_save(obj, f):
        f.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise KeyboardInterrupt("stands for the job being killed")

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 4}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert [p.name for p in tmp_path.iterdir()] == [LAST_CHECKPOINT]


def test_trainer_starts_its_own_ranks_under_slurm(monkeypatch, tmp_path):
    for name, value in FAKE_SLURM.items():
        monkeypatch.setenv(name, value)
    trainer = build_trainer(tmp_path, 4, TrainerConfig(accelerator="cpu", devices=2, progress_bar=False))
    assert type(trainer.strategy.cluster_environment) is LightningEnvironment   # not SLURMEnvironment
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert [c for c in trainer.callbacks if isinstance(c, PreemptionHandler)][0].signals == [signal.SIGTERM,
                                                                                             signal.SIGUSR1]


def test_unknown_preemption_signal_is_a_settings_error(tmp_path):
    with pytest.raises(ValueError, match="unknown signal 'SIGTREM'"):
        PreemptionHandler(["SIGTREM"], tmp_path / LAST_CHECKPOINT)
