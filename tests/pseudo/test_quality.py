"""Pseudo-label quality (LEOD ``val_dst.py`` / ``evaluate_label``) on hand-built tiny datasets.

The original dataset is built with ``builders.write_sequence`` (GT at chosen representation indices, 64x96
sensor); the pseudo dataset is written directly in LEOD's pseudo layout (``PSEUDO_BBOX_DTYPE`` rows,
``t == 0`` pseudo, ``t != 0`` GT, class 1024 ignore; ``objframe_idx_2_repr_idx`` per pseudo frame).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from builders import write_sequence
from leod_core.data.formats import (IGNORE_CLASS_ID, PROPHESEE_BBOX_DTYPE, PSEUDO_BBOX_DTYPE, SequenceLabels,
                                    SequencePaths, write_labels, write_npy)
from leod_core.data.splits import LabelSplit
from leod_core.pseudo.quality import (QualityConfig, bboxes_iou_cxcywh, evaluate_pseudo_labels, format_summary,
                                      write_quality)

HW = (64, 96)
KEYS = ("0.25", "0.5", "0.75")
NO_TRACK = QualityConfig(refilter_min_track_len=0)
CAR, PED = 0, 1


# --------------------------------------------------------------------------------------------- builders
GT_FRAME_PERIOD_US = 50_000


def gt(*boxes) -> np.ndarray:
    """GT rows (Prophesee dtype) from (x, y, w, h, class) tuples."""
    out = np.zeros(len(boxes), dtype=PROPHESEE_BBOX_DTYPE)
    for i, (x, y, w, h, c) in enumerate(boxes):
        out[i] = (1, x, y, w, h, c, 0, 1.0)
    return out


def pseudo(*boxes, t: int = 0) -> np.ndarray:
    """Pseudo rows from (x, y, w, h, class[, obj, cls]) tuples; scores default 0.9."""
    out = np.zeros(len(boxes), dtype=PSEUDO_BBOX_DTYPE)
    for i, box in enumerate(boxes):
        x, y, w, h, c = box[:5]
        obj, cls = box[5:7] if len(box) > 5 else (0.9, 0.9)
        out[i] = (t, x, y, w, h, c, cls, obj)
    return out


def as_pseudo(rows: np.ndarray) -> np.ndarray:
    """GT rows copied into the pseudo dtype as LEOD's pseudo dataset stores kept GT (``objectness = conf``)."""
    out = np.zeros(len(rows), dtype=PSEUDO_BBOX_DTYPE)
    for name in ("t", "x", "y", "w", "h", "class_id", "class_confidence"):
        out[name] = rows[name]
    out["objectness"] = rows["class_confidence"]
    return out


def timed(frames: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The frames with their GT rows (``t != 0``) stamped with one increasing time per representation index, as
    real labels are (readers reject frames out of time order)."""
    out = {}
    for r, rows in frames.items():
        out[r] = rows.copy()
        out[r]["t"][rows["t"] != 0] = (r + 1) * GT_FRAME_PERIOD_US
    return out


def write_source(root: Path, name: str, num_reprs: int, frames: dict[int, np.ndarray], ds2: bool = False) -> None:
    frames = timed(frames)
    labeled = sorted(frames)
    write_sequence(root / "train" / name, num_reprs, labeled, seed=0, hw=HW, ds2=ds2,
                   boxes=[frames[r] for r in labeled])


def write_pseudo(root: Path, name: str, frames: dict[int, np.ndarray]) -> None:
    frames = timed(frames)
    paths = SequencePaths(root / "train" / name)
    reprs = sorted(r for r in frames if len(frames[r]))
    if reprs:
        seq = SequenceLabels.from_frames([frames[r] for r in reprs])
    else:
        seq = SequenceLabels(np.zeros(0, dtype=PSEUDO_BBOX_DTYPE), np.zeros(0, dtype=np.int64))
    write_labels(paths.labels, seq)
    write_npy(paths.objframe_idx_2_repr_idx, np.asarray(reprs, dtype=np.int64))


def wsod(frames: dict[str, list[int]]) -> LabelSplit:
    return LabelSplit("wsod", 0.5, 5, frames)


def run(tmp_path: Path, split: LabelSplit, cfg: QualityConfig = NO_TRACK, ds2: bool = False) -> dict:
    return evaluate_pseudo_labels(tmp_path / "pseudo", tmp_path / "src", split, cfg, downsampled_by_2=ds2)


def assert_metric(result_part: dict, expected: tuple[float, float, float]) -> None:
    assert [result_part[k] for k in KEYS] == pytest.approx(list(expected))


CAR_A = (10, 10, 40, 20, CAR)
CAR_B = (50, 30, 30, 25, CAR)
PED_A = (60, 5, 12, 30, PED)


# ------------------------------------------------------------------------------------------------ tests
def test_iou_matches_hand_value():
    a = torch.tensor([[30.0, 20.0, 40.0, 20.0]])           # x 10..50, y 10..30
    b = torch.tensor([[40.0, 20.0, 40.0, 20.0], [200.0, 200.0, 5.0, 5.0]])
    iou = bboxes_iou_cxcywh(a, b)
    assert iou[0, 0].item() == pytest.approx(0.6)
    assert iou[0, 1].item() == 0.0


def test_perfect_pseudo_labels(tmp_path):
    frames = {3: gt(CAR_A, PED_A), 5: gt(CAR_B), 7: gt(CAR_A, CAR_B, PED_A)}
    write_source(tmp_path / "src", "s0", 10, frames)
    write_pseudo(tmp_path / "pseudo", "s0", {3: as_pseudo(frames[3]),           # kept GT frame
                                              5: pseudo(CAR_B), 7: pseudo(CAR_A, CAR_B, PED_A)})
    res = run(tmp_path, wsod({"s0": [0]}))
    for metric in ("precision", "recall"):
        assert_metric(res[metric], (1, 1, 1))
        for name in ("car", "pedestrian"):
            assert_metric(res["per_class"][name][metric], (1, 1, 1))
    assert res["num_frames"] == 2 and res["num_sequences"] == 1
    car = res["per_class"]["car"]
    assert car["num_frames"] == 2 and car["gt_total"] == 3 and car["pred_total"] == 3
    assert car["gt_num"] == pytest.approx(1.5) and car["pred_num"] == pytest.approx(1.5)
    assert res["per_class"]["pedestrian"]["num_frames"] == 1


def test_no_pseudo_labels(tmp_path):
    frames = {2: gt(CAR_A), 4: gt(CAR_B, PED_A)}
    write_source(tmp_path / "src", "s0", 6, frames)
    write_pseudo(tmp_path / "pseudo", "s0", {})
    res = run(tmp_path, wsod({"s0": []}))
    for metric in ("precision", "recall"):
        assert_metric(res[metric], (0, 0, 0))
    assert res["per_class"]["car"]["pred_num"] == 0 and res["per_class"]["car"]["num_frames"] == 2
    assert res["num_frames"] == 2


def test_missing_pseudo_sequence_counts_as_empty(tmp_path):
    write_source(tmp_path / "src", "s0", 6, {2: gt(CAR_A)})
    (tmp_path / "pseudo" / "train").mkdir(parents=True)
    res = run(tmp_path, wsod({"s0": []}))
    assert_metric(res["recall"], (0, 0, 0))
    assert res["num_frames"] == 1


def test_shifted_box_with_iou_0_6(tmp_path):
    # GT x 10..50; pseudo shifted by 10 px: intersection 30x20, union 1000 -> IoU 0.6
    write_source(tmp_path / "src", "s0", 6, {2: gt(CAR_A)})
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo((20, 10, 40, 20, CAR))})
    res = run(tmp_path, wsod({"s0": []}))
    assert_metric(res["per_class"]["car"]["recall"], (1, 1, 0))
    assert_metric(res["per_class"]["car"]["precision"], (1, 1, 0))
    assert res["per_class"]["pedestrian"]["num_frames"] == 0
    assert res["per_class"]["pedestrian"]["recall"]["0.5"] is None
    # only car has evaluated frames: the class mean is car's value
    assert_metric(res["recall"], (1, 1, 0))


def test_many_to_many_matching(tmp_path):
    # two pseudo boxes on one GT (both IoU > 0.5), one GT unmatched: P = 1, R = 1/2 at 0.5
    write_source(tmp_path / "src", "s0", 6, {2: gt(CAR_A, CAR_B)})
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo(CAR_A, (12, 10, 40, 20, CAR))})
    res = run(tmp_path, wsod({"s0": []}))
    assert res["per_class"]["car"]["precision"]["0.5"] == pytest.approx(1.0)
    assert res["per_class"]["car"]["recall"]["0.5"] == pytest.approx(0.5)


def test_ignore_rows_and_low_scores_are_dropped(tmp_path):
    write_source(tmp_path / "src", "s0", 6, {2: gt(CAR_A, PED_A)})
    far = (70, 40, 20, 20)
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo(
        CAR_A, PED_A,
        (*far, IGNORE_CLASS_ID),              # tracker-rejected / inpainted box
        (*far, CAR, 0.005, 0.9),              # objectness below 0.01
        (*far, CAR, 0.9, 0.01),               # class score not > 0.01 (strict)
        (*far, PED, 0.4, 0.4),                # kept at 0.01, dropped by a 0.5 ped threshold below
        (*far, 5, 0.9, 0.9),                  # a class id outside the class list never passes
    )})
    res = run(tmp_path, wsod({"s0": []}))
    assert res["per_class"]["car"]["precision"]["0.5"] == pytest.approx(1.0)
    assert res["per_class"]["car"]["pred_total"] == 1
    assert res["per_class"]["pedestrian"]["precision"]["0.5"] == pytest.approx(0.5)
    cfg = QualityConfig(refilter_min_track_len=0, obj_thresh=(0.01, 0.5), cls_thresh=(0.01, 0.5))
    res = run(tmp_path, wsod({"s0": []}), cfg)
    assert res["per_class"]["pedestrian"]["precision"]["0.5"] == pytest.approx(1.0)
    assert res["per_class"]["pedestrian"]["pred_total"] == 1


def test_kept_gt_frames_are_not_evaluated(tmp_path):
    frames = {1: gt(CAR_A), 3: gt(CAR_B), 5: gt(CAR_A)}
    write_source(tmp_path / "src", "s0", 8, frames)
    # kept frames 0 and 2 (reprs 1 and 5) carry their GT in the pseudo dataset; repr 3 has a wrong pseudo box
    write_pseudo(tmp_path / "pseudo", "s0", {1: as_pseudo(frames[1]), 3: pseudo((0, 40, 10, 10, CAR)),
                                              5: as_pseudo(frames[5])})
    res = run(tmp_path, wsod({"s0": [0, 2]}))
    assert res["num_frames"] == 1
    assert_metric(res["recall"], (0, 0, 0))
    # a pseudo dataset holding GT at a withheld frame was made with another split
    res_all = run(tmp_path, wsod({"s0": [0, 1, 2]}))
    assert res_all["num_frames"] == 0 and res_all["precision"]["0.5"] is None
    with pytest.raises(ValueError, match="ground-truth rows"):
        run(tmp_path, wsod({"s0": [0]}))


def test_frames_without_gt_of_a_class_do_not_count_for_it(tmp_path):
    # frame at repr 2: car only, with a spurious pedestrian pseudo box (never seen);
    # frame at repr 4: car + pedestrian, both found
    write_source(tmp_path / "src", "s0", 6, {2: gt(CAR_A), 4: gt(CAR_B, PED_A)})
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo(CAR_A, (70, 40, 20, 20, PED)), 4: pseudo(CAR_B, PED_A)})
    res = run(tmp_path, wsod({"s0": []}))
    ped = res["per_class"]["pedestrian"]
    assert ped["num_frames"] == 1 and ped["pred_total"] == 1
    assert_metric(ped["precision"], (1, 1, 1))
    assert res["per_class"]["car"]["num_frames"] == 2


def test_weighted_aggregation_over_sequences(tmp_path):
    # s0: 2 withheld car frames with recall 1 and 1/2 (sequence mean 0.75)
    # s1: 3 withheld car frames with recall 0, 0, 1 (sequence mean 1/3)
    # LEOD: AverageMeter(n = frames) -> (0.75 * 2 + 1/3 * 3) / 5 = 0.5 (not the plain mean 0.5417)
    write_source(tmp_path / "src", "s0", 6, {2: gt(CAR_A), 4: gt(CAR_A, CAR_B)})
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo(CAR_A), 4: pseudo(CAR_A)})
    write_source(tmp_path / "src", "s1", 8, {1: gt(CAR_A), 3: gt(CAR_A), 5: gt(CAR_B)})
    write_pseudo(tmp_path / "pseudo", "s1", {5: pseudo(CAR_B)})
    res = run(tmp_path, wsod({"s0": [], "s1": []}))
    car = res["per_class"]["car"]
    assert car["recall"]["0.5"] == pytest.approx(0.5)
    # precision: s0 frames 1, 1; s1 frames 0, 0 (no pseudo), 1 -> 3 / 5
    assert car["precision"]["0.5"] == pytest.approx(0.6)
    assert car["num_frames"] == 5 and car["gt_total"] == 6 and car["pred_total"] == 3
    assert car["gt_num"] == pytest.approx(6 / 5) and car["pred_num"] == pytest.approx(3 / 5)
    assert res["num_frames"] == 5 and res["num_sequences"] == 2


def test_ssod_unlabeled_sequences_use_all_frames(tmp_path):
    write_source(tmp_path / "src", "a_labeled", 6, {2: gt(CAR_A), 4: gt(CAR_B)})
    write_pseudo(tmp_path / "pseudo", "a_labeled", {2: as_pseudo(gt(CAR_A)), 4: as_pseudo(gt(CAR_B))})
    write_source(tmp_path / "src", "b_unlabeled", 8, {1: gt(CAR_A), 3: gt(CAR_B), 5: gt(PED_A)})
    write_pseudo(tmp_path / "pseudo", "b_unlabeled", {1: pseudo(CAR_A), 5: pseudo(PED_A)})
    split = LabelSplit("ssod", 0.5, 5, {"a_labeled": [0, 1], "b_unlabeled": []})
    res = run(tmp_path, split)
    assert res["num_frames"] == 3 and res["num_sequences"] == 1
    assert res["per_class"]["car"]["recall"]["0.5"] == pytest.approx(0.5)
    assert res["per_class"]["pedestrian"]["recall"]["0.5"] == pytest.approx(1.0)
    # overall = mean over classes of the per-class values
    assert res["recall"]["0.5"] == pytest.approx(0.75)


def test_boxes_are_clamped_to_the_frame(tmp_path):
    # the GT box reaches past the right edge (x 80..110 on a 96-wide frame -> 80..95 after clamping);
    # the pseudo box is the clamped one: IoU 1 only if GT is clamped like LEOD's loader
    write_source(tmp_path / "src", "s0", 6, {2: gt((80, 10, 30, 20, CAR))})
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo((80, 10, 15, 20, CAR))})
    res = run(tmp_path, wsod({"s0": []}))
    assert_metric(res["per_class"]["car"]["recall"], (1, 1, 1))


def test_downsampled_by_2(tmp_path):
    # boxes in sensor pixels (128 x 192); both are halved and compared on the 64 x 96 frame
    frames = {2: gt((20, 20, 80, 40, CAR)), 4: gt((100, 60, 60, 50, PED))}
    write_source(tmp_path / "src", "s0", 6, frames, ds2=True)
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo((40, 20, 80, 40, CAR)), 4: pseudo((100, 60, 60, 50, PED))})
    res = run(tmp_path, wsod({"s0": []}), ds2=True)
    assert_metric(res["per_class"]["car"]["recall"], (1, 1, 0))        # IoU 0.6, scale-invariant
    assert_metric(res["per_class"]["pedestrian"]["recall"], (1, 1, 1))
    assert res["config"]["sequence_length"] == 128


def test_track_refilter_of_val_dst(tmp_path):
    # an isolated pseudo box at repr 2 and another one at repr 9 (>= 5 empty reprs later, so the first
    # tracklet is finished with 1 hit < 6 and relabeled 1024 by val_dst's forward re-tracking);
    # the repr-9 tracklet is still alive at the end and kept
    write_source(tmp_path / "src", "s0", 12, {2: gt(CAR_A), 9: gt(CAR_B)})
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo(CAR_A), 9: pseudo(CAR_B)})
    split = wsod({"s0": []})
    assert run(tmp_path, split)["recall"]["0.5"] == pytest.approx(1.0)
    res = run(tmp_path, split, QualityConfig(refilter_min_track_len=6, sequence_length=320))
    assert res["recall"]["0.5"] == pytest.approx(0.5)
    assert res["per_class"]["car"]["pred_total"] == 1
    # chunks of 5 reprs: repr 2 is the last box of chunk [0, 5), alive at its end, so it is kept
    res = run(tmp_path, split, QualityConfig(refilter_min_track_len=6, sequence_length=5))
    assert res["recall"]["0.5"] == pytest.approx(1.0)
    # a track spanning 6 frames is kept even when finished
    write_source(tmp_path / "src2", "s0", 16, {r: gt(CAR_A) for r in range(6)} | {14: gt(CAR_B)})
    write_pseudo(tmp_path / "pseudo2", "s0", {r: pseudo(CAR_A) for r in range(6)} | {14: pseudo(CAR_B)})
    res = evaluate_pseudo_labels(tmp_path / "pseudo2", tmp_path / "src2", split, QualityConfig())
    assert res["recall"]["0.5"] == pytest.approx(1.0)


def test_write_quality_json(tmp_path):
    write_source(tmp_path / "src", "s0", 6, {2: gt(CAR_A)})
    write_pseudo(tmp_path / "pseudo", "s0", {2: pseudo((20, 10, 40, 20, CAR))})
    res = run(tmp_path, wsod({"s0": []}))
    out = tmp_path / "out" / "quality.json"
    write_quality(out, res)
    loaded = json.loads(out.read_text())
    assert loaded == res
    assert set(loaded) >= {"precision", "recall", "per_class", "num_frames", "num_sequences"}
    assert list(loaded["precision"]) == list(KEYS)
    assert set(loaded["per_class"]["car"]) >= {"precision", "recall", "gt_num", "pred_num"}
    assert "car" in format_summary(res)


def test_config_validation():
    assert QualityConfig().obj_thresh == (0.01, 0.01)
    gen4 = QualityConfig.for_dataset("gen4")
    assert gen4.class_names == ("pedestrian", "two-wheeler", "car") and gen4.cls_thresh == (0.01,) * 3
    assert gen4.sequence_length == 128
    assert QualityConfig(obj_thresh=0.2).obj_thresh == (0.2, 0.2)
    with pytest.raises(ValueError):
        QualityConfig(obj_thresh=(0.1, 0.2, 0.3))
    with pytest.raises(ValueError):
        QualityConfig(iou_thresholds=(1.5,))
