"""YOLOX postprocessing: scores, confidence filter and class-wise NMS, in plain torch (no torchvision).

Conventions follow torchvision / YOLOX: boxes are (x1, y1, x2, y2) with area ``(x2 - x1) * (y2 - y1)``
(no +1), a box is suppressed by a higher-ranked kept box when their IoU is strictly greater than the
threshold, and kept indices come back in decreasing score order. Ties in score are broken by the lower
index first (stable sort), so results are deterministic.
"""
from __future__ import annotations

from typing import List, Union

import numba
import numpy as np
import torch
from torch import Tensor

from leod_core.models.yolox_head import HeadOutput


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU ``Tensor[N, M]`` of ``a: Tensor[N, 4]`` and ``b: Tensor[M, 4]`` (x1, y1, x2, y2).

    Pairs whose union is 0 (both boxes degenerate) give NaN, which never exceeds a threshold.
    """
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def _greedy_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, groups: Tensor | None) -> Tensor:
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    b = boxes[order].float()
    suppress = box_iou(b, b) > iou_threshold
    if groups is not None:
        g = groups[order]
        suppress &= g[:, None] == g[None, :]
    keep = _greedy_keep(suppress.cpu().numpy())
    return order[torch.from_numpy(keep).to(boxes.device)]


@numba.njit(cache=True, nogil=True)
def _greedy_keep(suppress: np.ndarray) -> np.ndarray:
    """Indices kept by greedy NMS given ``suppress[i, j]`` (bool [N, N], rows in decreasing score order)."""
    n = suppress.shape[0]
    removed = np.zeros(n, dtype=np.bool_)
    keep = np.empty(n, dtype=np.int64)
    count = 0
    for i in range(n):
        if removed[i]:
            continue
        keep[count] = i
        count += 1
        for j in range(i + 1, n):
            if suppress[i, j]:
                removed[j] = True
    return keep[:count]


def nms(boxes_xyxy: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Args:
        boxes_xyxy: ``Tensor[N, 4]`` boxes (x1, y1, x2, y2).
        scores: ``Tensor[N]``.
        iou_threshold: a box is dropped if its IoU with a higher-scored kept box is ``> iou_threshold``.

    Returns:
        ``Tensor[K]`` (int64) indices of the kept boxes, in decreasing score order (ties: lower index first).
    """
    return _greedy_nms(boxes_xyxy, scores, iou_threshold, None)


def batched_nms(boxes_xyxy: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """NMS applied independently per category ``idxs: Tensor[N]`` (boxes of different categories never
    suppress each other). Same result as torchvision's ``batched_nms`` (which offsets coordinates per
    category); here the cross-category pairs are masked out instead, which is exact for any coordinates.

    Returns ``Tensor[K]`` (int64) kept indices in decreasing score order.
    """
    return _greedy_nms(boxes_xyxy, scores, iou_threshold, idxs)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``Tensor[..., 4]`` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    cxcy, wh = boxes[..., :2], boxes[..., 2:4]
    return torch.cat((cxcy - wh / 2, cxcy + wh / 2), dim=-1)


def postprocess(preds: Union[Tensor, HeadOutput], num_classes: int, confidence_threshold: float = 0.1,
                nms_threshold: float = 0.45, class_agnostic: bool = False) -> List[Tensor]:
    """YOLOX postprocess of decoded head predictions.

    Args:
        preds: :class:`HeadOutput` or its ``preds`` ``Tensor[B, A, 5 + num_classes]`` (cx, cy, w, h in
            padded-input pixels, objectness logit, class logits).
        num_classes: number of classes.
        confidence_threshold: keep anchors with ``sigmoid(obj) * max_c sigmoid(cls_c) >= threshold``.
        nms_threshold: IoU threshold of the class-wise NMS (ranked by ``obj * cls_prob``).
        class_agnostic: run one NMS over all classes instead.

    Returns:
        One ``Tensor[N_i, 7]`` per image (N_i may be 0), float32, rows
        ``(x1, y1, x2, y2, obj_prob, cls_prob, class_id)`` in padded-input pixels, sorted by decreasing
        ``obj_prob * cls_prob``.
    """
    if isinstance(preds, HeadOutput):
        preds = preds.preds
    if preds.ndim != 3 or preds.shape[-1] != 5 + num_classes:
        raise ValueError(f"preds must be [B, A, {5 + num_classes}], got {tuple(preds.shape)}")
    preds = preds.detach().float()
    boxes = cxcywh_to_xyxy(preds[..., :4])
    obj = torch.sigmoid(preds[..., 4])
    cls_prob, cls_id = torch.sigmoid(preds[..., 5:5 + num_classes]).max(dim=-1)
    outputs: List[Tensor] = []
    for i in range(preds.shape[0]):
        score = obj[i] * cls_prob[i]
        m = score >= confidence_threshold
        det = torch.cat((boxes[i][m], obj[i][m, None], cls_prob[i][m, None], cls_id[i][m, None].float()), 1)
        if det.shape[0] == 0:
            outputs.append(det)
            continue
        if class_agnostic:
            keep = nms(det[:, :4], score[m], nms_threshold)
        else:
            keep = batched_nms(det[:, :4], score[m], cls_id[i][m], nms_threshold)
        outputs.append(det[keep])
    return outputs
