"""Per-frame precision and recall of pseudo labels against ground truth (LEOD ``val_dst.py``).

Metrics (``_evaluate_label_one_class``), per frame and per class ``c`` with GT of ``c`` in the frame
    IoU of centre-format boxes (YOLOX ``bboxes_iou(xyxy=False)``, float32) between GT and pseudo boxes of
    ``c``; for each threshold (strict ``IoU > thr``): recall = fraction of GT boxes with any pseudo box above
    it, precision = fraction of pseudo boxes with any GT box above it (many-to-many); both 0 without pseudo
    boxes. Frames without GT of ``c`` do not count for ``c`` (their pseudo boxes of ``c`` are never seen).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from leod_core.data import label_tensors as lt
from leod_core.data.formats import IGNORE_CLASS_ID


def bboxes_iou_cxcywh(a: Tensor, b: Tensor) -> Tensor:
    """IoU ``[M, N]`` of centre-format boxes ``[M, 4]`` and ``[N, 4]`` (YOLOX ``bboxes_iou(xyxy=False)``)."""
    tl = torch.max(a[:, None, :2] - a[:, None, 2:] / 2, b[:, :2] - b[:, 2:] / 2)
    br = torch.min(a[:, None, :2] + a[:, None, 2:] / 2, b[:, :2] + b[:, 2:] / 2)
    area_a = torch.prod(a[:, 2:], 1)
    area_b = torch.prod(b[:, 2:], 1)
    en = (tl < br).type(tl.type()).prod(dim=2)
    area_i = torch.prod(br - tl, 2) * en
    return area_i / (area_a[:, None] + area_b - area_i)


def centre_boxes(labels: Tensor) -> Tensor:
    """``[N, 4]`` centre-format boxes of labels ``[N, 8]`` (LEOD ``get_labels_as_tensors``)."""
    return torch.stack([labels[:, lt.X] + 0.5 * labels[:, lt.W], labels[:, lt.Y] + 0.5 * labels[:, lt.H],
                        labels[:, lt.W], labels[:, lt.H]], dim=1)


def evaluate_one_class(gt: Tensor, pseudo: Tensor, thresholds: Sequence[float]) -> tuple[list[float], list[float]]:
    """(recall per threshold, precision per threshold) of one frame and class (``_evaluate_label_one_class``).

    ``gt`` / ``pseudo``: centre-format boxes ``[M, 4]`` (``M >= 1``) and ``[N, 4]``.
    """
    if len(gt) == 0:
        raise ValueError("a class without GT boxes is not evaluated")
    if len(pseudo) == 0:
        return [0.0] * len(thresholds), [0.0] * len(thresholds)
    ious = bboxes_iou_cxcywh(gt, pseudo)
    recall, precision = [], []
    for thr in thresholds:
        mask = ious > thr
        recall.append(float(mask.any(dim=1).float().mean()))
        precision.append(float(mask.any(dim=0).float().mean()))
    return recall, precision


def score_filter(labels: Tensor, obj_thresh: Sequence[float], cls_thresh: Sequence[float],
                 ignore_label: int = IGNORE_CLASS_ID) -> Tensor:
    """``val_dst.py: filter_bbox``: keep ``obj > obj_thresh[c]`` and ``cls > cls_thresh[c]``, class != ignore."""
    keep = lt.passes_class_thresholds(labels[:, lt.CLASS_ID], labels[:, lt.OBJECTNESS],
                                      labels[:, lt.CLASS_CONFIDENCE], obj_thresh, cls_thresh)
    return labels[keep & (labels[:, lt.CLASS_ID] != ignore_label)]


class ClassAccumulator:
    """Sums over evaluated frames of one class (LEOD's ``AverageMeter`` weighted by frame counts)."""

    def __init__(self, num_thresholds: int):
        self.recall = np.zeros(num_thresholds)
        self.precision = np.zeros(num_thresholds)
        self.num_frames = 0
        self.gt_total = 0
        self.pred_total = 0

    def add(self, recall: Sequence[float], precision: Sequence[float], num_gt: int, num_pred: int) -> None:
        self.recall += recall
        self.precision += precision
        self.num_frames += 1
        self.gt_total += num_gt
        self.pred_total += num_pred
