"""Settings of the YOLOX loss (:class:`LossConfig`) and LEOD's per-class threshold expansion.

Split from :mod:`leod_core.models.loss` so that the assignment (:mod:`leod_core.models.assign`) and the loss terms
share them without importing each other; both names are re-exported by :mod:`leod_core.models.loss`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

#: ``bbox_loss_weighting`` values: the confidence to weight by, with an optional ``-w**p`` power.
BBOX_WEIGHTING_RE = re.compile(r"^(obj|cls|objxcls)(?:-w(?:\*\*([0-9]*\.?[0-9]+))?)?$")


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
        if self.bbox_loss_weighting and not BBOX_WEIGHTING_RE.match(self.bbox_loss_weighting):
            raise ValueError(f"unsupported bbox_loss_weighting {self.bbox_loss_weighting!r}")
