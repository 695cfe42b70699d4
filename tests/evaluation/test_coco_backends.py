"""faster-coco-eval against pycocotools on random prediction sets; backend selection and logging."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from leod_core.data.formats import PROPHESEE_BBOX_DTYPE
from leod_core.evaluation import coco_backends
from leod_core.evaluation.detection import evaluate_detections

needs_fast = pytest.mark.skipif(not coco_backends.fast_backend_available(), reason="faster-coco-eval not installed")
NUM_SETS = 20
TOLERANCE = 1e-4


def random_sequences(rng: np.random.Generator, num_seq: int = 3, num_frames: int = 40, gt_per_frame: int = 6,
                     fp_per_frame: int = 15, height: int = 240, width: int = 304):
    """GT boxes of mixed sizes at 4 Hz, predictions = jittered GT (some dropped) + random false positives."""
    gts, preds = [], []
    for _ in range(num_seq):
        times = 250_000 + 250_000 * np.arange(num_frames)
        n_gt = rng.integers(1, gt_per_frame + 1, num_frames)
        t_gt = np.repeat(times, n_gt)
        gt = np.zeros(t_gt.size, dtype=PROPHESEE_BBOX_DTYPE)
        gt["t"] = t_gt
        gt["w"] = rng.uniform(8, 130, t_gt.size)
        gt["h"] = gt["w"] * rng.uniform(0.5, 2.0, t_gt.size)
        gt["x"] = rng.uniform(0, width - 40, t_gt.size)
        gt["y"] = rng.uniform(0, height - 40, t_gt.size)
        gt["class_id"] = rng.integers(0, 2, t_gt.size)
        gt["class_confidence"] = 1.0
        keep = rng.random(t_gt.size) < 0.85
        tp = gt[keep].copy()
        for key in ("x", "y", "w", "h"):
            tp[key] += rng.normal(0, 0.08, tp.size) * gt["w"][keep]
        tp["w"], tp["h"] = np.abs(tp["w"]) + 1, np.abs(tp["h"]) + 1
        tp["class_id"] = np.where(rng.random(tp.size) < 0.1, 1 - tp["class_id"], tp["class_id"])
        tp["class_confidence"] = rng.uniform(0.2, 1.0, tp.size)
        fp = np.zeros(num_frames * fp_per_frame, dtype=PROPHESEE_BBOX_DTYPE)
        fp["t"] = np.repeat(times, fp_per_frame) + rng.integers(-60_000, 60_000, fp.size)
        fp["w"], fp["h"] = rng.uniform(5, 100, fp.size), rng.uniform(5, 100, fp.size)
        fp["x"], fp["y"] = rng.uniform(0, width, fp.size), rng.uniform(0, height, fp.size)
        fp["class_id"] = rng.integers(0, 2, fp.size)
        fp["class_confidence"] = rng.uniform(0.0, 0.7, fp.size)
        pred = np.concatenate([tp, fp])
        gts.append(gt)
        preds.append(pred[np.argsort(pred["t"], kind="stable")])
    return gts, preds


@needs_fast
def test_backends_agree_on_random_prediction_sets():
    rng = np.random.default_rng(1234)
    worst = 0.0
    num_pred = 0
    for _ in range(NUM_SETS):
        gt, pred = random_sequences(rng)
        num_pred += sum(p.size for p in pred)
        ref = evaluate_detections(gt, pred, 240, 304, "gen1", False, backend="pycocotools")
        fast = evaluate_detections(gt, pred, 240, 304, "gen1", False, backend="faster-coco-eval")
        assert ref.keys() == fast.keys()
        for key in ref:
            assert abs(ref[key] - fast[key]) < TOLERANCE, (key, ref[key], fast[key])
            worst = max(worst, abs(ref[key] - fast[key]))
    assert num_pred / NUM_SETS > 2000  # thousands of predicted boxes per set


@needs_fast
def test_auto_logs_the_fast_backend(caplog):
    with caplog.at_level(logging.INFO, logger=coco_backends.__name__):
        backend = coco_backends.resolve_backend("auto")
    assert backend.name == "faster-coco-eval"
    assert "faster-coco-eval" in caplog.text and "auto" in caplog.text


def test_auto_falls_back_to_pycocotools_only_when_not_installed(caplog, monkeypatch):
    monkeypatch.setattr(coco_backends, "fast_backend_available", lambda: False)
    with caplog.at_level(logging.INFO, logger=coco_backends.__name__):
        backend = coco_backends.resolve_backend("auto")
    assert backend.name == "pycocotools"
    (record,) = caplog.records                  # one warning: the fallback is loud
    assert record.levelno == logging.WARNING and "pycocotools" in record.message
    assert "faster-coco-eval is not installed" in record.message


@needs_fast
def test_fast_backend_errors_propagate(monkeypatch):
    import faster_coco_eval

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(faster_coco_eval, "COCOeval_faster", broken)
    gt, pred = random_sequences(np.random.default_rng(0), num_seq=1, num_frames=5)
    with pytest.raises(RuntimeError, match="boom"):
        evaluate_detections(gt, pred, 240, 304, "gen1", False, backend="auto")


@needs_fast
def test_fast_backend_keeps_stdout_clean(capsys):
    gt, pred = random_sequences(np.random.default_rng(0), num_seq=1, num_frames=5)
    evaluate_detections(gt, pred, 240, 304, "gen1", False, backend="faster-coco-eval")
    assert capsys.readouterr().out == ""
