"""LEOD's pseudo-labeller end to end for a set of training sequences (``modules/pseudo_labeler.py``:
``EventSeqData._aggregate_results``, ``_track_filter``, ``_summarize``; ``predict.py``).

Per sequence:

1. :func:`~leod_core.pseudo.tta.predict_sequence_views`: 4-view TTA inference, per-view filtering and the merge
   of the views; kept GT frames pass through unchanged;
2. tracking filter + inpainting (:func:`~leod_core.pseudo.tracker.filter_and_inpaint`, forward and backward over
   frames ``0..max(frame)``; boxes in sensor pixels, centre format, ``is_gt = t != 0``, image size = sensor size):
   pseudo boxes rejected by the tracker get ``class_id = ignore_label`` (1024) and keep their scores; inpainted
   boxes are appended as ``[t=0, x, y, w, h, 1024, 0, 0]`` (after the frame's own rows, or as new frames); GT is
   never changed (asserted);
3. rows in LEOD's pseudo dtype (``PSEUDO_BBOX_DTYPE``), frames sorted, ``objframe_idx_2_repr_idx`` = the sorted
   representation indices holding >= 1 box (GT, pseudo or ignore), handed to ``writer``.

The writer is a callable ``writer(seq_name, source_seq_dir, labels: SequenceLabels, objframe_idx_2_repr_idx)``;
the default one writes LEOD's layout under ``out_dir`` with
``leod_core.pseudo.writer.write_pseudo_sequence(out_dir / seq_name, source_seq_dir, labels, objframe_idx_2_repr_idx,
downsampled_by_2)``.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from leod_core.data.formats import PSEUDO_BBOX_DTYPE, SequenceLabels
from leod_core.data.splits import LabelSplit
from leod_core.pseudo.tracker import TrackerConfig, filter_and_inpaint
from leod_core.pseudo.tta import MergedSequence, TTAConfig, predict_sequence_views

log = logging.getLogger(__name__)

Writer = Callable[[str, Path, SequenceLabels, np.ndarray], None]


@dataclass(frozen=True)
class SequenceResult:
    """The labels of one sequence as written, and what happened to its boxes."""

    labels: SequenceLabels
    objframe_idx_2_repr_idx: np.ndarray
    num_pseudo: int       # merged pseudo boxes (before tracking; ignored ones included)
    num_ignored: int      # pseudo boxes relabelled ignore by the tracker
    num_inpainted: int    # ignore boxes added by inpainting
    num_gt: int           # GT boxes passed through
    num_gt_frames: int


@dataclass(frozen=True)
class LabelerConfig:
    """How the end-to-end labeller overlaps its stages (the labels written do not depend on it).

    Attributes:
        background_write: track and write each finished sequence in one background thread while the inference of
            the next ones goes on (same calls, same order); False runs them inline between inference steps.
        max_pending_sequences: finished sequences queued for or inside the background stage before inference
            waits for the oldest (bounds the merged boxes held in memory).
    """

    background_write: bool = True
    max_pending_sequences: int = 2

    def __post_init__(self) -> None:
        if self.max_pending_sequences < 1:
            raise ValueError(f"max_pending_sequences must be >= 1, got {self.max_pending_sequences}")


def concat_rows(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate label arrays into one ``PSEUDO_BBOX_DTYPE`` array (``np.concatenate`` would pack the 40-byte
    dtype to 36 bytes)."""
    out = np.zeros(sum(len(p) for p in parts), dtype=PSEUDO_BBOX_DTYPE)
    i = 0
    for p in parts:
        for name in PSEUDO_BBOX_DTYPE.names:
            out[name][i:i + len(p)] = p[name]
        i += len(p)
    return out


def same_rows(a: np.ndarray, b: np.ndarray) -> bool:
    """Field-by-field exact equality of two label arrays."""
    return len(a) == len(b) and all(np.array_equal(a[k], b[k]) for k in PSEUDO_BBOX_DTYPE.names)


def _empty_labels() -> Tuple[SequenceLabels, np.ndarray]:
    return (SequenceLabels(np.zeros(0, dtype=PSEUDO_BBOX_DTYPE), np.zeros(0, dtype=np.int64)),
            np.zeros(0, dtype=np.int64))


def track_and_summarize(merged: MergedSequence, tracker_cfg: TrackerConfig = TrackerConfig()) -> SequenceResult:
    """Tracking filter + inpainting of one sequence's merged boxes, then LEOD's on-disk rows."""
    if set(merged.pseudo) & set(merged.gt):
        raise AssertionError(f"{merged.name}: frames {sorted(set(merged.pseudo) & set(merged.gt))} hold both GT "
                             "and pseudo boxes")
    frames = [f for f in merged.frames if len(merged.gt.get(f, merged.pseudo.get(f, ()))) > 0]
    per_frame = {f: (merged.gt[f] if f in merged.gt else merged.pseudo[f]).copy() for f in frames}
    num_pseudo = merged.num_pseudo_boxes
    if not frames:
        labels, o2r = _empty_labels()
        return SequenceResult(labels, o2r, num_pseudo, 0, 0, 0, 0)
    rows = concat_rows([per_frame[f] for f in frames])
    counts = np.asarray([len(per_frame[f]) for f in frames], dtype=np.int64)
    x, y, w, h = (rows[k].astype(np.float32) for k in ("x", "y", "w", "h"))
    centre = np.stack([x + w / np.float32(2), y + h / np.float32(2), w, h], axis=1)  # LEOD get_xywh('center')
    is_gt = rows["t"] != 0
    removed, ip_frames, ip_counts, ip_boxes = filter_and_inpaint(
        np.asarray(frames, dtype=np.int64), counts, centre, rows["class_id"].astype(np.int64), is_gt,
        merged.sensor_hw, tracker_cfg)
    if np.any(removed & is_gt):
        raise AssertionError(f"{merged.name}: the tracker would relabel GT boxes")
    rows["class_id"][removed] = tracker_cfg.ignore_label
    starts = np.concatenate([[0], np.cumsum(counts)])
    per_frame = {f: rows[starts[i]:starts[i + 1]] for i, f in enumerate(frames)}

    # inpainting: ignore boxes with zero scores, t = 0, at frames without GT
    ip_start = 0
    for f, n in zip(ip_frames.tolist(), ip_counts.tolist()):
        b = ip_boxes[ip_start:ip_start + n]
        ip_start += n
        if f in merged.gt:
            raise AssertionError(f"{merged.name}: inpainting at GT frame {f}")
        new = np.zeros(n, dtype=PSEUDO_BBOX_DTYPE)
        new["x"] = b[:, 0] - b[:, 2] / np.float32(2)
        new["y"] = b[:, 1] - b[:, 3] / np.float32(2)
        new["w"], new["h"] = b[:, 2], b[:, 3]
        new["class_id"] = tracker_cfg.ignore_label
        per_frame[f] = concat_rows([per_frame[f], new]) if f in per_frame else new
    num_inpainted = int(ip_counts.sum())

    out_frames = sorted(per_frame)
    for f, gt in merged.gt.items():  # GT is never changed
        if not same_rows(per_frame[f], gt):
            raise AssertionError(f"{merged.name}: GT of frame {f} changed")
    chunks = [per_frame[f] for f in out_frames]
    labels = SequenceLabels(concat_rows(chunks), np.cumsum([0] + [len(c) for c in chunks[:-1]], dtype=np.int64))
    o2r = np.asarray(out_frames, dtype=np.int64)
    return SequenceResult(labels, o2r, num_pseudo, int(removed.sum()), num_inpainted, merged.num_gt_boxes,
                          len(merged.gt))


def default_writer(out_dir: Union[str, Path], downsampled_by_2: bool) -> Writer:
    """Writer that stores LEOD's layout under ``out_dir/<seq_name>`` (``leod_core.pseudo.writer``)."""
    from leod_core.pseudo.writer import write_pseudo_sequence  # written separately; imported when used

    out_dir = Path(out_dir)

    def write(seq_name: str, source_seq_dir: Path, labels: SequenceLabels, objframe_idx_2_repr_idx: np.ndarray):
        write_pseudo_sequence(out_dir / seq_name, source_seq_dir, labels, objframe_idx_2_repr_idx, downsampled_by_2)

    return write


def track_and_write(merged: MergedSequence, tracker_cfg: TrackerConfig, writer: Writer) -> SequenceResult:
    """:func:`track_and_summarize` one sequence and hand its labels to ``writer``."""
    res = track_and_summarize(merged, tracker_cfg)
    writer(merged.name, merged.seq_dir, res.labels, res.objframe_idx_2_repr_idx)
    return res


def pseudo_label_sequences(model, data_dir: Union[str, Path], split: LabelSplit, sequences: Optional[Sequence[str]],
                           out_dir: Union[str, Path, None], tta_cfg: TTAConfig = TTAConfig(),
                           tracker_cfg: TrackerConfig = TrackerConfig(), device: Union[str, torch.device] = "cpu",
                           writer: Optional[Writer] = None, progress: bool = True,
                           labeler_cfg: LabelerConfig = LabelerConfig()) -> Dict[str, float]:
    """Pseudo-label ``sequences`` of ``data_dir`` (the training split directory) and hand each to ``writer``.

    Args:
        model: the trained detector.
        data_dir: directory holding the sequence directories (``<dataset>/train``).
        split: the label split; its kept frames are the GT that passes through (all other frames are predicted).
        sequences: names to label (default: every sequence of ``split``, sorted); each must be in ``split``.
        out_dir: output split directory (``<pseudo_root>/train``), used by the default writer.
        tta_cfg: :class:`~leod_core.pseudo.tta.TTAConfig`.
        tracker_cfg: :class:`~leod_core.pseudo.tracker.TrackerConfig`.
        device: torch device.
        writer: ``writer(seq_name, source_seq_dir, labels, objframe_idx_2_repr_idx)``; default
            :func:`default_writer` ``(out_dir, tta_cfg.downsampled_by_2)``.
        progress: tqdm bar over sequences.
        labeler_cfg: :class:`LabelerConfig` (tracking + writing in a background thread or inline).

    Returns:
        counts: ``sequences``, ``frames`` (written frames), ``pseudo_boxes`` (merged predictions, ignored ones
        included), ``ignored`` (relabelled 1024 by the tracker), ``inpainted``, ``gt_boxes``, ``gt_frames``,
        ``frame_views`` (representations x views streamed), ``predicted_frames`` (streamed representations
        without kept GT), ``frames_without_box`` (of those, the ones left without any box), ``seconds`` and
        ``frame_views_per_s``.
    """
    names = sorted(split.labeled_frames) if sequences is None else list(dict.fromkeys(sequences))
    unknown = [n for n in names if n not in split.labeled_frames]
    if unknown:
        raise ValueError(f"sequences {unknown} are not in the label split")
    if split.sequence_length != tta_cfg.sequence_length:
        log.warning("label split made for sequence length %d, pseudo-labelling streams with L = %d",
                    split.sequence_length, tta_cfg.sequence_length)
    if writer is None:
        if out_dir is None:
            raise ValueError("need out_dir or a writer")
        writer = default_writer(out_dir, tta_cfg.downsampled_by_2)
    kept = {n: split.labeled_frames[n] for n in names}
    totals = dict(sequences=0, frames=0, pseudo_boxes=0, ignored=0, inpainted=0, gt_boxes=0, gt_frames=0,
                  frame_views=0, predicted_frames=0, frames_without_box=0)
    bar = tqdm(total=len(names), unit="seq", desc="pseudo-labelling", disable=not progress)
    log.info("tracking + writing %s", "in a background thread, overlapping inference" if labeler_cfg.background_write
             else "inline, between inference steps")
    background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pseudo-write") \
        if labeler_cfg.background_write else None
    pending: deque[Tuple[MergedSequence, Future]] = deque()

    def account(merged: MergedSequence, res: SequenceResult) -> None:
        totals["sequences"] += 1
        totals["frames"] += len(res.objframe_idx_2_repr_idx)
        totals["pseudo_boxes"] += res.num_pseudo
        totals["ignored"] += res.num_ignored
        totals["inpainted"] += res.num_inpainted
        totals["gt_boxes"] += res.num_gt
        totals["gt_frames"] += res.num_gt_frames
        totals["frame_views"] += merged.num_frame_views
        predicted = predicted_frames(merged)
        totals["predicted_frames"] += predicted
        totals["frames_without_box"] += predicted - len(merged.pseudo)
        bar.update(1)
        bar.set_postfix(boxes=totals["pseudo_boxes"], ignored=totals["ignored"])

    t0 = time.perf_counter()
    try:
        for merged in predict_sequence_views(model, data_dir, names, kept, tta_cfg, device):
            if background is None:
                account(merged, track_and_write(merged, tracker_cfg, writer))
                continue
            pending.append((merged, background.submit(track_and_write, merged, tracker_cfg, writer)))
            while len(pending) > labeler_cfg.max_pending_sequences:
                done, future = pending.popleft()
                account(done, future.result())
        while pending:
            done, future = pending.popleft()
            account(done, future.result())
    finally:
        if background is not None:
            background.shutdown(wait=True, cancel_futures=True)
        bar.close()
    seconds = time.perf_counter() - t0
    out: Dict[str, float] = dict(totals)
    out["seconds"] = seconds
    out["frame_views_per_s"] = totals["frame_views"] / seconds if seconds > 0 else float("nan")
    log.info("pseudo-labelled %d sequences: %d frames, %d pseudo boxes (%d ignored by tracking), %d inpainted, "
             "%d GT boxes; %.1f frame-views/s", totals["sequences"], totals["frames"], totals["pseudo_boxes"],
             totals["ignored"], totals["inpainted"], totals["gt_boxes"], out["frame_views_per_s"])
    log.info("%d of %d predicted frames have no box after the thresholds and the merge (no label is written for "
             "them)", totals["frames_without_box"], totals["predicted_frames"])
    return out


def predicted_frames(merged: MergedSequence) -> int:
    """Representations the model labelled: those streamed, less the kept GT frames (which pass through)."""
    start, stop = merged.stream_range
    return stop - start - sum(1 for f in merged.gt if start <= f < stop)
