"""Prophesee detection protocol (RVT/LEOD ``evaluate_list``): COCO mAP on event-camera box sequences.

Inputs are, per sequence, structured box arrays with the Prophesee fields ``t`` (µs), ``x``, ``y``, ``w``,
``h`` (px, top-left corner), ``class_id`` and, for predictions, ``class_confidence`` (the COCO score), both
sorted by ``t``. The protocol, as RVT runs it:

1. Filter GT **and** predictions (:func:`filter_boxes`): keep ``t > skip_before_us`` (first 0.5 s dropped),
   ``w² + h² ≥ min_box_diag²``, ``w ≥ min_box_side``, ``h ≥ min_box_side``.
2. Per sequence, every unique GT timestamp is one COCO image; its GT are the boxes at exactly that time and
   its detections those with ``|t_pred - t_gt| ≤ time_tol_us`` (a prediction can serve two images)
   (:func:`match_times`).
3. Standard COCO bbox evaluation; category id = ``class_id + 1``. When no detection falls into any image,
   RVT skips COCO and reports 0.0 for every metric; this module does the same. A metric COCO cannot
   define (e.g. ``AP_L`` without large GT boxes) is ``-1.0``, as COCO reports it.

Per-class metrics follow LEOD's ``PropheseeEvaluator``: the whole protocol is rerun on the lists filtered
to one class, so a class's images are only the timestamps where it has GT.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from leod_core.data.cameras import DOWNSAMPLE_FACTOR, Camera, CameraView, get_camera
from leod_core.evaluation.coco_backends import PYCOCOTOOLS, CocoBackend, resolve_backend

log = logging.getLogger(__name__)

#: Keys of the summary metrics, in ``COCOeval.stats`` order (fractions in [0, 1], -1 if undefined).
METRIC_KEYS = ("AP", "AP_50", "AP_75", "AP_S", "AP_M", "AP_L")
_GT_FIELDS = ("t", "x", "y", "w", "h", "class_id")
_PRED_FIELDS = _GT_FIELDS + ("class_confidence",)


@dataclass(frozen=True)
class CameraSpec:
    """Class names and box-size filter of a camera at full sensor resolution (px)."""

    classes: tuple[str, ...]
    min_box_diag: int
    min_box_side: int


def camera_spec(camera: Camera) -> CameraSpec:
    """The evaluation settings of a registry record."""
    return CameraSpec(classes=camera.classes, min_box_diag=camera.eval_min_box_diag,
                      min_box_side=camera.eval_min_box_side)


#: Evaluation settings by camera name: a read-only view of the camera registry (:mod:`leod_core.data.cameras`).
CAMERAS = CameraView(camera_spec)


@dataclass(frozen=True)
class EvalProtocol:
    """Settings of the Prophesee protocol. Sizes in px of the evaluated frames, times in µs."""

    classes: tuple[str, ...]
    min_box_diag: float
    min_box_side: float
    skip_before_us: int = 500_000
    time_tol_us: int = 50_000

    @classmethod
    def for_camera(cls, camera: str, downsampled_by_2: bool = False) -> "EvalProtocol":
        """RVT's settings for ``camera`` (a registered name), sizes divided by :data:`DOWNSAMPLE_FACTOR` on
        downsampled data; an unknown camera raises ``ValueError`` listing the known ones."""
        spec = camera_spec(get_camera(camera))
        diag, side = spec.min_box_diag, spec.min_box_side
        if downsampled_by_2:
            if diag % DOWNSAMPLE_FACTOR or side % DOWNSAMPLE_FACTOR:
                raise ValueError(f"filter sizes {diag}/{side} of {camera} are not divisible by {DOWNSAMPLE_FACTOR}")
            diag, side = diag // DOWNSAMPLE_FACTOR, side // DOWNSAMPLE_FACTOR
        return cls(classes=spec.classes, min_box_diag=diag, min_box_side=side)


def filter_boxes(boxes: np.ndarray, protocol: EvalProtocol) -> np.ndarray:
    """Boxes kept by the protocol: after ``skip_before_us`` (strictly) and not smaller than the size limits.

    Arithmetic runs in the array's own dtypes (float32 for Prophesee boxes), as in RVT.
    """
    w, h = boxes["w"], boxes["h"]
    keep = ((boxes["t"] > protocol.skip_before_us)
            & (w ** 2 + h ** 2 >= protocol.min_box_diag ** 2)
            & (w >= protocol.min_box_side) & (h >= protocol.min_box_side))
    return boxes[keep]


def match_times(gt: np.ndarray, pred: np.ndarray, time_tol_us: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Split one sequence into COCO images: one per unique GT time ``ts`` (µs), ascending.

    Image ``i`` holds the GT with ``t == ts`` and the predictions with ``ts - tol ≤ t ≤ ts + tol``. Times
    are compared as int64, so a timestamp below ``time_tol_us`` cannot wrap around in unsigned arithmetic.
    """
    gt_t, pred_t = gt["t"].astype(np.int64), pred["t"].astype(np.int64)
    stamps = np.unique(gt_t)
    gt_lo, gt_hi = np.searchsorted(gt_t, stamps, "left"), np.searchsorted(gt_t, stamps, "right")
    dt_lo = np.searchsorted(pred_t, stamps - time_tol_us, "left")
    dt_hi = np.searchsorted(pred_t, stamps + time_tol_us, "right")
    return ([gt[a:b] for a, b in zip(gt_lo, gt_hi)], [pred[a:b] for a, b in zip(dt_lo, dt_hi)])


def evaluate_detections(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], height: int, width: int,
                        camera: str, downsampled_by_2: bool, backend: str = PYCOCOTOOLS,
                        apply_bbox_filters: bool = True, *, per_class: bool = True,
                        protocol: EvalProtocol | None = None) -> dict[str, float]:
    """COCO metrics of ``pred`` against ``gt`` (one box array per sequence) under the Prophesee protocol.

    ``height``/``width`` (px) are recorded in the COCO images only. ``backend``: 'pycocotools',
    'faster-coco-eval' or 'auto'. ``protocol`` overrides ``EvalProtocol.for_camera(camera, downsampled_by_2)``.
    Returns :data:`METRIC_KEYS` and, if ``per_class``, ``{key}_{class}`` for each class (``AP_car``, ...),
    as floats in [0, 1] (-1.0 where COCO cannot define a metric).
    """
    protocol = protocol or EvalProtocol.for_camera(camera, downsampled_by_2)
    _check_inputs(gt, pred, height, width)
    coco = resolve_backend(backend)
    if apply_bbox_filters:
        gt = [filter_boxes(g, protocol) for g in gt]
        pred = [filter_boxes(p, protocol) for p in pred]
    metrics = _evaluate_lists(gt, pred, height, width, protocol, coco)
    if per_class:
        for class_id, name in enumerate(protocol.classes):
            gt_c = [g[g["class_id"] == class_id] for g in gt]
            pred_c = [p[p["class_id"] == class_id] for p in pred]
            class_metrics = _evaluate_lists(gt_c, pred_c, height, width, protocol, coco)
            metrics.update({f"{key}_{name}": value for key, value in class_metrics.items()})
    return metrics


def _evaluate_lists(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], height: int, width: int,
                    protocol: EvalProtocol, coco: CocoBackend) -> dict[str, float]:
    gt_images: list[np.ndarray] = []
    pred_images: list[np.ndarray] = []
    for g, p in zip(gt, pred):
        g_win, p_win = match_times(g, p, protocol.time_tol_us)
        gt_images += g_win
        pred_images += p_win
    num_detections = sum(p.size for p in pred_images)
    if num_detections == 0:
        log.warning("no detections to evaluate: every metric is 0 (RVT's convention)")
        return {key: 0.0 for key in METRIC_KEYS}
    dataset, results = to_coco(gt_images, pred_images, protocol.classes, height, width)
    stats = coco.evaluate(dataset, results, [img["id"] for img in dataset["images"]])
    return {key: float(stats[i]) for i, key in enumerate(METRIC_KEYS)}


def to_coco(gt_images: Sequence[np.ndarray], pred_images: Sequence[np.ndarray], classes: Sequence[str],
            height: int, width: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """COCO ground-truth dataset and detection list for images ``1..N`` (image ``i+1`` = ``gt_images[i]``).

    Category id = ``class_id + 1``; score = ``class_confidence``; area = ``w * h`` computed in the boxes'
    dtype (float32 for Prophesee boxes), exactly as RVT's dicts of NumPy scalars give it to pycocotools
    (GT and ``loadRes``). Coordinates are passed on unchanged (px).
    """
    images = [{"id": i + 1, "height": int(height), "width": int(width), "file_name": "n.a"}
              for i in range(len(gt_images))]
    categories = [{"id": i + 1, "name": name, "supercategory": "none"} for i, name in enumerate(classes)]
    annotations = [dict(a, iscrowd=0) for a in _box_dicts(gt_images, with_score=False)]
    results = [dict(a, iscrowd=0) for a in _box_dicts(pred_images, with_score=True)]
    dataset = {"info": {}, "licenses": [], "type": "instances", "images": images,
               "annotations": annotations, "categories": categories}
    return dataset, results


def _box_dicts(images: Sequence[np.ndarray], with_score: bool) -> list[dict[str, Any]]:
    """One COCO annotation dict per box, ids 1..M in image order then row order."""
    if not images or sum(b.size for b in images) == 0:
        return []
    fields = _PRED_FIELDS if with_score else _GT_FIELDS
    boxes = {k: np.concatenate([b[k] for b in images]) for k in fields}
    image_ids = np.repeat(np.arange(1, len(images) + 1), [b.size for b in images]).tolist()
    x, y, w, h = (boxes[k] for k in ("x", "y", "w", "h"))
    bboxes = np.stack([x, y, w, h], axis=1).tolist()
    areas = (w * h).tolist()
    categories = (boxes["class_id"].astype(np.int64) + 1).tolist()
    scores = boxes["class_confidence"].tolist() if with_score else [None] * len(areas)
    out = []
    for i, (img, bbox, area, cat, score) in enumerate(zip(image_ids, bboxes, areas, categories, scores)):
        ann = {"id": i + 1, "image_id": img, "category_id": cat, "bbox": bbox, "area": area}
        if with_score:
            ann["score"] = score
        out.append(ann)
    return out


def _check_inputs(gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], height: int, width: int) -> None:
    """Raise ``ValueError`` naming the sequence if the lists or arrays break the protocol's assumptions."""
    if len(gt) != len(pred):
        raise ValueError(f"{len(gt)} GT sequences but {len(pred)} prediction sequences")
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    for i, (g, p) in enumerate(zip(gt, pred)):
        _check_boxes(g, _GT_FIELDS, f"sequence {i} GT")
        _check_boxes(p, _PRED_FIELDS, f"sequence {i} predictions")


def _check_boxes(boxes: np.ndarray, fields: tuple[str, ...], what: str) -> None:
    names = getattr(getattr(boxes, "dtype", None), "names", None) or ()
    missing = [f for f in fields if f not in names]
    if missing or boxes.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D structured box array with fields {fields}, missing {missing}")
    if boxes.size and np.any(np.diff(boxes["t"].astype(np.int64)) < 0):
        raise ValueError(f"{what}: boxes are not sorted by t")
    for key in fields[1:5] + fields[6:]:
        if boxes.size and not np.all(np.isfinite(boxes[key])):
            raise ValueError(f"{what}: non-finite values in field {key!r}")
