"""Evaluate a detector checkpoint on one split with the Prophesee protocol, as RVT's / LEOD's ``val.py``.

Pipeline (RVT ``modules/detection.py::_val_test_step_impl`` + ``PropheseeEvaluator``):

1. Stream every sequence of the split through the model (:func:`iter_sequence_predictions`, labeled
   representations only).
2. Ground truth per labeled frame exactly as RVT's loader gives it (``SequenceBase`` / ``ObjectLabelFactory``
   in ``data/genx_utils``): rows cast to float32, boxes clamped to the full sensor frame
   ``[0, W-1] x [0, H-1]`` and, for ``downsampled_by_2`` data, scaled by 1/2 (bottom-right clamped to the
   half frame, flat boxes dropped) — see :class:`leod_core.data.sequence.SequenceReader`. A labeled frame
   left without boxes is skipped altogether (``set_empty_labels_to_none_``): neither GT nor predictions.
3. ``to_prophesee``: GT and predictions of a frame get the frame's GT time ``t``. RVT carries ``t`` through
   a float32 tensor, so times above 2^24 µs (16.8 s) are rounded to float32's spacing (2-8 µs); this is
   reproduced (:func:`rvt_time_us`) because the ±50 ms matching of the protocol compares such times.
   Prediction score = class probability (not ``obj * cls``).
4. :func:`evaluate_detections` with the camera's filters (sizes halved when ``downsampled_by_2``), all
   sequences together.

Boxes are compared in the frame the model reads (half size for Gen4), as in RVT.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from leod_core.data import label_tensors as lt
from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, FormatError, write_npy
from leod_core.data.sequence import SequenceReader
from leod_core.evaluation.coco_backends import resolve_backend
from leod_core.data.cameras import get_camera
from leod_core.evaluation.detection import METRIC_KEYS, evaluate_detections
from leod_core.models.checkpoint import load_model_and_record
from leod_core.models.inference import (InferenceConfig, SequencePredictions, iter_sequence_predictions,
                                        list_sequences, predictions_to_prophesee, sequence_to_prophesee)
from leod_core.models.predict import to_sensor_pixels

log = logging.getLogger(__name__)


def rvt_time_us(t: np.ndarray | Sequence[float]) -> np.ndarray:
    """Timestamps (µs) as RVT's evaluation sees them: through float32 and back to int64."""
    return np.asarray(t, dtype=np.float32).astype(np.int64)


@dataclass
class SequenceGroundTruth:
    """Ground truth of one sequence in the evaluated frame.

    Attributes:
        name: sequence name.
        boxes: ``PROPHESEE_BBOX_DTYPE`` [N], sorted by ``t``.
        frame_times_us: int64 [F] RVT time of each labeled frame, -1 where the frame has no box left.
    """

    name: str
    boxes: np.ndarray
    frame_times_us: np.ndarray

    @property
    def num_frames(self) -> int:
        """Labeled frames that take part in the evaluation (those with at least one box)."""
        return int(np.count_nonzero(self.frame_times_us >= 0))


def labels_to_prophesee(rows: torch.Tensor) -> np.ndarray:
    """``Tensor[N, 8]`` label rows (:mod:`leod_core.data.label_tensors`) -> ``PROPHESEE_BBOX_DTYPE`` [N],
    field by field as RVT's ``to_prophesee`` (``track_id`` 0)."""
    arr = rows.detach().cpu().numpy().astype(np.float32, copy=False)
    out = np.zeros(len(arr), dtype=PROPHESEE_BBOX_DTYPE)
    out["t"] = rvt_time_us(arr[:, lt.T])
    for name, col in (("x", lt.X), ("y", lt.Y), ("w", lt.W), ("h", lt.H)):
        out[name] = arr[:, col]
    out["class_id"] = arr[:, lt.CLASS_ID].astype(np.uint32)
    out["class_confidence"] = arr[:, lt.CLASS_CONFIDENCE]
    return out


def load_ground_truth(seq_dir: Path, downsampled_by_2: bool = False) -> SequenceGroundTruth:
    """Ground truth of every labeled frame of ``seq_dir`` as RVT's evaluation loads it (module docstring)."""
    reader = SequenceReader(seq_dir, downsampled_by_2=downsampled_by_2)
    frames, times = [], np.full(reader.num_frames, -1, dtype=np.int64)
    for i in range(reader.num_frames):
        rows = reader.frame_labels(i)
        if len(rows) == 0:
            continue
        boxes = labels_to_prophesee(rows)
        stamps = np.unique(boxes["t"])
        if stamps.size != 1:
            raise FormatError(Path(seq_dir) / "labels_v2" / "labels.npz",
                              f"labeled frame {i} has rows with different timestamps {stamps.tolist()}")
        times[i] = int(stamps[0])
        frames.append(boxes)
    boxes = (np.concatenate(frames) if frames else np.zeros(0, PROPHESEE_BBOX_DTYPE)).astype(PROPHESEE_BBOX_DTYPE)
    return SequenceGroundTruth(reader.name, boxes[np.argsort(boxes["t"], kind="stable")], times)


def predictions_for_evaluation(preds: SequencePredictions, gt: SequenceGroundTruth) -> np.ndarray:
    """Prophesee predictions of the labeled frames that have ground truth, stamped with the GT time."""
    keep = [k for k, o in enumerate(preds.objframe_idx) if o >= 0 and gt.frame_times_us[o] >= 0]
    return predictions_to_prophesee([preds.detections[k] for k in keep],
                                    gt.frame_times_us[preds.objframe_idx[keep]] if keep else [])


def write_metrics_json(path: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics`` atomically in the layout of :func:`leod_core.evaluation.tables.write_test_metrics`
    (one JSON object, sorted keys, indent 1; metrics as floats) but keeping integers, strings, booleans and
    None as they are (``write_test_metrics`` casts every value to float, which strings cannot take)."""
    def value(v: Any) -> Any:
        if v is None or isinstance(v, (bool, str, int)):
            return v
        return float(v)
    write_text_atomic(path, json.dumps({k: value(v) for k, v in metrics.items()}, indent=1, sort_keys=True) + "\n")


def evaluate_sequences(predictions: Iterable[SequencePredictions], gts: dict[str, SequenceGroundTruth],
                       frame_hw: tuple[int, int], camera: str, downsampled_by_2: bool, backend: str
                       ) -> tuple[dict[str, float], dict[str, int]]:
    """Metrics of streamed predictions against ``gts`` (by sequence name) and counts
    (``num_sequences``, ``num_frames``, ``num_gt_boxes``, ``num_detections``)."""
    gt_list, pred_list, seen = [], [], set()
    for preds in predictions:
        gt = gts[preds.name]
        seen.add(preds.name)
        gt_list.append(gt.boxes)
        pred_list.append(predictions_for_evaluation(preds, gt))
    missing = sorted(set(gts) - seen)
    if missing:
        raise RuntimeError(f"no predictions for sequences {missing}")
    metrics = evaluate_detections(gt_list, pred_list, frame_hw[0], frame_hw[1], camera, downsampled_by_2,
                                  backend=backend)
    counts = {"num_sequences": len(gt_list), "num_frames": sum(g.num_frames for g in gts.values()),
              "num_gt_boxes": int(sum(len(g) for g in gt_list)),
              "num_detections": int(sum(len(p) for p in pred_list))}
    return metrics, counts


def evaluate_checkpoint(checkpoint: Path, data_dir: Path, *, out: Path, camera: str, split: str = "test",
                        cfg: InferenceConfig = InferenceConfig(), device: str = "cpu", backend: str = "auto",
                        sequences: Optional[Sequence[str]] = None, progress: bool = True,
                        predictions_dir: Optional[Path] = None) -> dict[str, Any]:
    """Evaluate ``checkpoint`` on ``data_dir/split`` and write the metrics JSON ``out``.

    Args:
        checkpoint: a checkpoint with a stored model config (:func:`save_model_checkpoint`).
        data_dir: preprocessed dataset root.
        out: metrics JSON path (written atomically; parent directories created).
        camera: 'gen1' or 'gen4' (class names and the protocol's box filters).
        split: split directory to evaluate.
        cfg: inference settings (``cfg.downsampled_by_2`` also halves the protocol's filter sizes).
        device: torch device, e.g. 'cpu' or 'cuda'.
        backend: COCO backend ('auto', 'pycocotools', 'faster-coco-eval').
        sequences: restrict to these sequence names.
        progress: tqdm progress bar.
        predictions_dir: also write each sequence's detections of the evaluated (labeled) frames to
            ``{predictions_dir}/{seq}.npy``: Prophesee boxes (``t`` the frame time, µs), sensor pixels.

    Returns:
        The dict written: :data:`METRIC_KEYS` and per-class ``AP_{class}`` ... (fractions in [0, 1]), plus
        ``checkpoint``, ``split``, ``camera``, ``backend``, ``num_sequences``, ``num_frames`` (labeled frames
        evaluated), ``num_gt_boxes``, ``num_detections``, ``confidence_threshold``, ``nms_threshold``,
        ``sequence_length``, ``batch_size``, ``autocast_dtype``, ``downsampled_by_2``, ``start_from_zero``, and
        which training step the weights are from: ``weights_step``, ``weights_selected`` ('best' by val AP or
        'last') and ``weights_val_AP`` (None where not validated), all None for a checkpoint without the record
        (RVT's, imported ones).
    """
    checkpoint, data_dir, out = Path(checkpoint), Path(data_dir), Path(out)
    camera_classes = get_camera(camera).classes  # an unknown name raises, listing the known ones
    coco = resolve_backend(backend)
    model, config, record = load_model_and_record(checkpoint)
    training = record or {}
    num_camera_classes = len(camera_classes)
    if config.num_classes != num_camera_classes:
        raise ValueError(f"{checkpoint}: model has {config.num_classes} classes but camera {camera} has "
                         f"{num_camera_classes}")
    roots = list_sequences(data_dir, split, sequences)
    if not roots:
        raise FormatError(data_dir / split, "no sequences to evaluate")
    gts = {r.name: load_ground_truth(r, cfg.downsampled_by_2) for r in roots}

    # check the frame size before the model runs (a mismatch would fail deep inside the backbone)
    frame_hw = SequenceReader(roots[0], downsampled_by_2=cfg.downsampled_by_2).frame_hw
    if tuple(frame_hw) != tuple(config.input_hw):
        raise ValueError(f"{roots[0]}: frames are {frame_hw} but the model was built for {tuple(config.input_hw)}")
    t0 = time.perf_counter()
    stream = iter_sequence_predictions(model, data_dir, split, cfg, device, sequences=[r.name for r in roots],
                                       frames="labeled", progress=progress)
    if predictions_dir is not None:
        stream = _saving_predictions(stream, Path(predictions_dir), cfg.downsampled_by_2)
    metrics, counts = evaluate_sequences(stream, gts, tuple(frame_hw), camera, cfg.downsampled_by_2, coco.name)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = dict(metrics)
    result.update(counts)
    result.update(checkpoint=str(checkpoint), split=split, camera=camera, backend=coco.name,
                  confidence_threshold=cfg.confidence_threshold, nms_threshold=cfg.nms_threshold,
                  sequence_length=cfg.sequence_length, batch_size=cfg.batch_size,
                  autocast_dtype=cfg.autocast_dtype, downsampled_by_2=cfg.downsampled_by_2,
                  start_from_zero=cfg.start_from_zero, weights_step=training.get("step"),
                  weights_selected=training.get("selected"), weights_val_AP=training.get("val_AP"))
    write_metrics_json(out, result)
    log.info("%s", format_summary(result, camera_classes))
    log.info("inference + evaluation took %.1f s; metrics written to %s", seconds, out)
    return result


def _saving_predictions(stream: Iterator[SequencePredictions], out_dir: Path, downsampled_by_2: bool
                        ) -> Iterator[SequencePredictions]:
    """``stream``, writing each sequence's Prophesee boxes (sensor pixels) to ``out_dir/{seq}.npy`` on the way."""
    for preds in stream:
        write_npy(out_dir / f"{preds.name}.npy", to_sensor_pixels(sequence_to_prophesee(preds), downsampled_by_2))
        yield preds


def format_summary(result: dict[str, Any], classes: Sequence[str]) -> str:
    """Readable multi-line summary of an :func:`evaluate_checkpoint` result (AP in percent)."""
    def pct(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and (math.isnan(v) or v < 0)) else f"{100 * v:.1f}"
    lines = [f"{result.get('checkpoint')} on {result.get('split')} ({result.get('num_sequences')} sequences, "
             f"{result.get('num_frames')} labeled frames, {result.get('num_gt_boxes')} GT boxes, "
             f"{result.get('num_detections')} detections, conf >= {result.get('confidence_threshold')}, "
             f"{result.get('backend')})",
             "  " + "  ".join(f"{k} {pct(result.get(k))}" for k in METRIC_KEYS)]
    per_class = [f"AP_{c} {pct(result.get(f'AP_{c}'))}" for c in classes if f"AP_{c}" in result]
    if per_class:
        lines.append("  " + "  ".join(per_class))
    return "\n".join(lines)
