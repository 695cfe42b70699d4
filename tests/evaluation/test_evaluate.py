"""Checkpoint evaluation: ground truth as RVT loads it, predictions at the labeled frames, the metrics JSON."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import write_sequence
from leod_core.data.formats import (PROPHESEE_BBOX_DTYPE, SequencePaths, read_labels,
                                    read_objframe_idx_2_repr_idx, read_timestamps_us)
from leod_core.evaluation import evaluate as ev
from leod_core.evaluation.detection import METRIC_KEYS
from leod_core.models.checkpoint import save_model_checkpoint
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.models.inference import InferenceConfig, SequencePredictions

HW = (64, 96)


SEQS = {"a": (9, [1, 3, 5, 8]), "b": (5, [0, 2, 4])}


def make_dataset(root: Path, ds2: bool = False, t0_us: int = 600_000) -> Path:
    hw = (HW[0] // 2, HW[1] // 2) if ds2 else HW
    for i, (name, (n, labeled)) in enumerate(SEQS.items()):
        write_sequence(root / "test" / name, n, labeled, seed=i, hw=hw, ds2=ds2, t0_us=t0_us)
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("eval") / "data")


def save_checkpoint(path: Path, hw=HW, spread: bool = True, num_classes: int = 2) -> Path:
    torch.manual_seed(0)
    cfg = RVTConfig.tiny(num_classes=num_classes, input_hw=hw, embed_dim=16, dim_head=16)
    model = build_detector(cfg)
    if spread:  # logits with std ~1 instead of the 0.01 prior, so the untrained model detects something
        with torch.no_grad():
            for conv in list(model.yolox_head.obj_preds) + list(model.yolox_head.cls_preds):
                conv.bias.zero_()
                conv.weight.mul_(3e4)
    save_model_checkpoint(path, model, cfg)
    return path


def oracle(shift: int = 0, scale: float = 1.0):
    """Replacement of ``iter_sequence_predictions`` that predicts the raw ground truth of labeled frame
    ``k + shift`` at labeled frame ``k`` (score 1), read independently of the evaluator's GT loader."""
    def fake(model, data_dir, split, cfg, device="cpu", sequences=None, frames="labeled", progress=True):
        assert frames == "labeled"
        for name in sequences:
            paths = SequencePaths(Path(data_dir) / split / name)
            labels = read_labels(paths.labels)
            o2r = read_objframe_idx_2_repr_idx(paths.objframe_idx_2_repr_idx)
            ts = read_timestamps_us(paths.repr_timestamps)
            dets = []
            for k in range(len(o2r)):
                src = min(max(k + shift, 0), len(o2r) - 1)
                rows = labels.frame(src)
                x1, y1 = rows["x"] * scale, rows["y"] * scale
                x2, y2 = (rows["x"] + rows["w"]) * scale, (rows["y"] + rows["h"]) * scale
                dets.append(np.stack([x1, y1, x2, y2, np.ones_like(x1), np.ones_like(x1),
                                      rows["class_id"].astype(np.float32)], axis=1).astype(np.float32))
            yield SequencePredictions(name=name, frame_hw=HW, repr_idx=o2r, timestamps_us=ts[o2r],
                                      objframe_idx=np.arange(len(o2r)), detections=dets,
                                      stream_range=(0, len(ts)))
    return fake


def test_end_to_end_writes_metrics_json(dataset, tmp_path):
    ckpt = save_checkpoint(tmp_path / "model.ckpt")
    out = tmp_path / "eval" / "test_metrics.json"
    cfg = InferenceConfig(batch_size=2, sequence_length=3)
    result = ev.evaluate_checkpoint(ckpt, dataset, out=out, camera="gen1", cfg=cfg, backend="pycocotools",
                                    progress=False)
    stored = json.loads(out.read_text())
    assert stored == result
    for key in METRIC_KEYS + ("AP_car", "AP_pedestrian", "AP_50_car"):
        assert -1.0 <= stored[key] <= 1.0
    assert stored["checkpoint"] == str(ckpt) and stored["split"] == "test" and stored["camera"] == "gen1"
    assert stored["backend"] == "pycocotools"
    assert stored["num_sequences"] == 2 and stored["num_frames"] == 7 and stored["num_gt_boxes"] == 14
    assert stored["num_detections"] > 0
    assert stored["confidence_threshold"] == 0.001 and stored["autocast_dtype"] is None
    assert not list(out.parent.glob(".*tmp*"))


def test_untrained_prior_gives_zero_map(dataset, tmp_path):
    ckpt = save_checkpoint(tmp_path / "prior.ckpt", spread=False)  # all scores 1e-4 < 0.001
    result = ev.evaluate_checkpoint(ckpt, dataset, out=tmp_path / "m.json", camera="gen1",
                                    cfg=InferenceConfig(batch_size=2, sequence_length=4), progress=False)
    assert result["num_detections"] == 0 and result["AP"] == 0.0


def test_oracle_predictions_give_ap_one(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "iter_sequence_predictions", oracle())
    ckpt = save_checkpoint(tmp_path / "model.ckpt")
    result = ev.evaluate_checkpoint(ckpt, dataset, out=tmp_path / "m.json", camera="gen1", progress=False)
    for key in ("AP", "AP_50", "AP_75", "AP_car", "AP_pedestrian"):
        assert result[key] == pytest.approx(1.0), key
    assert result["num_frames"] == 7


def test_oracle_off_by_one_frame_is_penalised(dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(ev, "iter_sequence_predictions", oracle(shift=1))
    ckpt = save_checkpoint(tmp_path / "model.ckpt")
    result = ev.evaluate_checkpoint(ckpt, dataset, out=tmp_path / "m.json", camera="gen1", progress=False)
    assert result["AP"] < 0.9


def test_oracle_on_downsampled_data_and_late_timestamps(tmp_path, monkeypatch):
    """Gen4-style half-size frames (boxes stored at full size, halved by the loader) and label times past
    2^24 µs, where RVT's float32 time rounding kicks in."""
    data = make_dataset(tmp_path / "ds2", ds2=True, t0_us=20_000_001)
    half = (HW[0] // 2, HW[1] // 2)
    monkeypatch.setattr(ev, "iter_sequence_predictions", oracle(scale=0.5))
    ckpt = save_checkpoint(tmp_path / "model.ckpt", hw=half)
    cfg = InferenceConfig(downsampled_by_2=True)
    result = ev.evaluate_checkpoint(ckpt, data, out=tmp_path / "m.json", camera="gen1", cfg=cfg, progress=False)
    assert result["AP"] == pytest.approx(1.0) and result["downsampled_by_2"] is True


def test_ground_truth_as_rvt_loads_it(tmp_path):
    b0 = np.zeros(2, dtype=PROPHESEE_BBOX_DTYPE)  # one box crossing the border, one inside
    b0[["x", "y", "w", "h", "class_id"]] = [(-4.0, 10.0, 40.0, 30.0, 1), (20.0, 5.0, 30.0, 20.0, 0)]
    b1 = np.zeros(1, dtype=PROPHESEE_BBOX_DTYPE)  # a box left of the frame: clamped flat, dropped
    b1[["x", "y", "w", "h", "class_id"]] = [(-30.0, 10.0, 20.0, 30.0, 0)]
    root = tmp_path / "test" / "s"
    write_sequence(root, 6, [2, 4], seed=0, t0_us=16_777_000, step_us=100, boxes=[b0, b1])
    gt = ev.load_ground_truth(root)
    assert gt.num_frames == 1
    assert gt.frame_times_us.tolist() == [16_777_200, -1]
    assert gt.boxes.dtype == PROPHESEE_BBOX_DTYPE and len(gt.boxes) == 2
    assert gt.boxes["x"].tolist() == [0.0, 20.0] and gt.boxes["w"].tolist() == [36.0, 30.0]
    assert gt.boxes["class_id"].tolist() == [1, 0]
    # late times go through float32 as in RVT: 16_777_217 -> 16_777_216
    assert ev.rvt_time_us([16_777_217, 20_000_001, 500_000]).tolist() == [16_777_216, 20_000_000, 500_000]
    # predictions of the frame without GT are not evaluated; the others get the GT time
    preds = SequencePredictions(name="s", frame_hw=HW, repr_idx=np.array([2, 4]),
                                timestamps_us=np.array([16_777_200, 16_777_400]), objframe_idx=np.array([0, 1]),
                                detections=[np.array([[1, 2, 30, 40, 0.9, 0.7, 1]], np.float32)] * 2,
                                stream_range=(0, 6))
    boxes = ev.predictions_for_evaluation(preds, gt)
    assert boxes["t"].tolist() == [16_777_200]


def test_ground_truth_downsampled_by_2(tmp_path):
    b = np.zeros(2, dtype=PROPHESEE_BBOX_DTYPE)
    b[["x", "y", "w", "h", "class_id"]] = [(10.0, 20.0, 40.0, 30.0, 0), (150.0, 100.0, 60.0, 40.0, 1)]
    root = tmp_path / "test" / "s"
    write_sequence(root, 3, [1], seed=0, hw=(64, 96), ds2=True, t0_us=600_000, boxes=[b])  # sensor 128 x 192
    gt = ev.load_ground_truth(root, downsampled_by_2=True)
    # halved; the second box's corner (210, 140) is clamped to the sensor (191, 127), halved (95.5, 63.5)
    # and clamped to the half frame (95, 63)
    assert gt.boxes["x"].tolist() == [5.0, 75.0] and gt.boxes["w"].tolist() == [20.0, 20.0]
    assert gt.boxes["y"].tolist() == [10.0, 50.0] and gt.boxes["h"].tolist() == [15.0, 13.0]


def test_argument_errors(dataset, tmp_path):
    with pytest.raises(ValueError, match="classes"):
        ev.evaluate_checkpoint(save_checkpoint(tmp_path / "c3.ckpt", num_classes=3), dataset,
                               out=tmp_path / "m.json", camera="gen1", progress=False)
    with pytest.raises(ValueError, match="frames are"):
        ev.evaluate_checkpoint(save_checkpoint(tmp_path / "hw.ckpt", hw=(32, 48)), dataset,
                               out=tmp_path / "m.json", camera="gen1", progress=False)
    with pytest.raises(ValueError, match="camera"):
        ev.evaluate_checkpoint(tmp_path / "c3.ckpt", dataset, out=tmp_path / "m.json", camera="gen2")
    assert not (tmp_path / "m.json").exists()


def test_summary_is_readable():
    text = ev.format_summary({"checkpoint": "m.ckpt", "split": "test", "AP": 0.4567, "AP_S": -1.0,
                              "AP_car": 0.5}, ("car", "pedestrian"))
    assert "AP 45.7" in text and "AP_S n/a" in text and "AP_car 50.0" in text
