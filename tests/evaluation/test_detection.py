"""Prophesee-protocol COCO evaluation: RVT's golden cases, hand cases with known answers, edge cases."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from leod_core.data.formats import PROPHESEE_BBOX_DTYPE
from leod_core.evaluation.detection import (METRIC_KEYS, EvalProtocol, evaluate_detections, filter_boxes,
                                            match_times)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "eval"
EXPECTED = json.loads((GOLDEN / "expected.json").read_text())
IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's definition: .50:.05:.95


def boxes(rows) -> np.ndarray:
    """Prophesee boxes from (t, x, y, w, h, class_id, confidence) tuples."""
    out = np.zeros(len(rows), dtype=PROPHESEE_BBOX_DTYPE)
    for i, (t, x, y, w, h, c, conf) in enumerate(rows):
        out[i] = (t, x, y, w, h, c, 0, conf)
    return out


def gen1(gt, pred, **kwargs) -> dict[str, float]:
    return evaluate_detections(gt, pred, 240, 304, "gen1", False, **kwargs)


def frames(times_us, box_rows) -> np.ndarray:
    """The same box rows (x, y, w, h, class, conf) repeated at every time in ``times_us``."""
    return boxes([(t, *row) for t in times_us for row in box_rows])


TIMES = [750_000 + 250_000 * k for k in range(8)]  # 4 Hz like Gen1: windows of ±50 ms do not overlap
GT_ROWS = [(10, 10, 24, 24, 0, 1.0), (50, 50, 60, 50, 1, 1.0), (100, 100, 120, 110, 0, 1.0)]  # S, M, L


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_golden_cases_match_rvt(case):
    exp = EXPECTED[case]
    with np.load(GOLDEN / f"{case}.npz", allow_pickle=False) as data:
        gt = [data[f"gt_{i}"] for i in range(exp["n_sequences"])]
        pred = [data[f"pred_{i}"] for i in range(exp["n_sequences"])]
    metrics = evaluate_detections(gt, pred, exp["height"], exp["width"], exp["camera"], exp["downsampled_by_2"],
                                  backend="pycocotools")
    for key, value in exp["metrics"].items():
        assert metrics[key] == pytest.approx(value, abs=1e-6), key
    classes = EvalProtocol.for_camera(exp["camera"]).classes
    assert {f"AP_{c}" for c in classes} <= metrics.keys()


def test_perfect_predictions_give_ap_one():
    gt = [frames(TIMES, GT_ROWS), frames(TIMES[:3], GT_ROWS[:1])]
    metrics = gen1(gt, [g.copy() for g in gt])
    for key in METRIC_KEYS + ("AP_car", "AP_pedestrian"):
        assert metrics[key] == pytest.approx(1.0), key


def test_no_predictions_give_rvt_zeros():
    gt = [frames(TIMES, GT_ROWS)]
    metrics = gen1(gt, [np.zeros(0, dtype=PROPHESEE_BBOX_DTYPE)])
    assert all(metrics[key] == 0.0 for key in METRIC_KEYS + ("AP_car", "AP_pedestrian"))
    # predictions but no GT: no COCO image, so no detection is evaluated either
    no_gt = gen1([np.zeros(0, dtype=PROPHESEE_BBOX_DTYPE)], gt)
    assert all(no_gt[key] == 0.0 for key in METRIC_KEYS)


def test_shifted_boxes_give_the_coco_fraction_of_thresholds():
    w = h = 40.0
    dx = 8.0  # IoU = (w - dx) / (w + dx) = 2/3: matched at IoU thresholds .50, .55, .60, .65 only
    iou = (w - dx) * h / (2 * w * h - (w - dx) * h)
    expected = float(np.mean(iou >= IOU_THRESHOLDS))
    gt = [frames(TIMES, [(100, 100, w, h, 0, 1.0)])]
    pred = [frames(TIMES, [(100 + dx, 100, w, h, 0, 0.9)])]
    metrics = gen1(gt, pred)
    assert expected == pytest.approx(0.4)
    assert metrics["AP"] == pytest.approx(expected)
    assert metrics["AP_50"] == pytest.approx(1.0)
    assert metrics["AP_75"] == pytest.approx(0.0)
    assert metrics["AP_M"] == pytest.approx(expected)  # 1600 px² is a medium box
    assert metrics["AP_S"] == -1.0 and metrics["AP_L"] == -1.0  # no GT of that size: COCO's -1
    assert metrics["AP_car"] == pytest.approx(expected)


def test_early_and_small_boxes_are_ignored_on_both_sides():
    gt_rows, pred_rows = [], []
    for t in TIMES:
        gt_rows += [(t, *row) for row in GT_ROWS]
        pred_rows += [(t, *row) for row in GT_ROWS]
        gt_rows.append((t, 200, 200, 8, 40, 0, 1.0))  # side < 10: missed GT would lower recall
        pred_rows.append((t, 150, 20, 20, 9.5, 1, 0.99))  # side < 10: confident false positive
        pred_rows.append((t, 150, 150, 20, 20, 0, 0.99))  # diag² = 800 < 30²: false positive
    early = [(400_000, 5, 5, 50, 50, 0, 1.0), (500_000, 80, 80, 50, 50, 1, 1.0)]  # t <= 0.5 s
    gt = [boxes(early[:1] + gt_rows)]
    pred = [boxes(early[1:] + pred_rows)]
    metrics = gen1(gt, pred)
    assert all(metrics[key] == pytest.approx(1.0) for key in METRIC_KEYS)
    unfiltered = gen1(gt, pred, apply_bbox_filters=False)
    assert unfiltered["AP"] < 0.9


def test_filter_boundaries():
    protocol = EvalProtocol.for_camera("gen1")
    rows = [(500_000, 0, 0, 50, 50, 0, 1), (500_001, 0, 0, 50, 50, 0, 1),  # time: strict
            (600_000, 0, 0, 18, 24, 0, 1), (600_000, 0, 0, 18, 23.9, 0, 1),  # diagonal 30: inclusive
            (600_000, 0, 0, 10, 30, 0, 1), (600_000, 0, 0, 9.9, 30, 0, 1)]  # side 10: inclusive
    kept = filter_boxes(boxes(rows), protocol)
    assert kept["t"].tolist() == [500_001, 600_000, 600_000]
    assert kept["w"].tolist() == [50, 18, 10]


def test_protocol_settings_per_camera():
    assert (EvalProtocol.for_camera("gen1").min_box_diag, EvalProtocol.for_camera("gen1").min_box_side) == (30, 10)
    assert (EvalProtocol.for_camera("gen4").min_box_diag, EvalProtocol.for_camera("gen4").min_box_side) == (60, 20)
    ds = EvalProtocol.for_camera("gen4", downsampled_by_2=True)
    assert (ds.min_box_diag, ds.min_box_side, ds.skip_before_us, ds.time_tol_us) == (30, 10, 500_000, 50_000)
    assert ds.classes == ("pedestrian", "two-wheeler", "car")
    with pytest.raises(ValueError, match="camera"):
        EvalProtocol.for_camera("gen3")


def test_time_tolerance_is_inclusive_and_windows_may_overlap():
    gt = boxes([(1_000_000, 0, 0, 50, 50, 0, 1), (1_100_000, 0, 0, 50, 50, 0, 1)])
    pred = boxes([(949_999, 0, 0, 1, 1, 0, 1), (950_000, 0, 0, 2, 2, 0, 1), (1_050_000, 0, 0, 3, 3, 0, 1),
                  (1_150_000, 0, 0, 4, 4, 0, 1), (1_150_001, 0, 0, 5, 5, 0, 1)])
    gt_win, pred_win = match_times(gt, pred, 50_000)
    assert [len(g) for g in gt_win] == [1, 1]
    assert [p["w"].tolist() for p in pred_win] == [[2, 3], [3, 4]]


def test_prediction_outside_the_time_window_counts_as_no_prediction():
    gt = [frames([1_000_000], [(100, 100, 40, 40, 0, 1.0)])]
    inside = [frames([1_050_000], [(100, 100, 40, 40, 0, 0.9)])]
    outside = [frames([1_050_001], [(100, 100, 40, 40, 0, 0.9)])]
    assert gen1(gt, inside)["AP"] == pytest.approx(1.0)
    assert gen1(gt, outside)["AP"] == 0.0


def test_gt_without_class_gives_per_class_zero_and_camera_gen4_keys():
    gt = [frames(TIMES, [(100, 100, 40, 40, 2, 1.0)])]
    metrics = evaluate_detections(gt, [g.copy() for g in gt], 360, 640, "gen4", True)
    assert metrics["AP_car"] == pytest.approx(1.0)
    assert metrics["AP_pedestrian"] == 0.0 and metrics["AP_two-wheeler"] == 0.0


def test_bad_inputs_are_rejected():
    gt = [frames(TIMES, GT_ROWS)]
    with pytest.raises(ValueError, match="sequences"):
        gen1(gt, [])
    with pytest.raises(ValueError, match="sorted"):
        gen1(gt, [gt[0][::-1].copy()])
    bad = gt[0].copy()
    bad["w"][0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        gen1(gt, [bad])
    with pytest.raises(ValueError, match="fields"):
        gen1(gt, [np.zeros(3)])
    with pytest.raises(ValueError, match="backend"):
        gen1(gt, gt, backend="detectron2")


def test_coco_output_does_not_reach_stdout(capsys):
    gt = [frames(TIMES, GT_ROWS)]
    gen1(gt, [g.copy() for g in gt], backend="pycocotools")
    assert capsys.readouterr().out == ""
