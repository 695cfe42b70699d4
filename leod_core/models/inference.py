"""Streaming inference over whole sequences of one split, the way RVT / LEOD evaluate.

What RVT does (``modules/detection.py::_val_test_step_impl``, ``data/genx_utils/sequence_for_streaming.py``,
``data/utils/stream_sharded_datapipe.py``) and this module reproduces:

* Every sequence is streamed once, in order, from ``start = max(first_labeled_repr - L + 1, 0)`` (RVT /
  LEOD default, ``start_from_zero=False``) or from representation 0 (``start_from_zero=True``, LEOD's
  ``data_augmentation.stream.start_from_zero``) to its last representation, without augmentation.
* Sequences are sorted long -> short and run side by side in ``batch_size`` slots; the recurrent state of a
  slot is zeroed when a new sequence starts in it (RVT's ``is_first_sample`` reset). Steps of a slot without
  a sequence (padding) run on zeros and their outputs are dropped. Slots never interact (eval-mode
  BatchNorm, per-sample attention), so the assignment of sequences to slots changes nothing but speed.
  RVT hands sequences to slots in a fixed "pyramid" order and switches only at chunk boundaries; here a
  slot takes the next sequence as soon as its current one ends, which wastes fewer padded steps and gives
  the same predictions.
* Representations are read through :meth:`~leod_core.data.sequence.SequenceReader.iter_chunks`,
  ``sequence_length`` at a time per stream (read ahead in a thread with ``prefetch_reads``), cast to the model
  dtype and zero-padded at the bottom/right (``InputPadderFromShape``).

The streaming itself is :class:`~leod_core.models.streaming.StreamingEngine` (identity view only).
* The backbone runs step by step; the FPN + YOLOX head run once per chunk on the features of the steps
  whose predictions are wanted (RVT's ``BackboneFeatureSelector``), followed by YOLOX's postprocess
  (``obj * cls >= confidence_threshold``, class-wise NMS at ``nms_threshold``).

Predictions are in the pixels of the frames the model reads (the ``_ds2_nearest`` half-size frame for Gen4
with ``downsampled_by_2``; multiply by 2 for sensor pixels, as LEOD's pseudo-labeller does before saving).
The padding is at the bottom/right, so padded-input pixels are frame pixels. RVT does not clamp predicted
boxes before its evaluation; ``clamp_to_frame`` clamps them into ``[0, W-1] x [0, H-1]`` (LEOD's
``_crop_to_fov_filter`` without its removal of flat boxes) for other users.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, FormatError
from leod_core.models.detector import RVTDetector
from leod_core.models.postprocess import postprocess
from leod_core.models.streaming import (AUTOCAST_DTYPES, IDENTITY, Owner, StreamConfig, StreamingEngine, StreamJob,
                                        autocast_context)

log = logging.getLogger(__name__)

__all__ = ["AUTOCAST_DTYPES", "DETECTION_COLUMNS", "InferenceConfig", "SequencePredictions", "autocast_context",
           "clamp_detections", "iter_job_predictions", "iter_sequence_predictions", "list_sequences",
           "predictions_to_prophesee", "sequence_to_prophesee"]

FrameSelection = Literal["labeled", "all"]
#: Columns of a detection row (``SequencePredictions.detections[k]``).
DETECTION_COLUMNS = ("x1", "y1", "x2", "y2", "obj_prob", "cls_prob", "class_id")


@dataclass(frozen=True)
class InferenceConfig(StreamConfig):
    """Settings of streaming inference for evaluation (:class:`~leod_core.models.streaming.StreamConfig`, whose
    ``confidence_threshold`` default 0.001 is LEOD's final evaluation; RVT's training-time validation uses 0.1),
    plus:

    Attributes:
        clamp_to_frame: clamp predicted boxes into the read frame (RVT's evaluation does not).
    """

    clamp_to_frame: bool = False


@dataclass
class SequencePredictions:
    """Predictions of one whole sequence, per predicted representation, in stream order.

    Attributes:
        name: sequence directory name.
        frame_hw: (height, width) of the frames the model read (pixels of the boxes).
        repr_idx: int64 [K] representation indices (increasing).
        timestamps_us: int64 [K] end time (µs) of each representation (``timestamps_us.npy``; at a labeled
            frame this is the label time).
        objframe_idx: int64 [K] labeled-frame index of each representation, -1 where it is not labeled.
        detections: K arrays float32 [N_k, 7]: ``x1, y1, x2, y2`` (pixels of the read frame),
            ``obj_prob``, ``cls_prob``, ``class_id``, by decreasing ``obj_prob * cls_prob``.
        stream_range: [start, stop) of the representations streamed.
    """

    name: str
    frame_hw: tuple[int, int]
    repr_idx: np.ndarray
    timestamps_us: np.ndarray
    objframe_idx: np.ndarray
    detections: List[np.ndarray]
    stream_range: tuple[int, int]

    def __len__(self) -> int:
        return len(self.repr_idx)

    @property
    def num_detections(self) -> int:
        return int(sum(len(d) for d in self.detections))


# ------------------------------------------------------------------------------------------- conversion
def predictions_to_prophesee(detections: Sequence[np.ndarray], timestamps_us: Sequence[int] | np.ndarray
                             ) -> np.ndarray:
    """Prophesee boxes (``PROPHESEE_BBOX_DTYPE``) of per-frame detections, sorted by ``t`` (stable).

    Frame ``k``'s rows get ``t = timestamps_us[k]``; ``x, y`` = top-left ``(x1, y1)``, ``w = x2 - x1``,
    ``h = y2 - y1`` (float32), ``class_id`` from column 6, ``track_id`` 0 and ``class_confidence`` = the
    class probability (column 5) alone, as RVT's ``to_prophesee`` (``utils/evaluation/prophesee/io/
    box_loading.py``) sets the COCO score — not ``obj * cls``.
    """
    if len(detections) != len(timestamps_us):
        raise ValueError(f"{len(detections)} detection arrays but {len(timestamps_us)} timestamps")
    times = np.asarray(timestamps_us, dtype=np.int64)
    if times.size and times.min() < 0:
        raise ValueError("timestamps must be non-negative")
    counts = [len(d) for d in detections]
    out = np.zeros(sum(counts), dtype=PROPHESEE_BBOX_DTYPE)
    if not out.size:
        return out
    det = np.concatenate([np.asarray(d, dtype=np.float32).reshape(-1, 7) for d in detections])
    out["t"] = np.repeat(times, counts)
    out["x"] = det[:, 0]
    out["y"] = det[:, 1]
    out["w"] = det[:, 2] - det[:, 0]
    out["h"] = det[:, 3] - det[:, 1]
    out["class_id"] = det[:, 6].astype(np.uint32)
    out["class_confidence"] = det[:, 5]
    return out[np.argsort(out["t"], kind="stable")]


def sequence_to_prophesee(preds: SequencePredictions) -> np.ndarray:
    """:func:`predictions_to_prophesee` of a whole sequence with each representation's timestamp."""
    return predictions_to_prophesee(preds.detections, preds.timestamps_us)


def clamp_detections(det: Tensor, frame_hw: tuple[int, int]) -> Tensor:
    """Clamp ``x1, y1, x2, y2`` of ``det: Tensor[N, 7]`` into ``[0, W-1] x [0, H-1]`` (a new tensor)."""
    height, width = frame_hw
    out = det.clone()
    out[:, 0:4:2] = det[:, 0:4:2].clamp(0, width - 1)
    out[:, 1:4:2] = det[:, 1:4:2].clamp(0, height - 1)
    return out


# ------------------------------------------------------------------------------------------ sequences
def list_sequences(data_dir: Path, split: str, sequences: Optional[Sequence[str]] = None) -> List[Path]:
    """Sequence directories of ``data_dir/split`` (sorted by name), restricted to ``sequences`` if given."""
    split_dir = Path(data_dir) / split
    if not split_dir.is_dir():
        raise FormatError(split_dir, "split directory is missing")
    found = {p.name: p for p in sorted(split_dir.iterdir()) if p.is_dir()}
    if sequences is None:
        return list(found.values())
    missing = [s for s in sequences if s not in found]
    if missing:
        raise FormatError(split_dir, f"unknown sequences {missing}")
    return [found[s] for s in dict.fromkeys(sequences)]


# ------------------------------------------------------------------------------------------- inference
@torch.inference_mode()
def iter_sequence_predictions(model: RVTDetector, data_dir: Path, split: str, cfg: InferenceConfig,
                              device: str | torch.device = "cpu", sequences: Optional[Sequence[str]] = None,
                              frames: FrameSelection = "labeled", progress: bool = True
                              ) -> Iterator[SequencePredictions]:
    """Stream every sequence of ``data_dir/split`` through ``model``; yield each one's predictions when it ends.

    The :class:`~leod_core.models.streaming.StreamingEngine` with the identity view only, the FPN + head run once
    per chunk of ``L`` steps.

    Args:
        model: the detector (moved to ``device`` and put in eval mode here).
        data_dir: preprocessed dataset root (``{data_dir}/{split}/{seq}/...``).
        split: 'train', 'val' or 'test' (any directory name under ``data_dir``).
        cfg: :class:`InferenceConfig`.
        device: torch device.
        sequences: names of the sequences to run (default: all of the split).
        frames: 'labeled' keeps the predictions of the labeled representations only (what the evaluation
            needs), 'all' those of every streamed representation (pseudo-labelling).
        progress: show a tqdm bar over representations.

    Yields:
        :class:`SequencePredictions`, in the order the sequences finish.
    """
    if frames not in ("labeled", "all"):
        raise ValueError(f"frames must be 'labeled' or 'all', got {frames!r}")
    jobs = []
    for root in list_sequences(Path(data_dir), split, sequences):
        job = StreamJob.open(root, cfg)
        if frames == "labeled":
            job.wanted = frozenset(job.reader.repr_to_frame)
        jobs.append(job)
    yield from iter_job_predictions(model, jobs, cfg, device, progress, desc=f"inference {split}")


@torch.inference_mode()
def iter_job_predictions(model: RVTDetector, jobs: Sequence[StreamJob], cfg: InferenceConfig,
                         device: str | torch.device = "cpu", progress: bool = True, desc: str = "inference"
                         ) -> Iterator[SequencePredictions]:
    """Stream ``jobs`` (their readers: preprocessed sequences, or recordings read on the fly) through ``model``
    with the identity view, the FPN + head once per chunk of ``L`` steps; yield each job's predictions (of its
    ``wanted`` representations) when it ends. ``model`` is moved to ``device`` and put in eval mode here."""
    device = torch.device(device)
    model = model.to(device).eval()
    timestamps = {job.name: job.reader.read_timestamps_us() for job in jobs}
    num_classes = model.num_classes

    def decode(head: Tensor, owners: List[Owner]) -> List[np.ndarray]:
        """YOLOX postprocess; float32 [N, 7] per owner (optionally clamped into the read frame)."""
        dets = postprocess(head, num_classes, cfg.confidence_threshold, cfg.nms_threshold)
        if cfg.clamp_to_frame:
            dets = [clamp_detections(det, job.reader.frame_hw) for (job, _, _), det in zip(owners, dets)]
        return [det.cpu().numpy().astype(np.float32, copy=False) for det in dets]

    engine = StreamingEngine(model, cfg, device, decode, chunk_steps=cfg.sequence_length)
    bar = tqdm(total=sum(j.length for j in jobs), unit="repr", desc=desc, disable=not progress)
    try:
        for job in engine.run(jobs, bar):
            yield _result(job, timestamps[job.name])
            job.outputs = {}
    finally:
        bar.close()


def _result(job: StreamJob, timestamps_us: np.ndarray) -> SequencePredictions:
    outputs = job.outputs.get(IDENTITY.name, {})
    idx = np.asarray(sorted(outputs), dtype=np.int64)
    repr_2_frame = job.reader.repr_to_frame
    return SequencePredictions(
        name=job.name, frame_hw=job.reader.frame_hw, repr_idx=idx, timestamps_us=timestamps_us[idx],
        objframe_idx=np.asarray([repr_2_frame.get(int(i), -1) for i in idx], dtype=np.int64),
        detections=[outputs[int(i)] for i in idx], stream_range=(job.start, job.reader.num_reprs))
