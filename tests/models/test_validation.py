"""Validation during training: val AP logged (CSV, TensorBoard) at every N steps and the last step, the two best
weights kept, model.ckpt from the best (or last) weights with a record of their step, `leod evaluate` reporting that
step, exact resume (killed, or preempted before validating), and an unchanged training trajectory."""
from __future__ import annotations

import csv
import dataclasses
import math
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from leod_core.evaluation.evaluate import evaluate_checkpoint
from leod_core.models.checkpoint import load_rvt_state_dict, load_training_record, save_model_checkpoint
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.models.inference import InferenceConfig
from leod_core.models.lightning_module import OptimConfig
from leod_core.models.train import (LAST_CHECKPOINT, MODEL_CHECKPOINT, TRAIN_STATE_DIR, Preempted, TrainerConfig)
from leod_core.models.train_job import DataConfig, ModelChoice, TrainJob, frame_hw, run_train_job
from leod_core.models.validation import Validation, ValidationConfig

TINY = ModelChoice(size="tiny", overrides={"embed_dim": 16, "dim_head": 16})
STEPS = 7
#: Scripted val AP by step (validations at 2, 4, 6 and the last step 7): the best is step 2 and the two kept
#: are 2 and 6, so a resumed run that lost the record of step 2 would select other weights.
SCRIPTED_AP = {2: 0.3, 4: 0.1, 6: 0.2, 7: 0.05}


def job(steps: int = STEPS, every: int = 2, weights: str = "best", callbacks: tuple = (), **trainer) -> TrainJob:
    return TrainJob(model=TINY, optim=OptimConfig(learning_rate=1e-3, max_steps=steps),
                    data=DataConfig(sampling="random", batch_size=4, sequence_length=5, augment=False),
                    trainer=TrainerConfig(accelerator="cpu", progress_bar=False, log_every_n_steps=1,
                                          extra_callbacks=callbacks, **trainer),
                    validation=ValidationConfig(every_n_steps=every, camera="synth", batch_size=4, weights=weights))


def train(dataset, out: Path, job_: TrainJob) -> Path:
    return run_train_job(job_, dataset.root, out, dataset.split, pseudo=False)


@pytest.fixture
def scripted_ap(monkeypatch):
    """Validation runs for real, but reports :data:`SCRIPTED_AP` (a tiny model's AP is 0 at every step)."""
    real = Validation.evaluate

    def evaluate(self, trainer, model):
        return {**real(self, trainer, model), "AP": SCRIPTED_AP[trainer.global_step]}

    monkeypatch.setattr(Validation, "evaluate", evaluate)


def val_rows(out: Path) -> list[dict[str, str]]:
    rows = [row for path in sorted(out.glob("logs/csv/version_*/metrics.csv")) for row in csv.DictReader(open(path))]
    return [row for row in rows if row.get("val/AP")]


def stored_val_ap(out: Path) -> dict[int, float]:
    state = torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)
    return state["callbacks"]["Validation"]["val_AP"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def last_weights(out: Path) -> dict:
    return load_rvt_state_dict(out / TRAIN_STATE_DIR / LAST_CHECKPOINT)


def test_validation_logs_val_ap_keeps_the_two_best_and_model_ckpt_holds_the_best(small_dataset, tmp_path):
    out = tmp_path / "run"
    model = train(small_dataset, out, job(steps=5))
    assert [int(row["step"]) for row in val_rows(out)] == [2, 4, 5]   # every 2 steps and the last one
    assert all(0 <= float(row["val/AP"]) <= 1 and row["val/AP_50"] for row in val_rows(out))
    events = EventAccumulator(str(next(out.glob("logs/tensorboard/version_0/events.out.tfevents.*"))))
    scalars = events.Reload().Tags()["scalars"]
    assert {"train/loss", "train/lr", "val/AP", "val/AP_50"} <= set(scalars)
    assert [e.step for e in events.Scalars("val/AP")] == [2, 4, 5]

    scores = stored_val_ap(out)
    assert sorted(scores) == [2, 4, 5]
    best = min(scores, key=lambda s: (-scores[s], s))
    kept = sorted(sorted(scores, key=lambda s: (-scores[s], s))[:2])
    assert sorted(p.name for p in (out / TRAIN_STATE_DIR).glob("*.ckpt")) == (
        [f"best-step{s:08d}.ckpt" for s in kept] + [LAST_CHECKPOINT])
    record = torch.load(model, weights_only=True)["leod_training"]
    assert record == {"step": best, "selected": "best", "val_AP": scores[best]}
    assert_same_weights(load_rvt_state_dict(model), load_rvt_state_dict(out / TRAIN_STATE_DIR /
                                                                         f"best-step{best:08d}.ckpt"))


def test_model_ckpt_holds_the_best_or_the_last_weights_and_evaluate_reports_their_step(small_dataset, tmp_path,
                                                                                      scripted_ap):
    best_run, last_run = tmp_path / "best", tmp_path / "last"
    best_model = train(small_dataset, best_run, job())
    last_model = train(small_dataset, last_run, job(weights="last"))
    assert stored_val_ap(best_run) == SCRIPTED_AP
    assert sorted(p.name for p in (best_run / TRAIN_STATE_DIR).glob("best-*")) == [
        "best-step00000002.ckpt", "best-step00000006.ckpt"]   # step 4 was kept until step 6 replaced it
    assert load_training_record(best_model) == {"step": 2, "selected": "best", "val_AP": 0.3}
    assert_same_weights(load_rvt_state_dict(best_model),
                        load_rvt_state_dict(best_run / TRAIN_STATE_DIR / "best-step00000002.ckpt"))
    assert load_training_record(last_model) == {"step": STEPS, "selected": "last", "val_AP": 0.05}
    assert_same_weights(load_rvt_state_dict(last_model), last_weights(last_run))
    assert_same_weights(last_weights(best_run), last_weights(last_run))
    best, last = load_rvt_state_dict(best_model), load_rvt_state_dict(last_model)
    assert not all(torch.equal(best[key], last[key]) for key in best)

    cfg = InferenceConfig(sequence_length=5, batch_size=4)
    result = evaluate_checkpoint(best_model, small_dataset.root, out=tmp_path / "m.json", camera="synth", cfg=cfg,
                                 progress=False)
    assert (result["weights_step"], result["weights_selected"], result["weights_val_AP"]) == (2, "best", 0.3)
    config = RVTConfig.tiny(2, frame_hw(small_dataset.root, False), embed_dim=16, dim_head=16)
    save_model_checkpoint(tmp_path / "imported.ckpt", build_detector(config), config)
    result = evaluate_checkpoint(tmp_path / "imported.ckpt", small_dataset.root, out=tmp_path / "i.json",
                                 camera="synth", cfg=cfg, progress=False)
    assert (result["weights_step"], result["weights_selected"], result["weights_val_AP"]) == (None, None, None)


def test_validation_leaves_the_training_trajectory_unchanged(small_dataset, tmp_path):
    train(small_dataset, tmp_path / "with", job(steps=5, every=1))
    train(small_dataset, tmp_path / "without", job(steps=5, every=0))
    assert len(val_rows(tmp_path / "with")) == 5 and not val_rows(tmp_path / "without")
    assert load_training_record(tmp_path / "without" / MODEL_CHECKPOINT) == {"step": 5, "selected": "last",
                                                                             "val_AP": None}
    assert_same_weights(last_weights(tmp_path / "with"), last_weights(tmp_path / "without"))
    states = [torch.load(tmp_path / run / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)["leod_rnn_states"]
              for run in ("with", "without")]
    pairs = [(a, b) for w in states[0][0] for sa, sb in zip(states[0][0][w], states[1][0][w]) for a, b in zip(sa, sb)]
    assert pairs and all(torch.equal(a, b) for a, b in pairs)


class CrashAtStep(pl.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step:
            raise RuntimeError(f"killed at step {self.step}")


class SignalDuringStep(pl.Callback):
    """Sends SIGUSR1 to this process while step ``step`` trains: the job saves last.ckpt at its end and exits."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGUSR1)


@pytest.fixture
def straight(small_dataset, tmp_path, scripted_ap) -> Path:
    return train(small_dataset, tmp_path / "straight", job(checkpoint_every_n_steps=3))


def test_killed_run_with_validation_resumes_to_the_same_selection(small_dataset, tmp_path, straight):
    out = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="killed at step 5"):
        train(small_dataset, out, job(checkpoint_every_n_steps=3, callbacks=(CrashAtStep(5),)))
    assert stored_val_ap(out) == {2: 0.3}   # last.ckpt of step 3; steps 4 and 5 are trained again
    train(small_dataset, out, job(checkpoint_every_n_steps=3))
    assert stored_val_ap(out) == SCRIPTED_AP
    assert load_training_record(out / MODEL_CHECKPOINT) == load_training_record(straight)
    assert_same_weights(load_rvt_state_dict(out / MODEL_CHECKPOINT), load_rvt_state_dict(straight))
    assert_same_weights(last_weights(out), last_weights(straight.parent))


@pytest.mark.parametrize("step", [4, STEPS])
def test_a_validation_step_preempted_before_validating_is_validated_on_resume(small_dataset, tmp_path, straight,
                                                                              step):
    out = tmp_path / "preempted"
    with pytest.raises(Preempted):
        train(small_dataset, out, job(checkpoint_every_n_steps=3, callbacks=(SignalDuringStep(step),)))
    state = torch.load(out / TRAIN_STATE_DIR / LAST_CHECKPOINT, weights_only=True)
    assert state["global_step"] == step and step not in state["callbacks"]["Validation"]["val_AP"]
    train(small_dataset, out, job(checkpoint_every_n_steps=3))
    assert stored_val_ap(out) == SCRIPTED_AP
    assert [int(row["step"]) for row in val_rows(out)] == sorted(SCRIPTED_AP)   # logged once, by either run
    assert load_training_record(out / MODEL_CHECKPOINT) == load_training_record(straight)
    assert_same_weights(load_rvt_state_dict(out / MODEL_CHECKPOINT), load_rvt_state_dict(straight))


def test_best_and_kept_steps_rank_by_val_ap_then_by_step(small_dataset, tmp_path):
    config = RVTConfig.tiny(2, frame_hw(small_dataset.root, False), embed_dim=16, dim_head=16)
    cfg = ValidationConfig(every_n_steps=3, camera="synth", save_top_k=2)
    validation = Validation(cfg, small_dataset.root, InferenceConfig(), tmp_path, 10, config)
    assert [s for s in range(12) if validation.is_validation_step(s)] == [3, 6, 9, 10]
    assert validation.best_step() is None
    validation.scores = {3: 0.2, 6: math.nan, 9: 0.4, 10: 0.2}
    assert validation.best_step() == 9 and validation.kept_steps() == [3, 9]   # tie 0.2: the earlier step
    validation.scores = {3: 0.0, 6: 0.0}
    assert validation.best_step() == 3


def test_validation_settings_are_checked(small_dataset, tmp_path):
    with pytest.raises(ValueError, match="validation.camera is required"):
        ValidationConfig(every_n_steps=100)
    with pytest.raises(ValueError, match="validation.weights must be one of"):
        ValidationConfig(weights="median")
    assert not ValidationConfig().enabled and ValidationConfig().confidence_threshold == 0.1
    config = RVTConfig.tiny(2, frame_hw(small_dataset.root, False), embed_dim=16, dim_head=16)
    with pytest.raises(ValueError, match="camera gen4 has 3 classes, the model 2"):
        Validation(ValidationConfig(every_n_steps=1, camera="gen4"), small_dataset.root, InferenceConfig(),
                   tmp_path, 2, config)
    with pytest.raises(ValueError, match="frames are"):
        Validation(ValidationConfig(every_n_steps=1, camera="synth"), small_dataset.root, InferenceConfig(),
                   tmp_path, 2, dataclasses.replace(config, input_hw=(32, 32)))
    with pytest.raises(ValueError, match="split directory is missing"):
        Validation(ValidationConfig(every_n_steps=1, camera="synth", split="holdout"), small_dataset.root,
                   InferenceConfig(), tmp_path, 2, config)
    cfg = ValidationConfig(every_n_steps=1, camera="synth").inference_config(5, False, "bf16-mixed")
    assert (cfg.confidence_threshold, cfg.nms_threshold, cfg.sequence_length, cfg.autocast_dtype) == (
        0.1, 0.45, 5, "bfloat16")


def test_cli_validates_with_val_every_and_camera(small_dataset, tmp_path):
    from leod_core.cli import main
    config = tmp_path / "c.yaml"
    config.write_text("model:\n  size: tiny\n  overrides: {embed_dim: 16, dim_head: 16}\n"
                      "data: {sequence_length: 5, batch_size: 4, sampling: random, augment: false}\n")
    assert main(["--no-progress", "train", "--config", str(config), "--steps", "2", "--accelerator", "cpu",
                 "--data", str(small_dataset.root), "--split", str(small_dataset.split), "--out", str(tmp_path / "r"),
                 "--val-every", "1", "--camera", "synth"]) == 0
    assert sorted(stored_val_ap(tmp_path / "r")) == [1, 2]
    assert load_training_record(tmp_path / "r" / MODEL_CHECKPOINT)["selected"] == "best"
