"""COCO bbox evaluation backends: pycocotools (the reference) and faster-coco-eval (optional, fast).

Both run the standard ``COCOeval`` for ``iouType='bbox'`` with its default parameters (IoU thresholds
.50:.05:.95, maxDets 1/10/100, COCO area ranges all / small < 32² / medium < 96² / large, in px²) on
a ground-truth dataset and a list of detections given as plain COCO dicts, and return the 12 summary
statistics of ``COCOeval.summarize`` (``stats[0:6]`` = AP, AP50, AP75, AP_S, AP_M, AP_L).

``resolve_backend('auto')`` picks faster-coco-eval when it can be imported, else pycocotools, and logs the
choice (the fallback as a warning). Errors raised inside a backend propagate: there is no silent fallback to
the other one. COCO's console output is captured and sent to this module's logger at DEBUG level.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

PYCOCOTOOLS = "pycocotools"
FASTER_COCO_EVAL = "faster-coco-eval"
AUTO = "auto"
_ALIASES = {PYCOCOTOOLS: PYCOCOTOOLS, FASTER_COCO_EVAL: FASTER_COCO_EVAL, "faster_coco_eval": FASTER_COCO_EVAL}
BACKENDS = (PYCOCOTOOLS, FASTER_COCO_EVAL, AUTO)

CocoDataset = dict[str, Any]
CocoResults = list[dict[str, Any]]


@dataclass(frozen=True)
class CocoBackend:
    """One COCO implementation: ``name`` and a function running the bbox evaluation."""

    name: str
    run: Callable[[CocoDataset, CocoResults, list[int]], np.ndarray]

    def evaluate(self, gt_dataset: CocoDataset, detections: CocoResults, img_ids: list[int]) -> np.ndarray:
        """The 12 ``COCOeval.summarize`` statistics (float64) over ``img_ids``."""
        return np.asarray(self.run(gt_dataset, detections, img_ids), dtype=np.float64)


def fast_backend_available() -> bool:
    """True if the ``faster_coco_eval`` package can be imported."""
    return importlib.util.find_spec("faster_coco_eval") is not None


def resolve_backend(name: str) -> CocoBackend:
    """Backend for ``name`` (``'pycocotools'``, ``'faster-coco-eval'`` or ``'auto'``); logs the active one.

    Raises ``ValueError`` for an unknown name and ``ImportError`` if the requested package is missing.
    """
    if name == AUTO and fast_backend_available():
        chosen = FASTER_COCO_EVAL
        log.info("COCO evaluation backend: %s (auto)", _describe(chosen))
    elif name == AUTO:
        chosen = PYCOCOTOOLS
        log.warning("COCO evaluation backend: %s (auto; faster-coco-eval is not installed: the same AP, several "
                    "times slower; pip install faster-coco-eval)", _describe(chosen))
    elif name in _ALIASES:
        chosen = _ALIASES[name]
        log.info("COCO evaluation backend: %s", _describe(chosen))
    else:
        raise ValueError(f"unknown COCO backend {name!r}, expected one of {BACKENDS}")
    return CocoBackend(chosen, _run_faster if chosen == FASTER_COCO_EVAL else _run_pycocotools)


def _describe(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{name} {version(name)}"
    except PackageNotFoundError:
        return name


def _results_dataset(gt_dataset: CocoDataset, detections: CocoResults) -> CocoDataset:
    """The dataset that ``COCO.loadRes`` would build for bbox detections (areas must already be set)."""
    return {"images": list(gt_dataset["images"]), "categories": list(gt_dataset["categories"]),
            "annotations": detections}


def _run_pycocotools(gt_dataset: CocoDataset, detections: CocoResults, img_ids: list[int]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = gt_dataset
            coco_gt.createIndex()
            coco_dt.dataset = _results_dataset(gt_dataset, detections)
            coco_dt.createIndex()
            coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
            coco_eval.params.imgIds = list(img_ids)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
    finally:
        log.debug("pycocotools output:\n%s", out.getvalue())
    return coco_eval.stats


def _run_faster(gt_dataset: CocoDataset, detections: CocoResults, img_ids: list[int]) -> np.ndarray:
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(print_function=log.debug)
    coco_gt.dataset = gt_dataset
    coco_gt.createIndex()
    coco_dt = COCO(print_function=log.debug)
    coco_dt.dataset = _results_dataset(gt_dataset, detections)
    coco_dt.createIndex()
    coco_eval = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=log.debug)
    coco_eval.params.imgIds = list(img_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return np.asarray(coco_eval.stats)
