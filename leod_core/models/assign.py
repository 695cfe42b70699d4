"""LEOD's anchor assignment for the YOLOX loss: ignore boxes, the centre prior and SimOTA (all per image).

A re-implementation of LEOD's ``YOLOXHead`` (``models/detection/yolox/models/yolo_head.py``): ``_ignore_bbox``,
``get_assignments(_w_ignore)``, ``get_geometry_constraint(_w_ignore)`` and ``simota_matching``. Numbered as in the
behaviour list of :mod:`leod_core.models.loss`:

1. Soft mode (``ignore_bbox_thresh`` set): a box of class ``c`` with ``obj_conf < thr[c]`` **or**
   ``cls_conf < thr[c]`` becomes an ignore box (class ``ignore_label``). This also applies to GT rows (LEOD quirk;
   GT confidences are 1.0 so they are never ignored unless the caller gives lower ones).
2. Centre prior: an anchor is a candidate of a box when its cell centre ``(grid + 0.5)·stride`` lies strictly within
   ``± center_radius·stride`` (the anchor's stride) of the box centre on both axes. This is the only geometric
   condition: the "anchor centre inside the box" condition of the original YOLOX is not used by LEOD.
3. Ignore region: anchors in the centre prior of some ignore box and of no valid box. They are left out of the
   objectness loss and are never candidates for matching.
4. SimOTA on the valid boxes, over the union of their candidate anchors ``P``:
   ``cost = Σ_c BCE(sqrt(σ(cls)·σ(obj)), one_hot) + 3·(−log(IoU + 1e-8))
   + 1e6·(anchor not in this box's prior)``;
   ``k_g = max(1, int(Σ top-min(10, |P|) IoUs of box g over P))``; each box takes its ``k_g`` cheapest anchors of
   ``P`` (which can include anchors outside its own prior when ``k_g`` exceeds its own candidates, as in LEOD); an
   anchor taken by several boxes goes to the box of minimum cost over *all* valid boxes (``argmin`` over the whole
   column, exactly as LEOD; the losing boxes are not re-matched).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from leod_core.models.boxes import pairwise_iou_cxcywh
from leod_core.models.loss_config import LossConfig


@dataclass
class Assignment:
    """SimOTA result for one image (``A`` anchors, ``G`` valid boxes, ``F`` foreground anchors)."""

    fg_mask: Tensor  # [A] bool: foreground anchors
    ignore_mask: Tensor  # [A] bool: anchors left out of the objectness loss (ignore-box region)
    candidate_mask: Tensor  # [A] bool: union of the valid boxes' centre priors (ignore region excluded)
    matched_gt_inds: Tensor  # [F] int64: index into the valid boxes, anchors in increasing index order
    matched_classes: Tensor  # [F] int64
    matched_ious: Tensor  # [F] float: IoU(pred box, matched box), detached
    dynamic_ks: Tensor  # [G] int64

    @property
    def num_fg(self) -> int:
        return int(self.fg_mask.sum())


def apply_ignore_thresholds(
    targets: Tensor, thresholds: Optional[Sequence[float]], ignore_label: int = 1024
) -> Tensor:
    """LEOD ``_ignore_bbox``: rows of class ``c`` with ``obj_conf < thr[c]`` or ``cls_conf < thr[c]`` get class
    ``ignore_label``. Returns a new tensor (LEOD edits the batch in place). ``targets: Tensor[N, 7]``
    ``(class, cx, cy, w, h, obj_conf, cls_conf)``. LEOD's padding test (row sum > 0) is not needed: a per-image list
    has no padding rows."""
    if not thresholds or targets.numel() == 0:
        return targets
    cls_idx = targets[:, 0]
    low = torch.zeros_like(cls_idx, dtype=torch.bool)
    for c, thr in enumerate(thresholds):
        low |= (cls_idx == c) & ((targets[:, 5] < thr) | (targets[:, 6] < thr))
    if not bool(low.any()):
        return targets
    out = targets.clone()
    out[:, 0] = torch.where(low, torch.full_like(cls_idx, float(ignore_label)), cls_idx)
    return out


def center_prior(boxes: Tensor, anchor_centers: Tensor, strides: Tensor, radius: float) -> Tensor:
    """``Tensor[N, A]`` bool: anchor centre strictly inside ``box centre ± radius·stride`` on both axes
    (LEOD ``get_geometry_constraint``; same arithmetic so that boundary cases agree)."""
    dist = strides * radius  # [A]
    xc, yc = anchor_centers[:, 0], anchor_centers[:, 1]
    gx, gy = boxes[:, 0:1], boxes[:, 1:2]
    c_l = xc - (gx - dist)
    c_r = (gx + dist) - xc
    c_t = yc - (gy - dist)
    c_b = (gy + dist) - yc
    return torch.stack([c_l, c_t, c_r, c_b], dim=2).amin(dim=2) > 0.0


@torch.no_grad()
def simota_assign(
    boxes_pred: Tensor,
    obj_logits: Tensor,
    cls_logits: Tensor,
    anchor_centers: Tensor,
    strides: Tensor,
    gt_boxes: Tensor,
    gt_classes: Tensor,
    ignore_boxes: Tensor,
    config: LossConfig,
) -> Assignment:
    """SimOTA of one image on the valid boxes, with the ignore region of the ignore boxes (LEOD
    ``get_assignments_w_ignore`` / ``get_geometry_constraint_w_ignore`` / ``simota_matching``).

    ``boxes_pred [A, 4]`` (cx, cy, w, h), ``obj_logits [A]``, ``cls_logits [A, C]``, ``anchor_centers [A, 2]``,
    ``strides [A]``, ``gt_boxes [G, 4]``, ``gt_classes [G]`` (int), ``ignore_boxes [I, 4]``.
    """
    num_anchors, num_classes = cls_logits.shape
    device = boxes_pred.device
    n_gt = gt_boxes.shape[0]
    in_valid = center_prior(gt_boxes, anchor_centers, strides, config.center_radius)  # [G, A]
    candidate = in_valid.any(dim=0)  # [A]
    if ignore_boxes.shape[0] > 0:
        in_ignore = center_prior(ignore_boxes, anchor_centers, strides, config.center_radius).any(dim=0)
        ignore_mask = in_ignore & ~candidate
    else:
        ignore_mask = torch.zeros(num_anchors, dtype=torch.bool, device=device)

    fg_mask = torch.zeros(num_anchors, dtype=torch.bool, device=device)
    empty_long = torch.zeros(0, dtype=torch.long, device=device)
    cand_idx = candidate.nonzero().squeeze(1)  # [P]
    n_pos = int(cand_idx.numel())
    if n_gt == 0 or n_pos == 0:
        # n_pos == 0 (every valid box centred outside the anchor field) makes LEOD's topk raise; here such boxes
        # simply get no anchor.
        ks = torch.ones(n_gt, dtype=torch.long, device=device)
        return Assignment(fg_mask, ignore_mask, candidate, empty_long, empty_long,
                          boxes_pred.new_zeros(0), ks)

    geometry = in_valid[:, cand_idx]  # [G, P]
    ious = pairwise_iou_cxcywh(gt_boxes, boxes_pred[cand_idx])  # [G, P]
    iou_cost = -torch.log(ious + config.iou_cost_eps)

    joint = (cls_logits[cand_idx].sigmoid() * obj_logits[cand_idx].sigmoid()[:, None]).sqrt()  # [P, C]
    one_hot = F.one_hot(gt_classes, num_classes).to(joint.dtype)  # [G, C]
    cls_cost = F.binary_cross_entropy(
        joint[None].expand(n_gt, n_pos, num_classes),
        one_hot[:, None].expand(n_gt, n_pos, num_classes),
        reduction="none",
    ).sum(dim=-1)  # [G, P]
    cost = cls_cost + config.iou_cost_weight * iou_cost + config.outside_center_cost * (~geometry).to(cls_cost.dtype)

    # dynamic k from the top IoUs over all candidate anchors of the image
    n_top = min(config.topk_candidates, n_pos)
    ks = ious.topk(n_top, dim=1).values.sum(dim=1).to(torch.int64).clamp(min=1)  # [G]
    order = cost.argsort(dim=1, stable=True)  # cheapest first
    take = torch.arange(n_pos, device=device)[None, :] < ks[:, None]  # [G, P]
    matching = torch.zeros(n_gt, n_pos, dtype=torch.bool, device=device).scatter_(1, order, take)

    claims = matching.sum(dim=0)  # [P]
    multi = (claims > 1).nonzero().squeeze(1)
    if multi.numel() > 0:
        winner = cost[:, multi].argmin(dim=0)  # argmin over all valid boxes, as LEOD
        matching[:, multi] = False
        matching[winner, multi] = True
    fg_in = claims > 0  # [P]
    matched_gt = matching[:, fg_in].to(torch.uint8).argmax(dim=0)  # [F]
    fg_cols = fg_in.nonzero().squeeze(1)
    matched_ious = ious[matched_gt, fg_cols]
    fg_mask[cand_idx[fg_in]] = True
    return Assignment(fg_mask, ignore_mask, candidate, matched_gt, gt_classes[matched_gt], matched_ious, ks)
