"""LEOD's ``ObjectLabels`` as plain tensors, with its box transforms (``data/genx_utils/labels.py``).

A frame's labels are a float32 ``Tensor[N, 8]`` with columns
``[t, x, y, w, h, class_id, class_confidence, objectness]``; ``x, y`` is the top-left corner. Boxes live
on a ``(height, width)`` canvas whose pixel *centres* are the integer coordinates ``0 .. width-1``: a box
covers the pixels whose centre lies in ``[x, x+w] x [y, y+h]``, and every box is clamped into
``[0, width-1] x [0, height-1]`` (LEOD's convention, hence ``x' = width - 1 - x - w`` for a horizontal
flip). A row with ``t == 0`` is a pseudo label, ``t != 0`` ground truth; ``class_id == 1024`` is an
ignore box (kept as is, for the soft anchor assignment of the loss).

Every function returns a new tensor and never modifies its input. Boxes that become flat (``w <= 0`` or
``h <= 0``) are dropped where LEOD drops them (``remove_flat_labels_``).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from leod_core.data.formats import IGNORE_CLASS_ID

FIELDS = ("t", "x", "y", "w", "h", "class_id", "class_confidence", "objectness")
NUM_FIELDS = len(FIELDS)
T, X, Y, W, H, CLASS_ID, CLASS_CONFIDENCE, OBJECTNESS = range(NUM_FIELDS)

HW = tuple[float, float]


def from_structured(rows: np.ndarray) -> Tensor:
    """``Tensor[N, 8]`` of structured label rows (Prophesee or pseudo dtype), as LEOD's ``from_structured_array``.

    ``objectness`` is copied from ``class_confidence`` when the dtype has no such field; every field is cast
    to float32 (so ``t`` in µs keeps ~7 significant digits, as in LEOD).
    """
    names = rows.dtype.names or ()
    columns = []
    for name in FIELDS:
        source = name if name in names else "class_confidence"
        if source not in names:
            raise ValueError(f"label rows lack field {source!r} (dtype {rows.dtype})")
        columns.append(np.asarray(rows[source], dtype=np.float32))
    return torch.from_numpy(np.stack(columns, axis=-1).reshape(len(rows), NUM_FIELDS))


def empty() -> Tensor:
    return torch.zeros((0, NUM_FIELDS), dtype=torch.float32)


def remove_flat(labels: Tensor) -> Tensor:
    """Drop boxes with ``w <= 0`` or ``h <= 0`` (LEOD's ``remove_flat_labels_``)."""
    return labels[(labels[:, W] > 0) & (labels[:, H] > 0)]


def clamp_to_frame(labels: Tensor, hw: HW) -> Tensor:
    """Clamp boxes into ``[0, width-1] x [0, height-1]`` (LEOD's ``clamp_to_frame_``).

    LEOD asserts that no box becomes flat; here flat boxes are dropped.
    """
    height, width = hw
    out = labels.clone()
    x0 = labels[:, X].clamp(0, width - 1)
    y0 = labels[:, Y].clamp(0, height - 1)
    x1 = (labels[:, X] + labels[:, W]).clamp(0, width - 1)
    y1 = (labels[:, Y] + labels[:, H]).clamp(0, height - 1)
    out[:, X], out[:, Y], out[:, W], out[:, H] = x0, y0, x1 - x0, y1 - y0
    return remove_flat(out)


def scale(labels: Tensor, multiplier: float, hw: HW) -> tuple[Tensor, HW]:
    """Scale boxes on an ``hw`` canvas by ``multiplier`` (LEOD's ``scale_``); return (labels, new canvas hw).

    The bottom-right corner is clamped to the new canvas ``multiplier * hw - 1``; flat boxes are dropped.
    Like LEOD, an empty tensor or ``multiplier == 1`` leaves everything (canvas included) unchanged.
    """
    if multiplier <= 0:
        raise ValueError(f"scale multiplier must be positive, got {multiplier}")
    if len(labels) == 0 or multiplier == 1:
        return labels, hw
    new_h, new_w = multiplier * hw[0], multiplier * hw[1]
    out = labels.clone()
    x1 = ((labels[:, X] + labels[:, W]) * multiplier).clamp(max=new_w - 1)
    y1 = ((labels[:, Y] + labels[:, H]) * multiplier).clamp(max=new_h - 1)
    out[:, X] = labels[:, X] * multiplier
    out[:, Y] = labels[:, Y] * multiplier
    out[:, W] = x1 - out[:, X]
    out[:, H] = y1 - out[:, Y]
    return remove_flat(out), (new_h, new_w)


def flip_lr(labels: Tensor, width: float) -> Tensor:
    """Horizontal flip on a canvas of ``width``: ``x' = width - 1 - x - w`` (LEOD's ``flip_lr_``)."""
    out = labels.clone()
    out[:, X] = width - 1 - labels[:, X] - labels[:, W]
    return out


def zoom_in(labels: Tensor, x0: int, y0: int, factor: float, hw: HW) -> Tensor:
    """Crop the window of size ``hw / factor`` at top-left ``(x0, y0)`` and rescale it to ``hw``.

    LEOD's ``zoom_in_and_rescale_``: boxes are clamped to ``[x0, x1 - 1]`` with
    ``x1 = min(x0 + width / factor, width - 1)`` (float window size, not the int size used for the frame),
    shifted to the window, flat boxes dropped, then scaled by ``factor``.
    """
    if len(labels) == 0 or factor == 1:
        return labels
    if factor < 1:
        raise ValueError(f"zoom-in factor must be >= 1, got {factor}")
    height, width = hw
    win_h, win_w = height / factor, width / factor
    x1 = min(x0 + win_w, width - 1)
    y1 = min(y0 + win_h, height - 1)
    out = labels.clone()
    bx0 = labels[:, X].clamp(x0, x1 - 1)
    by0 = labels[:, Y].clamp(y0, y1 - 1)
    bx1 = (labels[:, X] + labels[:, W]).clamp(x0, x1 - 1)
    by1 = (labels[:, Y] + labels[:, H]).clamp(y0, y1 - 1)
    out[:, X], out[:, Y], out[:, W], out[:, H] = bx0 - x0, by0 - y0, bx1 - bx0, by1 - by0
    out = remove_flat(out)
    return scale(out, factor, (win_h, win_w))[0]


def zoom_out(labels: Tensor, x0: int, y0: int, factor: float, hw: HW) -> Tensor:
    """Shrink the canvas by ``factor`` and paste it at top-left ``(x0, y0)`` (LEOD's ``zoom_out_and_rescale_``)."""
    if len(labels) == 0 or factor == 1:
        return labels
    if factor < 1:
        raise ValueError(f"zoom-out factor must be >= 1, got {factor}")
    out = scale(labels, 1 / factor, hw)[0].clone()
    out[:, X] += x0
    out[:, Y] += y0
    return out


def is_pseudo(labels: Tensor) -> Tensor:
    """Bool ``[N]``: pseudo labels (``t == 0``)."""
    return labels[:, T] == 0


def is_ignore(labels: Tensor, ignore_class_id: int = IGNORE_CLASS_ID) -> Tensor:
    """Bool ``[N]``: ignore boxes (``class_id == 1024``)."""
    return labels[:, CLASS_ID] == ignore_class_id


def passes_class_thresholds(class_id: Tensor, objectness: Tensor, class_confidence: Tensor,
                            obj_thresh: Sequence[float], cls_thresh: Sequence[float]) -> Tensor:
    """LEOD's per-class score filter (``filter_w_thresh`` / ``filter_bbox``): ``Tensor[N]`` bool, true where
    ``objectness > obj_thresh[c]`` and ``class_confidence > cls_thresh[c]`` (strict, compared in float32) for the
    row's class ``c``; a class outside ``0 .. len(obj_thresh) - 1`` (e.g. the ignore class 1024) never passes.

    Args:
        class_id, objectness, class_confidence: ``Tensor[N]`` (any float/int dtype, one device).
        obj_thresh, cls_thresh: one threshold per class, class-id order.
    """
    if len(obj_thresh) != len(cls_thresh) or not obj_thresh:
        raise ValueError(f"need one objectness and one class threshold per class, got {obj_thresh}, {cls_thresh}")
    num_classes = len(obj_thresh)
    cid = class_id.long()
    safe = cid.clamp(0, num_classes - 1)
    t_obj = torch.as_tensor(obj_thresh, dtype=torch.float32, device=cid.device)[safe]
    t_cls = torch.as_tensor(cls_thresh, dtype=torch.float32, device=cid.device)[safe]
    valid = (cid >= 0) & (cid < num_classes)
    return valid & (objectness.float() > t_obj) & (class_confidence.float() > t_cls)
