"""LEOD's per-view post-processing of pseudo-labelling predictions and the merge of the views
(``modules/utils/ssod.py``: ``pred2label`` / ``filter_pred_boxes``, ``tta_postprocess``); the steps are listed in
:mod:`leod_core.pseudo.tta`. Label rows are ``Tensor[N, 8]`` ``[t, x, y, w, h, class_id, cls_conf, obj_conf]``
(top-left corner, :mod:`leod_core.data.label_tensors`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from leod_core.data import label_tensors as lt
from leod_core.data.formats import PSEUDO_BBOX_DTYPE
from leod_core.models.postprocess import batched_nms

if TYPE_CHECKING:
    from leod_core.pseudo.tta import TTAConfig


# ---------------------------------------------------------------------------------------- box helpers
def rows_to_structured(rows: Tensor) -> np.ndarray:
    """``PSEUDO_BBOX_DTYPE`` array of label rows ``Tensor[N, >=8]`` ``[t, x, y, w, h, class_id, cls, obj]``."""
    r = rows.detach().cpu().numpy()
    out = np.zeros(len(r), dtype=PSEUDO_BBOX_DTYPE)
    for k, name in enumerate(lt.FIELDS):
        out[name] = r[:, k]
    return out


def structured_to_rows(arr: np.ndarray) -> Tensor:
    """Inverse of :func:`rows_to_structured` (float32 ``Tensor[N, 8]``)."""
    return lt.from_structured(arr)


def filter_view_predictions(dets: Sequence[Tensor], hflips: Sequence[bool], frame_hw: Tuple[int, int],
                            obj_thresh: Sequence[float], cls_thresh: Sequence[float], cfg: TTAConfig,
                            scale: float = 1.0) -> List[Tensor]:
    """LEOD's per-view post-processing of postprocessed detections, vectorised over many frames.

    Args:
        dets: per frame ``Tensor[N_i, 7]`` ``(x1, y1, x2, y2, obj, cls, class_id)`` in read-frame pixels.
        hflips: per frame, whether it comes from a horizontally flipped view (mirrored back here).
        frame_hw: (H, W) of the read frame (the clamp region and the flip width).
        obj_thresh, cls_thresh: one threshold per class (strict ``>``).
        cfg: ``min_box_side``, ``max_width_frac``.
        scale: 2 for ``downsampled_by_2`` data (sensor pixels out), else 1.

    Returns:
        per frame ``Tensor[M_i, 8]`` label rows ``[t=0, x, y, w, h, class_id, cls_conf, obj_conf]`` (float32, on
        the input device), in the input order of the kept detections.
    """
    if len(dets) != len(hflips):
        raise ValueError(f"{len(dets)} detection tensors but {len(hflips)} flip flags")
    if not dets:
        return []
    height, width = frame_hw
    counts = [int(d.shape[0]) for d in dets]
    det = torch.cat([d.reshape(-1, 7).float() for d in dets])
    device = det.device
    owner = torch.repeat_interleave(torch.arange(len(dets), device=device),
                                    torch.as_tensor(counts, device=device))
    if det.shape[0] == 0:
        return [det.new_zeros((0, lt.NUM_FIELDS)) for _ in dets]
    keep = lt.passes_class_thresholds(det[:, 6], det[:, 4], det[:, 5], obj_thresh, cls_thresh)
    x1 = det[:, 0].clamp(0.0, width - 1.0)
    y1 = det[:, 1].clamp(0.0, height - 1.0)
    x2 = det[:, 2].clamp(0.0, width - 1.0)
    y2 = det[:, 3].clamp(0.0, height - 1.0)
    w, h = x2 - x1, y2 - y1
    keep &= (w > 0) & (h > 0)
    keep &= (w >= cfg.min_box_side) & (h >= cfg.min_box_side)
    keep &= w <= cfg.max_box_width(width)
    rows = torch.stack([torch.zeros_like(x1), x1, y1, w, h, det[:, 6], det[:, 5], det[:, 4],
                        owner.to(torch.float32)], dim=1)[keep]
    flip = torch.as_tensor(list(hflips), dtype=torch.bool, device=device)[rows[:, -1].long()]
    if bool(flip.any()):
        rows[flip] = lt.flip_lr(rows[flip], width)
    if scale != 1.0:
        rows = lt.scale(rows, scale, (height, width))[0]
    own = rows[:, -1].long()
    rows = rows[:, :lt.NUM_FIELDS]
    order = torch.argsort(own, stable=True)
    per = torch.bincount(own, minlength=len(dets)).tolist()
    return list(torch.split(rows[order], per))


def merge_views(rows: Tensor, confidence_threshold: float, nms_threshold: float) -> Tensor:
    """LEOD ``tta_postprocess`` on one frame's concatenated view rows ``Tensor[N, 8]`` (pseudo labels only):
    keep ``obj * cls >= confidence_threshold``, class-wise NMS ranked by ``obj * cls``; survivors keep their own
    rows, by decreasing score."""
    if rows.shape[0] == 0:
        return rows
    score = rows[:, lt.OBJECTNESS] * rows[:, lt.CLASS_CONFIDENCE]
    m = score >= confidence_threshold
    rows, score = rows[m], score[m]
    if rows.shape[0] == 0:
        return rows
    xyxy = torch.stack([rows[:, lt.X], rows[:, lt.Y], rows[:, lt.X] + rows[:, lt.W],
                        rows[:, lt.Y] + rows[:, lt.H]], dim=1)
    keep = batched_nms(xyxy, score, rows[:, lt.CLASS_ID].long(), nms_threshold)
    return rows[keep]
