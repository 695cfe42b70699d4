"""YOLOX loss with SimOTA assignment and LEOD's soft anchor assignment ("rnndet-soft").

A re-implementation of ``models/detection/yolox/models/yolo_head.py`` of LEOD (Wuziyi616/LEOD):
``YOLOXHead.get_losses``, ``get_losses_w_ignore``, ``get_assignments(_w_ignore)``,
``get_geometry_constraint(_w_ignore)``, ``simota_matching``, ``_ignore_bbox``, ``_get_highest_score_mask``,
``_get_bbox_loss_weight`` and ``models/detection/yolox/models/losses.py: IOUloss, FocalLoss``.

Behaviour: items 1–4 (ignore boxes, centre prior, ignore region, SimOTA) are the assignment, documented and
implemented in :mod:`leod_core.models.assign`; the settings live in :mod:`leod_core.models.loss_config`. Both
modules' public names are re-exported here.

5. Losses, pooled over the batch, with ``num_fg = max(total foreground anchors, 1)``:
   IoU loss ``mean(1 − IoU²)`` over foreground anchors (``reduction="mean"``, quirk 10; 0 without foreground);
   objectness BCE-with-logits (target 1 on foreground, 0 elsewhere) summed over the non-ignored anchors / num_fg;
   classification BCE-with-logits towards ``one_hot · IoU(pred, matched box)`` (IoU detached) summed / num_fg;
   ``loss = reg_weight·iou + obj_weight·obj + cls_weight·cls`` (LEOD's ``use_l1`` is always False: no L1 loss).

All loss arithmetic runs in float32 with autocast disabled, whatever the dtype of ``preds``.
"""
from __future__ import annotations

from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leod_core.models.assign import Assignment, apply_ignore_thresholds, center_prior, simota_assign
from leod_core.models.boxes import elementwise_iou_cxcywh
from leod_core.models.loss_config import BBOX_WEIGHTING_RE, LossConfig, expand_class_thresholds

__all__ = [
    "LossConfig",
    "Assignment",
    "YoloXLoss",
    "expand_class_thresholds",
    "apply_ignore_thresholds",
    "center_prior",
    "simota_assign",
    "sigmoid_focal_loss",
]


def sigmoid_focal_loss(logits: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Element-wise sigmoid focal loss (torchvision ``sigmoid_focal_loss`` with ``reduction='none'``)."""
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def _highest_score_mask(scores: Tensor, k: float, exclude: Tensor) -> Tensor:
    """LEOD ``_get_highest_score_mask``: the top ``int(n·k)`` scores, ``n`` = non-excluded anchors (all anchors when
    nothing is excluded), excluded anchors never chosen."""
    mask = torch.zeros_like(scores, dtype=torch.bool)
    if bool(exclude.any()):
        n = int(float((~exclude).sum()) * k)
        ex = exclude.to(scores.dtype)
        scores = scores * (1.0 - ex) + ex * (-1e6)
    else:
        n = int(scores.shape[0] * k)
    if n > 0:
        mask[scores.topk(n).indices] = True
    return mask


class YoloXLoss(nn.Module):
    """YOLOX loss (IoU + objectness + classification) with LEOD's SimOTA and soft anchor assignment.

    ``forward(preds, grid_xy, strides, targets)``:

    - ``preds: Tensor[B, A, 5 + C]``: decoded (cx, cy, w, h) in padded-input pixels, objectness logit, class logits;
    - ``grid_xy: Tensor[A, 2]`` cell indices (x, y); ``strides: Tensor[A]`` pixels per cell;
    - ``targets: list[Tensor[N_i, 7]]`` ``(class_id, cx, cy, w, h, obj_conf, cls_conf)``; ``class_id ==
      ignore_label`` marks an ignore box; ``N_i`` may be 0.

    Returns a dict: ``loss`` (weighted total), the unweighted parts ``iou_loss``, ``obj_loss``, ``cls_loss`` (LEOD
    logs the weighted parts, i.e. its ``iou_loss`` is ``reg_weight·iou_loss`` here), ``num_fg`` (float,
    ``max(total foreground anchors, 1)``, the normaliser), ``num_gt`` (float, valid boxes) and ``num_fg_per_gt``
    (LEOD's logged ``num_fg``: ``num_fg / max(num_gt, 1)``).
    """

    def __init__(self, num_classes: int, config: Optional[LossConfig] = None) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.config = config if config is not None else LossConfig()
        thr = self.config.ignore_bbox_thresh
        if thr is not None and len(thr) != self.num_classes:
            raise ValueError(
                f"ignore_bbox_thresh has {len(thr)} values for {self.num_classes} classes; "
                "use expand_class_thresholds() first")
        if self.config.ignore_label in range(self.num_classes):
            raise ValueError(f"ignore_label {self.config.ignore_label} collides with a class id")

    # -------------------------------------------------------------------------------------------------- helpers
    def _check_targets(self, t: Tensor, device: torch.device) -> Tensor:
        t = torch.as_tensor(t).to(device=device, dtype=torch.float32)
        if t.numel() == 0:
            return t.reshape(0, 7)
        if t.dim() != 2 or t.shape[1] != 7:
            raise ValueError("targets must be Tensor[N, 7] (class, cx, cy, w, h, obj_conf, cls_conf), "
                             f"got {tuple(t.shape)}")
        cls = t[:, 0]
        valid = cls != self.config.ignore_label
        bad = valid & ((cls < 0) | (cls >= self.num_classes) | (cls != cls.round()))
        if bool(bad.any()):
            raise ValueError(f"class ids must be in [0, {self.num_classes}) or {self.config.ignore_label}, "
                             f"got {cls[bad].tolist()}")
        return t

    def _obj_loss_fn(self, logits: Tensor, targets: Tensor) -> Tensor:
        if self.config.obj_focal_loss:
            return sigmoid_focal_loss(logits, targets, self.config.focal_alpha, self.config.focal_gamma)
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none")

    def _bbox_weights(self, obj_conf: Tensor, cls_conf: Tensor) -> Optional[Tensor]:
        spec = self.config.bbox_loss_weighting
        if not spec:
            return None
        m = BBOX_WEIGHTING_RE.match(spec)
        assert m is not None  # checked by LossConfig
        kind, power = m.group(1), m.group(2)
        w = {"obj": obj_conf, "cls": cls_conf, "objxcls": obj_conf * cls_conf}[kind]
        return w ** float(power) if power is not None else w

    # -------------------------------------------------------------------------------------------------- forward
    def forward(self, preds: Tensor, grid_xy: Tensor, strides: Tensor, targets: List[Tensor]) -> Dict[str, Tensor]:
        if preds.dim() != 3 or preds.shape[-1] != 5 + self.num_classes:
            raise ValueError(f"preds must be [B, A, {5 + self.num_classes}], got {tuple(preds.shape)}")
        batch, num_anchors, _ = preds.shape
        if len(targets) != batch:
            raise ValueError(f"{len(targets)} target tensors for a batch of {batch}")
        if grid_xy.shape != (num_anchors, 2) or strides.reshape(-1).shape[0] != num_anchors:
            raise ValueError(f"grid_xy must be [{num_anchors}, 2] and strides [{num_anchors}], "
                             f"got {tuple(grid_xy.shape)} and {tuple(strides.shape)}")
        with torch.autocast(device_type=preds.device.type, enabled=False):
            return self._forward_fp32(preds.float(), grid_xy, strides, targets)

    def _forward_fp32(
        self, preds: Tensor, grid_xy: Tensor, strides: Tensor, targets: List[Tensor]
    ) -> Dict[str, Tensor]:
        cfg = self.config
        device = preds.device
        batch, num_anchors, _ = preds.shape
        strides = strides.reshape(-1).to(device=device, dtype=torch.float32)
        centers = (grid_xy.to(device=device, dtype=torch.float32) + 0.5) * strides[:, None]
        box_preds, obj_preds, cls_preds = preds[..., :4], preds[..., 4], preds[..., 5:]

        labels = [apply_ignore_thresholds(self._check_targets(t, device), cfg.ignore_bbox_thresh, cfg.ignore_label)
                  for t in targets]
        batch_has_ignore = any(bool((t[:, 0] == cfg.ignore_label).any()) for t in labels)

        fg_masks, excl_masks, reg_targets, cls_targets, weights = [], [], [], [], []
        num_fg_total = 0
        num_gt_total = 0
        for b in range(batch):
            t = labels[b]
            is_ign = t[:, 0] == cfg.ignore_label
            valid = t[~is_ign]
            num_gt_total += valid.shape[0]
            a = simota_assign(
                box_preds[b].detach(), obj_preds[b].detach(), cls_preds[b].detach(), centers, strides,
                valid[:, 1:5], valid[:, 0].long(), t[is_ign, 1:5], cfg)
            num_fg_total += a.num_fg
            fg_masks.append(a.fg_mask)
            reg_targets.append(valid[a.matched_gt_inds, 1:5])
            cls_targets.append(F.one_hot(a.matched_classes, self.num_classes).float() * a.matched_ious[:, None])
            w = self._bbox_weights(valid[a.matched_gt_inds, 5], valid[a.matched_gt_inds, 6])
            if w is not None:
                weights.append(w)
            excl = a.ignore_mask
            if cfg.ignore_bg_k > 0 and not batch_has_ignore:  # LEOD applies it only in get_losses (no ignore boxes)
                excl = excl | _highest_score_mask(obj_preds[b].detach(), cfg.ignore_bg_k, a.fg_mask)
            excl_masks.append(excl)

        fg = torch.cat(fg_masks)  # [B*A], anchors in the same order as preds.view(-1, ...)
        keep_obj = ~torch.cat(excl_masks)
        reg_t = torch.cat(reg_targets)
        cls_t = torch.cat(cls_targets)
        bbox_w = None
        if weights:
            bbox_w = torch.cat(weights)
            bbox_w = bbox_w / bbox_w.mean()
        num_fg = float(max(num_fg_total, 1))

        flat_boxes = box_preds.reshape(-1, 4)
        flat_obj = obj_preds.reshape(-1)
        flat_cls = cls_preds.reshape(-1, self.num_classes)

        if num_fg_total > 0:
            iou = elementwise_iou_cxcywh(flat_boxes[fg], reg_t)
            iou_l = 1.0 - iou ** 2
            if bbox_w is not None:
                iou_l = iou_l * bbox_w
            iou_loss = iou_l.mean()
        else:
            iou_loss = flat_boxes.sum() * 0.0  # LEOD returns 0; keep the graph connected
        obj_target = fg.float()
        obj_loss = self._obj_loss_fn(flat_obj[keep_obj], obj_target[keep_obj]).sum() / num_fg
        cls_l = F.binary_cross_entropy_with_logits(flat_cls[fg], cls_t, reduction="none")
        if bbox_w is not None:
            cls_l = cls_l * bbox_w[:, None]
        cls_loss = cls_l.sum() / num_fg

        loss = cfg.reg_weight * iou_loss + cfg.obj_weight * obj_loss + cfg.cls_weight * cls_loss
        return {
            "loss": loss,
            "iou_loss": iou_loss,
            "obj_loss": obj_loss,
            "cls_loss": cls_loss,
            "num_fg": num_fg,
            "num_gt": float(num_gt_total),
            "num_fg_per_gt": num_fg / max(num_gt_total, 1),
        }
