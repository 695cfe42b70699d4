"""Training: exact resume, bf16 autocast, DDP on CPU, the CLI."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from leod_core.data.loaders import build_train_loader
from leod_core.models.checkpoint import load_rvt_state_dict
from leod_core.models.lightning_module import DetectionModule, OptimConfig
from leod_core.models.loss import LossConfig
from leod_core.models.train import TRAIN_STATE_DIR, TrainerConfig
from leod_core.models.train_job import DataConfig, ModelChoice, TrainJob, frame_hw, run_train_job

TINY = ModelChoice(size="tiny", overrides={"embed_dim": 16, "dim_head": 16})


def small_job(steps: int, **trainer) -> TrainJob:
    return TrainJob(model=TINY, optim=OptimConfig(learning_rate=1e-3, max_steps=steps),
                    data=DataConfig(sampling="random", batch_size=4, sequence_length=5, augment=False),
                    trainer=TrainerConfig(accelerator="cpu", progress_bar=False, log_every_n_steps=1, **trainer))


class Crash(RuntimeError):
    """Stands for a killed job."""


class CrashAtStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Crash(f"killed at step {self.step}")


def test_killed_run_resumes_to_the_same_weights(small_dataset, tmp_path):
    data, split = small_dataset.root, small_dataset.split
    straight = run_train_job(small_job(8, checkpoint_every_n_steps=3), data, tmp_path / "straight", split, pseudo=False)
    crashing = small_job(8, checkpoint_every_n_steps=3, extra_callbacks=(CrashAtStep(5),))
    with pytest.raises(Crash):
        run_train_job(crashing, data, tmp_path / "resumed", split, pseudo=False)
    assert not (tmp_path / "resumed/model.ckpt").exists()
    last = torch.load(tmp_path / "resumed" / TRAIN_STATE_DIR / "last.ckpt", weights_only=True)
    assert last["global_step"] == 3
    resumed = run_train_job(small_job(8, checkpoint_every_n_steps=3), data, tmp_path / "resumed", split, pseudo=False)
    final = torch.load(tmp_path / "resumed" / TRAIN_STATE_DIR / "last.ckpt", weights_only=True)
    assert final["global_step"] == 8
    a, b = load_rvt_state_dict(straight), load_rvt_state_dict(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_restores_optimizer_and_scheduler(small_dataset, tmp_path):
    run_train_job(small_job(4, checkpoint_every_n_steps=2), small_dataset.root, tmp_path, small_dataset.split, False)
    state = torch.load(tmp_path / TRAIN_STATE_DIR / "last.ckpt", weights_only=True)
    assert state["optimizer_states"][0]["state"], "AdamW moments are checkpointed"
    scheduler = state["lr_schedulers"][0]
    assert scheduler["last_epoch"] == 4 and scheduler["total_steps"] == 4
    assert "leod_loader_position" in state and "leod_rnn_states" in state


def one_batch_loss(module: DetectionModule, batch) -> torch.Tensor:
    features, targets = module.forward_batch(batch)
    head = module.mdl.forward_detect(features)
    return module.loss_fn(head.preds, head.grid_xy, head.strides, targets)["loss"]


def bf16_matches_fp32(device: str, small_dataset) -> None:
    torch.manual_seed(0)
    config = frame_hw(small_dataset.root, False)
    from leod_core.models.detector import RVTConfig
    module = DetectionModule(RVTConfig.tiny(2, config, embed_dim=16, dim_head=16), LossConfig(), OptimConfig())
    module = module.to(device).eval()
    batch = next(iter(build_train_loader(small_dataset.root, small_dataset.split, "random", 4, 5,
                                         aug_config=None))).to(device)
    fp32 = one_batch_loss(module, batch)
    module._states.clear()
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        bf16 = one_batch_loss(module, batch)
    bf16.backward()
    # bf16 keeps 8 mantissa bits: activations differ by ~0.4 % each; summed losses stay within 2 %.
    assert abs(bf16.item() - fp32.item()) <= 0.02 * abs(fp32.item())
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_bf16_autocast_step_matches_fp32_on_cpu(small_dataset):
    bf16_matches_fp32("cpu", small_dataset)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_autocast_step_matches_fp32_on_cuda(small_dataset):
    bf16_matches_fp32("cuda", small_dataset)


def write_tiny_config(path: Path) -> Path:
    path.write_text("model:\n  size: tiny\n  overrides: {embed_dim: 16, dim_head: 16}\n"
                    "data: {sequence_length: 5, batch_size: 4, sampling: mixed, augment: true}\n")
    return path


def test_cli_round0_and_soft_round_and_argument_errors(small_dataset, tmp_path, caplog):
    from leod_core.cli import main
    caplog.set_level(logging.INFO)
    config = write_tiny_config(tmp_path / "c.yaml")
    args = ["--no-progress", "train", "--config", str(config), "--steps", "2", "--accelerator", "cpu"]
    assert main(args + ["--data", str(small_dataset.root), "--split", str(small_dataset.split),
                        "--out", str(tmp_path / "r0")]) == 0
    assert "hard assignment" in caplog.text
    assert main(args + ["--pseudo-data", str(small_dataset.root), "--out", str(tmp_path / "r1")]) == 0
    assert "soft assignment" in caplog.text
    assert (tmp_path / "r0/model.ckpt").is_file() and (tmp_path / "r1/model.ckpt").is_file()
    assert main(args + ["--data", str(small_dataset.root), "--out", str(tmp_path / "r2")]) == 1
    assert "round 0 needs --data and --split" in caplog.text
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {learnig_rate: 1}\n")
    assert main(["train", "--config", str(bad), "--pseudo-data", str(small_dataset.root), "--out", str(tmp_path / "x")]) == 1
    assert "unknown setting 'learnig_rate'" in caplog.text


def test_soft_thresholds_expand_for_three_classes():
    from leod_core.models.loss import expand_class_thresholds
    job = dataclasses.replace(TrainJob(), model=dataclasses.replace(TINY, num_classes=3))
    assert tuple(expand_class_thresholds(job.soft_ignore_bbox_thresh, 3)) == (0.35, 0.35, 0.7)


def test_use_label_every_thins_all_pseudo_frames_only():
    """LEOD's use_label_every = 2 over L = 6 steps: all-pseudo frames (t == 0) survive at steps 1, 3 and the last
    one (5); a frame with ground truth (t > 0) and missing frames are left as they are."""
    from leod_core.models.lightning_module import label_steps

    pseudo, gt = torch.zeros(2, 8), torch.ones(1, 8)
    labels = [[pseudo, None] for _ in range(6)]
    labels[2][1] = gt
    kept = label_steps(labels, 2)
    assert [[frame is not None for frame in columns] for columns in kept] == [
        [False, False], [True, False], [False, True], [True, False], [False, False], [True, False]]
    assert label_steps(labels, 1) == labels
    with pytest.raises(ValueError, match="use_label_every must be >= 1"):
        label_steps(labels, 0)


def test_pseudo_assignment_is_soft_or_hard():
    assert TrainJob().pseudo_assignment == "soft" and DataConfig().use_label_every == 1
    with pytest.raises(ValueError, match="pseudo_assignment must be one of"):
        TrainJob(pseudo_assignment="medium")


@pytest.mark.parametrize("max_steps", [2, 3, 10, 100, 200, 300])
def test_the_schedule_runs_at_any_step_count(max_steps):
    """LEOD's pct_start 0.005 gives exactly one warm-up step at 200 steps, where torch's OneCycleLR divided by
    zero; short runs get a 2-step warm-up instead, long ones keep LEOD's."""
    from leod_core.models.lightning_module import warmup_fraction
    cfg = OptimConfig(learning_rate=1e-3, max_steps=max_steps)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.learning_rate, total_steps=max_steps,
                                                    pct_start=warmup_fraction(cfg), anneal_strategy="linear",
                                                    cycle_momentum=False)
    rates = []
    for _ in range(max_steps - 1):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    assert max(rates) == pytest.approx(cfg.learning_rate, rel=1e-2) or max_steps == 2
    assert warmup_fraction(cfg) == {2: 0.75, 300: cfg.pct_start}.get(max_steps, 2 / max_steps)


def test_init_weights_start_a_round_from_a_previous_model(small_dataset, tmp_path):
    """--init-weights loads the given model before training: with a negligible learning rate the result is that
    model, while a fresh initialisation is not."""
    from leod_core.cli import main
    config = write_tiny_config(tmp_path / "c.yaml")
    common = ["--no-progress", "train", "--config", str(config), "--steps", "2", "--accelerator", "cpu"]
    round0 = ["--data", str(small_dataset.root), "--split", str(small_dataset.split)]
    assert main(common + round0 + ["--out", str(tmp_path / "r0"), "--seed", "1"]) == 0
    frozen = common + ["--lr", "1e-12", "--pseudo-data", str(small_dataset.root)]
    assert main(frozen + ["--out", str(tmp_path / "init"), "--init-weights", str(tmp_path / "r0/model.ckpt")]) == 0
    assert main(frozen + ["--out", str(tmp_path / "fresh")]) == 0
    previous, started, fresh = (load_rvt_state_dict(tmp_path / run / "model.ckpt") for run in ("r0", "init", "fresh"))
    weights = [key for key in previous if "running_" not in key and "num_batches" not in key]   # not BN statistics
    assert len(weights) > 100
    assert all(torch.allclose(previous[key], started[key], atol=1e-6) for key in weights)
    assert not all(torch.allclose(previous[key], fresh[key], atol=1e-6) for key in weights)
