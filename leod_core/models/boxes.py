"""Box IoU utilities in the YOLOX centre format ``(cx, cy, w, h)``, as used by the YOLOX/LEOD loss.

Both functions follow the arithmetic of LEOD exactly (``models/detection/yolox/utils/boxes.py: bboxes_iou`` with
``xyxy=False`` and ``models/detection/yolox/models/losses.py: IOUloss``): corners are ``c ± size/2``, the
intersection is counted only where ``tl < br`` on both axes, areas are ``w·h``.
"""
from __future__ import annotations

from torch import Tensor

__all__ = ["pairwise_iou_cxcywh", "elementwise_iou_cxcywh"]


def pairwise_iou_cxcywh(boxes_a: Tensor, boxes_b: Tensor) -> Tensor:
    """IoU of every pair: ``Tensor[M, 4]`` × ``Tensor[N, 4]`` (cx, cy, w, h) → ``Tensor[M, N]``.

    No epsilon in the denominator (as LEOD's ``bboxes_iou``): a pair of zero-area boxes gives NaN.
    """
    if boxes_a.shape[-1] != 4 or boxes_b.shape[-1] != 4:
        raise ValueError(f"boxes must be [*, 4], got {tuple(boxes_a.shape)} and {tuple(boxes_b.shape)}")
    a = boxes_a[:, None, :]  # [M, 1, 4]
    b = boxes_b[None, :, :]  # [1, N, 4]
    tl = (a[..., :2] - a[..., 2:] / 2).maximum(b[..., :2] - b[..., 2:] / 2)
    br = (a[..., :2] + a[..., 2:] / 2).minimum(b[..., :2] + b[..., 2:] / 2)
    overlap = (tl < br).to(tl.dtype).prod(dim=-1)
    inter = (br - tl).prod(dim=-1) * overlap
    area_a = boxes_a[:, 2:].prod(dim=-1)
    area_b = boxes_b[:, 2:].prod(dim=-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def elementwise_iou_cxcywh(pred: Tensor, target: Tensor, eps: float = 1e-16) -> Tensor:
    """IoU of matching rows: ``Tensor[N, 4]`` × ``Tensor[N, 4]`` (cx, cy, w, h) → ``Tensor[N]``.

    ``eps`` is added to the union, as in LEOD's ``IOUloss`` (1e-16). Differentiable.
    """
    if pred.shape != target.shape or pred.shape[-1] != 4:
        raise ValueError(f"boxes must both be [N, 4], got {tuple(pred.shape)} and {tuple(target.shape)}")
    tl = (pred[:, :2] - pred[:, 2:] / 2).maximum(target[:, :2] - target[:, 2:] / 2)
    br = (pred[:, :2] + pred[:, 2:] / 2).minimum(target[:, :2] + target[:, 2:] / 2)
    area_p = pred[:, 2:].prod(dim=1)
    area_g = target[:, 2:].prod(dim=1)
    overlap = (tl < br).to(tl.dtype).prod(dim=1)
    inter = (br - tl).prod(dim=1) * overlap
    return inter / (area_p + area_g - inter + eps)
