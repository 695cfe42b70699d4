"""NMS and YOLOX postprocess: hand cases and a brute-force NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from leod_core.models.postprocess import batched_nms, box_iou, nms, postprocess


def _np_iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else float("nan")


def _np_nms(boxes: np.ndarray, scores: np.ndarray, thr: float, classes: np.ndarray | None = None) -> list[int]:
    """Brute force: visit boxes by decreasing score (ties: lower index first), keep a box unless a kept box
    of the same class overlaps it with IoU > thr."""
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        same = [k for k in keep if classes is None or classes[k] == classes[i]]
        if all(not (_np_iou(boxes[i], boxes[k]) > thr) for k in same):
            keep.append(int(i))
    return keep


def _random_boxes(rng: np.random.Generator, n: int) -> np.ndarray:
    xy = rng.uniform(0, 60, size=(n, 2))
    wh = rng.uniform(1, 30, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def test_nms_hand_cases() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 2]  # 3 suppresses 0 (IoU 1) and 1 (IoU 0.68)
    assert nms(boxes, scores, 0.99).tolist() == [3, 1, 2]  # identical boxes: IoU 1 > 0.99
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold)
    half = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 5.0]])
    assert nms(half, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0, 1]
    assert nms(half, torch.tensor([0.9, 0.8]), 0.49).tolist() == [0]
    # ties: the lower index wins
    assert nms(boxes[:2], torch.tensor([0.5, 0.5]), 0.5).tolist() == [0]
    # empty input
    empty = nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
    assert empty.dtype == torch.long and empty.numel() == 0
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


def test_batched_nms_keeps_other_classes() -> None:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert batched_nms(boxes, scores, torch.tensor([0, 0, 1]), 0.5).tolist() == [0, 2]
    # negative coordinates do not leak across classes
    neg = torch.tensor([[-50, -50, -40, -40], [-49, -49, -39, -39.0]])
    assert batched_nms(neg, torch.tensor([0.9, 0.8]), torch.tensor([0, 1]), 0.3).tolist() == [0, 1]


@pytest.mark.parametrize("seed", range(6))
def test_nms_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 120))
    boxes = _random_boxes(rng, n)
    scores = np.round(rng.uniform(0, 1, size=n), 1).astype(np.float32)  # many ties
    classes = rng.integers(0, 3, size=n)
    thr = float(rng.choice([0.3, 0.45, 0.7]))
    assert nms(torch.from_numpy(boxes), torch.from_numpy(scores), thr).tolist() == _np_nms(boxes, scores, thr)
    got = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(classes), thr)
    assert got.tolist() == _np_nms(boxes, scores, thr, classes)


def test_box_iou_matches_numpy() -> None:
    rng = np.random.default_rng(7)
    a, b = _random_boxes(rng, 5), _random_boxes(rng, 4)
    expected = np.array([[_np_iou(x, y) for y in b] for x in a])
    np.testing.assert_allclose(box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), expected, rtol=1e-5)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _pred(cx: float, cy: float, w: float, h: float, obj: float, cls: list[float]) -> list[float]:
    return [cx, cy, w, h, _logit(obj)] + [_logit(c) for c in cls]


def test_postprocess_hand_cases() -> None:
    preds = torch.tensor([[
        _pred(50, 50, 20, 20, 0.9, [0.9, 0.1]),   # kept (score 0.81)
        _pred(51, 51, 20, 20, 0.9, [0.8, 0.1]),   # same class, IoU ~0.82 -> suppressed
        _pred(50, 50, 20, 20, 0.8, [0.1, 0.9]),   # other class -> kept (0.72)
        _pred(200, 100, 10, 10, 0.5, [0.2, 0.1]),  # score 0.1: kept (>= threshold)
        _pred(150, 100, 10, 10, 0.3, [0.3, 0.1]),  # score 0.09: filtered
    ], [_pred(10, 10, 4, 4, 0.01, [0.5, 0.5])] * 5], dtype=torch.float32)
    out = postprocess(preds, num_classes=2, confidence_threshold=0.1, nms_threshold=0.45)
    assert len(out) == 2 and out[1].shape == (0, 7)
    det = out[0]
    assert det.shape == (3, 7)
    torch.testing.assert_close(det[0], torch.tensor([40, 40, 60, 60, 0.9, 0.9, 0.0]))
    torch.testing.assert_close(det[1], torch.tensor([40, 40, 60, 60, 0.8, 0.9, 1.0]))
    torch.testing.assert_close(det[2], torch.tensor([195, 95, 205, 105, 0.5, 0.2, 0.0]))
    agnostic = postprocess(preds, 2, 0.1, 0.45, class_agnostic=True)[0]
    assert agnostic[:, 6].tolist() == [0.0, 0.0]  # the class-1 box is now suppressed by the class-0 one
    empty = postprocess(torch.zeros(3, 0, 7), num_classes=2)
    assert [e.shape for e in empty] == [(0, 7)] * 3


def test_postprocess_matches_brute_force_on_random_predictions() -> None:
    rng = np.random.default_rng(3)
    n, num_classes = 200, 3
    xy = rng.uniform(0, 100, size=(1, n, 2))
    wh = rng.uniform(5, 40, size=(1, n, 2))
    logits = rng.normal(-1, 2, size=(1, n, 1 + num_classes))
    preds = torch.from_numpy(np.concatenate([xy, wh, logits], axis=-1).astype(np.float32))
    det = postprocess(preds, num_classes, confidence_threshold=0.05, nms_threshold=0.5)[0]

    p = preds[0].numpy().astype(np.float64)
    sig = 1 / (1 + np.exp(-p[:, 4:]))
    obj, cls_prob, cls_id = sig[:, 0], sig[:, 1:].max(1), sig[:, 1:].argmax(1)
    score = (obj * cls_prob).astype(np.float32)
    idx = np.nonzero(score >= 0.05)[0]
    boxes = np.concatenate([p[:, :2] - p[:, 2:4] / 2, p[:, :2] + p[:, 2:4] / 2], 1).astype(np.float32)
    keep = idx[_np_nms(boxes[idx], score[idx], 0.5, cls_id[idx])]
    assert det.shape == (len(keep), 7)
    np.testing.assert_allclose(det[:, :4].numpy(), boxes[keep], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(det[:, 4].numpy(), obj[keep], rtol=1e-5)
    np.testing.assert_array_equal(det[:, 6].numpy(), cls_id[keep])
