"""End to end on synthetic events, CPU: a tiny RVT learns the task, and its pseudo labels are good.

Measured (seed 11, 300 steps, 6 x 4 s training sequences, 3 test sequences, 2-core CPU):
untrained AP 0.000 / AP50 0.000; trained AP 0.086 / AP50 0.334 (car AP50 0.64, pedestrian AP50 0.12).
Pseudo labels of the WSOD 10 % split (4 views + tracker), on frames whose GT the split withholds:
precision@0.5 0.74, recall@0.5 0.79 (mean over classes). The round-0 model trained on every label of these
sequences, so these numbers are optimistic; they show that the whole pipeline carries real detections.
Thresholds below leave a wide margin.
"""
from __future__ import annotations

import dataclasses
import logging
import time

import pytest

from leod_core.data.preprocess import PRESETS, preprocess_dataset
from leod_core.data.splits import make_split, read_split, write_split
from leod_core.data.synth import SynthConfig, generate_dataset
from leod_core.evaluation.evaluate import evaluate_checkpoint
from leod_core.models.checkpoint import load_model_checkpoint, save_model_checkpoint
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.models.inference import InferenceConfig
from leod_core.models.lightning_module import OptimConfig
from leod_core.models.train import TrainerConfig
from leod_core.models.train_job import DataConfig, ModelChoice, TrainJob, run_train_job
from leod_core.pseudo.quality import QualityConfig, evaluate_pseudo_labels
from leod_core.pseudo.shard_job import pseudo_label_shard
from leod_core.pseudo.shards import merge_shards
from leod_core.pseudo.tracker import TrackerConfig
from leod_core.pseudo.tta import TTAConfig, predict_sequence_views

OVERRIDES = {"embed_dim": 16, "dim_head": 16}
log = logging.getLogger(__name__)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("e2e")
    synth = dataclasses.replace(SynthConfig(), duration_s=4.0, num_train=6, num_val=1, num_test=3, seed=11)
    generate_dataset(base / "raw", synth, workers=2, progress=False)
    preprocess_dataset(base / "raw", base / "data", PRESETS["synth"], workers=2, progress=False)
    write_split(base / "full.json", make_split(base / "data/train", "full", 1.0, 5))
    write_split(base / "wsod.json", make_split(base / "data/train", "wsod", 0.1, 5))
    job = TrainJob(model=ModelChoice(size="tiny", overrides=OVERRIDES),
                   optim=OptimConfig(learning_rate=2e-3, max_steps=300),
                   data=DataConfig(sampling="mixed", batch_size=8, sequence_length=5),
                   trainer=TrainerConfig(accelerator="cpu", progress_bar=False, checkpoint_every_n_steps=100))
    checkpoint = run_train_job(job, base / "data", base / "round0", base / "full.json", pseudo=False)
    return base, checkpoint


@pytest.mark.slow
def test_tiny_rvt_learns_the_synthetic_task(trained):
    base, checkpoint = trained
    config = RVTConfig.tiny(2, (64, 96), **OVERRIDES)
    untrained = base / "untrained.ckpt"
    save_model_checkpoint(untrained, build_detector(config), config)
    cfg = InferenceConfig(sequence_length=5, batch_size=4)
    before = evaluate_checkpoint(untrained, base / "data", out=base / "before.json", camera="synth", cfg=cfg,
                                 progress=False)
    after = evaluate_checkpoint(checkpoint, base / "data", out=base / "after.json", camera="synth", cfg=cfg,
                                progress=False)
    assert before["AP_50"] < 0.01
    assert after["AP_50"] > 0.15 and after["AP"] > 0.03
    assert after["AP_50_car"] > 0.3


@pytest.mark.slow
def test_pseudo_labels_of_a_trained_model_have_precision_and_recall(trained):
    base, checkpoint = trained
    tta = TTAConfig(sequence_length=5, batch_size=4)
    for shard in range(2):
        pseudo_label_shard(checkpoint, base / "data", base / "wsod.json", base / f"shards/{shard}", shard, 2,
                           tta, TrackerConfig(), progress=False)
    merge_shards([base / "shards/0", base / "shards/1"], base / "pseudo", base / "data", 2)
    quality = evaluate_pseudo_labels(base / "pseudo", base / "data", read_split(base / "wsod.json"),
                                     QualityConfig.for_dataset("synth"))
    assert quality["num_frames"] > 50
    assert quality["precision"]["0.5"] > 0.4 and quality["recall"]["0.5"] > 0.4


@pytest.mark.slow
@pytest.mark.parametrize("autocast", [None, "bfloat16"])
def test_batched_views_equal_one_view_at_a_time_with_a_trained_model(trained, autocast):
    base, checkpoint = trained
    model, _ = load_model_checkpoint(checkpoint)
    model.eval()
    kept = {name: set(frames) for name, frames in read_split(base / "wsod.json").labeled_frames.items()}
    results, speed = {}, {}
    for batched in (True, False):
        cfg = TTAConfig(sequence_length=5, batch_size=4 if batched else 1, batched=batched, autocast_dtype=autocast)
        start = time.perf_counter()
        results[batched] = {m.name: m for m in predict_sequence_views(model, base / "data/train", None, kept, cfg, "cpu")}
        speed[batched] = sum(m.num_frame_views for m in results[batched].values()) / (time.perf_counter() - start)
    log.info("frame-views/s (%s): batched %.0f, one view at a time %.0f", autocast or "fp32", speed[True], speed[False])
    matched = total = 0
    for name, merged in results[False].items():
        other = results[True][name]
        assert merged.pseudo.keys() == other.pseudo.keys() or autocast
        for frame, rows in merged.pseudo.items():
            for row in rows:
                total += 1
                candidates = other.pseudo.get(frame, rows[:0])
                close = ((abs(candidates["x"] - row["x"]) < 0.5) & (abs(candidates["y"] - row["y"]) < 0.5)
                         & (candidates["class_id"] == row["class_id"])
                         & (abs(candidates["objectness"] - row["objectness"]) < (1e-4 if autocast is None else 0.05)))
                matched += bool(close.any())
    # fp32: every box has its twin; bf16 changes scores near the 0.01 cut-off, so allow 2 % unmatched.
    assert total > 100 and matched >= (total if autocast is None else 0.98 * total)
