"""DDP on two CPU processes (gloo) through the `leod` console script: the ranks train on different batches,
only rank 0 writes model.ckpt, and a preempted run resumes to the uninterrupted weights."""
from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from leod_core.data.loaders import build_train_loader
from leod_core.models.checkpoint import load_rvt_state_dict
from leod_core.models.detector import RVTConfig
from leod_core.models.lightning_module import OptimConfig
from leod_core.models.loss import LossConfig
from leod_core.models.train import (LAST_CHECKPOINT, MODEL_CHECKPOINT, TRAIN_STATE_DIR, ResumableDetectionModule,
                                    TaggedBatch)
from leod_core.models.train_job import frame_hw

STEPS = 4
LEOD = str(Path(sys.executable).with_name("leod"))   # Lightning starts rank 1 by rerunning this script


def ddp_command(dataset, out: Path, config: Path) -> list[str]:
    config.write_text("model:\n  size: tiny\n  overrides: {embed_dim: 16, dim_head: 16}\n"
                      "data: {sequence_length: 5, batch_size: 4, sampling: mixed, augment: true}\n"
                      "trainer: {log_every_n_steps: 1}\n")
    return [LEOD, "--no-progress", "train", "--data", str(dataset.root), "--split", str(dataset.split),
            "--out", str(out), "--config", str(config), "--steps", str(STEPS), "--accelerator", "cpu",
            "--devices", "2", "--checkpoint-every", "1000"]


def run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def uninterrupted(small_dataset, tmp_path_factory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("ddp")
    return base / "out", run(ddp_command(small_dataset, base / "out", base / "c.yaml"))


@pytest.mark.slow
def test_two_ranks_train_on_different_batches_and_rank_0_writes_the_model(uninterrupted):
    out, log = uninterrupted
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert log.count(f"wrote {out / MODEL_CHECKPOINT}") == 1 and (out / MODEL_CHECKPOINT).is_file()
    state = torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)
    assert state["global_step"] == STEPS
    per_rank = state["leod_rnn_states"]
    assert len(per_rank) == 2 and per_rank[0].keys() == per_rank[1].keys()
    # The ranks share the weights, so their recurrent states after the last batch differ only if their batches
    # (the last ones and those before, carried in the stream slots) did.
    pairs = [(a, b) for w in per_rank[0] for sa, sb in zip(per_rank[0][w], per_rank[1][w]) for a, b in zip(sa, sb)]
    assert pairs and not all(torch.allclose(a, b, atol=1e-3) for a, b in pairs)


@pytest.mark.slow
def test_preempted_ddp_run_resumes_to_the_uninterrupted_weights(uninterrupted, small_dataset, tmp_path):
    out = tmp_path / "out"
    cmd = ddp_command(small_dataset, out, tmp_path / "c.yaml")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if f"step 1/{STEPS}:" in line:
            proc.send_signal(signal.SIGTERM)   # rank 0 only: the ranks agree to stop at the same step
            break
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0, log[-3000:]   # 75; SIGKILL if Lightning's observer saw rank 1 exit first
    state = torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)
    assert 1 <= state["global_step"] < STEPS and len(state["leod_rnn_states"]) == 2
    assert f"received SIGTERM at step {state['global_step']}: saved" in log
    assert not (out / MODEL_CHECKPOINT).exists()

    assert "resuming from" in run(cmd)
    a, b = load_rvt_state_dict(out / MODEL_CHECKPOINT), load_rvt_state_dict(uninterrupted[0] / MODEL_CHECKPOINT)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_a_rank_without_labeled_frames_still_runs_backward(small_dataset):
    torch.manual_seed(0)
    config = RVTConfig.tiny(2, frame_hw(small_dataset.root, False), embed_dim=16, dim_head=16)
    module = ResumableDetectionModule(config, LossConfig(), OptimConfig())
    module.trainer = SimpleNamespace(world_size=2)
    batch = next(iter(build_train_loader(small_dataset.root, small_dataset.split, "random", 2, 5, aug_config=None)))
    unlabeled = dataclasses.replace(batch, labels=[[None] * batch.batch_size for _ in batch.labels])
    loss = module.training_step(TaggedBatch(unlabeled, epoch=0, index=0), 0)
    loss.backward()
    assert loss.item() == 0
    assert all(p.grad is not None and not p.grad.any() for p in module.parameters())
