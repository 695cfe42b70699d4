"""YOLOX loss with SimOTA assignment and LEOD's soft anchor assignment ("rnndet-soft").

A re-implementation of ``models/detection/yolox/models/yolo_head.py`` of LEOD (Wuziyi616/LEOD):
``YOLOXHead.get_losses``, ``get_losses_w_ignore``, ``get_assignments(_w_ignore)``,
``get_geometry_constraint(_w_ignore)``, ``simota_matching``, ``_ignore_bbox``, ``_get_highest_score_mask``,
``_get_bbox_loss_weight`` and ``models/detection/yolox/models/losses.py: IOUloss, FocalLoss``.

Behaviour (all per image, anchors vectorised):

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
5. Losses, pooled over the batch, with ``num_fg = max(total foreground anchors, 1)``:
   IoU loss ``mean(1 − IoU²)`` over foreground anchors (``reduction="mean"``, quirk 10; 0 without foreground);
   objectness BCE-with-logits (target 1 on foreground, 0 elsewhere) summed over the non-ignored anchors / num_fg;
   classification BCE-with-logits towards ``one_hot · IoU(pred, matched box)`` (IoU detached) summed / num_fg;
   ``loss = reg_weight·iou + obj_weight·obj + cls_weight·cls`` (LEOD's ``use_l1`` is always False: no L1 loss).

All loss arithmetic runs in float32 with autocast disabled, whatever the dtype of ``preds``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from leod_core.models.boxes import elementwise_iou_cxcywh, pairwise_iou_cxcywh

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

_WEIGHTING_RE = re.compile(r"^(obj|cls|objxcls)(?:-w(?:\*\*([0-9]*\.?[0-9]+))?)?$")


def expand_class_thresholds(
    values: Union[None, float, Sequence[float]], num_classes: int
) -> Optional[Tuple[float, ...]]:
    """Per-class thresholds as LEOD's ``config/modifier.py`` sets them.

    Two-element lists follow the Gen1 order ``[car, ped]``. For Gen4 (3 classes: ped, cyc, car) ``[a, b]`` becomes
    ``[b, b, a]`` (cyclists share the pedestrian threshold). A list with one value per class passes through.
    ``None`` (or an empty list: LEOD tests ``if not thresh``) means "off" and gives ``None``. A scalar is repeated for
    every class (an extension: LEOD's head would fail on a scalar).
    """
    if values is None:
        return None
    if isinstance(values, (int, float)):
        return (float(values),) * num_classes
    vals = tuple(float(v) for v in values)
    if len(vals) == 0:
        return None
    if len(vals) == num_classes:
        return vals
    if len(vals) == 2 and num_classes == 3:
        return (vals[1], vals[1], vals[0])
    raise ValueError(f"cannot expand {len(vals)} thresholds {vals} to {num_classes} classes")


@dataclass(frozen=True)
class LossConfig:
    """Knobs of LEOD's ``YOLOXHead`` loss, with the defaults of ``config/model/rnndet*.yaml``.

    ``ignore_bbox_thresh``: ``None`` = hard assignment ("rnndet"); per-class thresholds (one per class, see
    :func:`expand_class_thresholds`) = "rnndet-soft" (Gen1 ``(0.7, 0.35)``).
    ``ignore_bg_k``: fraction (LEOD calls it "k%", but multiplies the anchor count by it) of the highest-objectness
    background anchors left out of the objectness loss; ``<= 0`` is off. As in LEOD it acts only on batches that
    contain no ignore box at all.
    ``obj_focal_loss``: sigmoid focal loss (alpha 0.25, gamma 2) instead of BCE for objectness.
    ``bbox_loss_weighting``: ``''`` (off) or ``'obj' | 'cls' | 'objxcls'`` with an optional ``'-w**p'`` suffix:
    weights the IoU and cls losses of each foreground anchor by the matched box's confidence (to the power p),
    normalised to mean 1 over the batch's foreground anchors.
    """

    reg_weight: float = 5.0
    obj_weight: float = 1.0
    cls_weight: float = 1.0
    center_radius: float = 1.5
    topk_candidates: int = 10
    iou_cost_weight: float = 3.0
    iou_cost_eps: float = 1e-8
    outside_center_cost: float = 1e6
    ignore_label: int = 1024
    ignore_bbox_thresh: Optional[Tuple[float, ...]] = None
    ignore_bg_k: float = 0.0
    obj_focal_loss: bool = False
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    bbox_loss_weighting: str = ""

    def __post_init__(self) -> None:
        thr = self.ignore_bbox_thresh
        if thr is not None:
            if isinstance(thr, (int, float)):
                raise TypeError("ignore_bbox_thresh must be a sequence of per-class thresholds (or None)")
            thr = tuple(float(t) for t in thr)
            object.__setattr__(self, "ignore_bbox_thresh", thr if thr else None)
        if self.center_radius <= 0:
            raise ValueError(f"center_radius must be > 0, got {self.center_radius}")
        if self.topk_candidates < 1:
            raise ValueError(f"topk_candidates must be >= 1, got {self.topk_candidates}")
        if self.bbox_loss_weighting and not _WEIGHTING_RE.match(self.bbox_loss_weighting):
            raise ValueError(f"unsupported bbox_loss_weighting {self.bbox_loss_weighting!r}")


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
        m = _WEIGHTING_RE.match(spec)
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
