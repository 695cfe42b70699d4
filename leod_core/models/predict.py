"""``leod predict``: a detector checkpoint on a raw recording, streamed, without preprocessing it first.

The recording's representations are built while it is read (:class:`~leod_core.data.recording_reprs.
RecordingRepresentations`: the ones ``leod preprocess`` writes for it as an unlabeled sequence) and streamed
through the one streaming engine (:func:`~leod_core.models.inference.iter_job_predictions`, identity view, from
representation 0), so memory stays bounded however long the recording is. Detections come out in the Prophesee box
dtype RVT and LEOD read: ``t`` the representation's end time (µs), ``x, y, w, h`` in sensor pixels (doubled from
the read frame for a camera read at half resolution, as LEOD's pseudo-labeller saves them), ``class_confidence``
the class probability (RVT's ``to_prophesee``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from leod_core.data.recording_reprs import RecordingRepresentations
from leod_core.models.detector import RVTDetector
from leod_core.models.inference import InferenceConfig, iter_job_predictions, predictions_to_prophesee
from leod_core.models.streaming import StreamJob

log = logging.getLogger(__name__)

#: Box fields in pixels, scaled from the read frame to the sensor.
_PIXEL_FIELDS = ("x", "y", "w", "h")


@dataclass
class RecordingPrediction:
    """Detections of one recording.

    Attributes:
        boxes: Prophesee boxes (``PROPHESEE_BBOX_DTYPE``) in sensor pixels, sorted by ``t`` (µs).
        per_repr: representation index -> its Prophesee boxes in pixels of the read frame (for videos).
        num_reprs: representations streamed.
        num_events: events decoded.
        seconds: wall time of the stream (s); ``seconds_reading`` of it went to decoding and building frames.
    """

    boxes: np.ndarray
    per_repr: dict[int, np.ndarray]
    num_reprs: int
    num_events: int
    seconds: float
    seconds_reading: float


def to_sensor_pixels(boxes: np.ndarray, downsampled_by_2: bool) -> np.ndarray:
    """Prophesee boxes in pixels of a frame read at half resolution scaled to the sensor (x 2); a copy."""
    out = boxes.copy()
    if downsampled_by_2:
        for key in _PIXEL_FIELDS:
            out[key] *= 2
    return out


def wanted_reprs(timestamps_us: np.ndarray, every_us: Optional[int]) -> Optional[frozenset[int]]:
    """Representations to detect on: all (None), or those whose end time is a multiple of ``every_us`` (µs)."""
    if every_us is None:
        return None
    if every_us < 1:
        raise ValueError(f"every_us must be >= 1, got {every_us}")
    picked = frozenset(np.flatnonzero(timestamps_us % every_us == 0).tolist())
    if not picked:
        raise ValueError(f"no representation ends at a multiple of {every_us} µs (representations end at "
                         f"{timestamps_us[:3].tolist()} ... µs)")
    return picked


@torch.inference_mode()
def predict_recording(model: RVTDetector, model_input_hw: tuple[int, int], reprs: RecordingRepresentations,
                      cfg: InferenceConfig, device: str | torch.device = "cpu", every_us: Optional[int] = None,
                      progress: bool = True) -> RecordingPrediction:
    """Stream ``reprs`` through ``model`` (built for frames of ``model_input_hw``, pixels) from representation 0
    and gather its detections (see the module docstring); ``every_us`` keeps those of the representations ending
    at its multiples (µs)."""
    if tuple(reprs.frame_hw) != tuple(model_input_hw):
        raise ValueError(f"{reprs.root}: frames are {reprs.frame_hw} but the model was built for "
                         f"{tuple(model_input_hw)}; pick the camera the model was trained for")
    job = StreamJob(reprs, start=0, wanted=wanted_reprs(reprs.timestamps_us, every_us))
    began = time.perf_counter()
    (preds,) = iter_job_predictions(model, [job], cfg, device, progress, desc=f"predict {reprs.name}")
    seconds = time.perf_counter() - began
    per_repr = {int(r): predictions_to_prophesee([det], [t])
                for r, t, det in zip(preds.repr_idx, preds.timestamps_us, preds.detections)}
    boxes = to_sensor_pixels(predictions_to_prophesee(preds.detections, preds.timestamps_us),
                             reprs.cfg.downsampled_by_2)
    result = RecordingPrediction(boxes=boxes, per_repr=per_repr, num_reprs=job.length, num_events=reprs.events_read,
                                 seconds=seconds, seconds_reading=reprs.seconds_reading)
    log.info("%s: %d detections on %d of %d representations; %d events in %.1f s: %.3g events/s, %.1f frames/s "
             "(%.0f %% of the time building frames from events)", reprs.root, len(boxes), len(per_repr),
             result.num_reprs, result.num_events, seconds, result.num_events / max(seconds, 1e-9),
             result.num_reprs / max(seconds, 1e-9), 100 * result.seconds_reading / max(seconds, 1e-9))
    return result
