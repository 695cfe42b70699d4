"""Quality of a pseudo-labeled dataset: precision and recall against the withheld ground truth, as LEOD's
``val_dst.py`` measures it (``modules/utils/ssod.py: evaluate_label``).

Which frames are evaluated
    The original dataset's labeled frames (its ``objframe_idx_2_repr_idx``) whose ground truth the label split
    withholds: WSOD frames not in the kept list, and every frame of an SSOD unlabeled sequence (kept list
    ``[]``). Kept-GT frames are never evaluated. A withheld frame whose loaded GT is empty is skipped.

Loading (both datasets, LEOD ``SequenceBase`` / ``ObjectLabelFactory``)
    Rows cast to float32, boxes clamped to the sensor frame ``[0, W-1] x [0, H-1]`` (flat boxes dropped); for
    ``downsampled_by_2`` data (Gen4) both are then scaled by 1/2 with LEOD's ``scale_`` (bottom-right clamped
    to ``W/2 - 1``). Both files hold sensor-resolution boxes; IoU is scale-invariant, so the only effect of the
    halving is LEOD's extra clamp. The sensor size is the HDF5 frame size of the original sequence (doubled for
    ``_ds2_nearest`` files), as :class:`~leod_core.data.sequence.SequenceReader` does.

Pseudo boxes of a frame (``val_dst.py: eval_one_seq``)
    The pseudo dataset's frame at the same representation index (absent: no boxes). Before filtering,
    ``val_dst.py`` re-runs ``filter_by_track``: with the documented command (``model=pseudo_labeler``,
    ``min_track_len: 6``), every chunk of ``sequence_length`` representations (320 Gen1, 128 Gen4; chunks start
    at representation 0, ``start_from_zero``) is tracked **forward only** (``EventSeqData._track``, no
    inpainting) over all its boxes — GT, pseudo and class-1024 rows alike — and boxes of short finished pseudo
    tracklets are relabeled 1024. ``QualityConfig.refilter_min_track_len = 0``
    skips this step. Then ``filter_bbox``:
    keep ``obj > obj_thresh[c]`` and ``cls > cls_thresh[c]`` (strict; per class; classes outside
    ``0..C-1`` never pass) and ``class_id != 1024``. A withheld frame's pseudo frame must hold pseudo rows only
    (``t == 0``); LEOD asserts it, here a :class:`ValueError` is raised.

Metrics
    Per frame and per class, see :mod:`leod_core.pseudo.quality_metrics`.

Aggregation
    ``evaluate_label`` averages over the frames of one streamed chunk, and ``val_dst.py`` averages the chunks
    with ``AverageMeter.update(v, n=num_{class})`` (the chunk's number of evaluated frames for that class).
    That weighted mean of means is exactly the mean over all evaluated frames of the class, pooled over the
    dataset, which is what is computed here (chunking matters only for the track re-filter).
    ``gt_num`` / ``pred_num`` follow LEOD's ``gt_num_{cls}`` / ``pred_num_{cls}``: the mean number of GT /
    kept pseudo boxes of the class per evaluated frame of the class (same weighting); the raw totals are
    ``gt_total`` / ``pred_total``.
    LEOD logs per class only (it has no "all" aggregate of precision/recall); the overall ``precision`` /
    ``recall`` here are the unweighted mean over the classes that have at least one evaluated frame.

JSON layout (:func:`write_quality`)::

    {"precision": {"0.25": p, "0.5": p, "0.75": p}, "recall": {...},
     "per_class": {"car": {"precision": {...}, "recall": {...}, "gt_num": g, "pred_num": m,
                           "gt_total": G, "pred_total": M, "num_frames": n}, ...},
     "num_frames": F, "num_sequences": S, "config": {...}}

``F`` = evaluated frames (withheld GT frames with at least one loaded GT box), ``S`` = sequences with at
least one evaluated frame. A class without evaluated frames has ``null`` precision/recall/``gt_num``/``pred_num``;
without any evaluated frame the overall values are ``null`` too.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from leod_core.data import label_tensors as lt
from leod_core.data.atomic import write_text_atomic
from leod_core.data.cameras import DEFAULT_CAMERA, get_camera, reference_camera
from leod_core.data.formats import IGNORE_CLASS_ID, FormatError, PathLike, SequencePaths, read_labels
from leod_core.data.sequence import SequenceReader
from leod_core.data.splits import LabelSplit
from leod_core.pseudo.quality_metrics import bboxes_iou_cxcywh  # noqa: F401 (imported from here by users)
from leod_core.pseudo.quality_metrics import ClassAccumulator, centre_boxes, evaluate_one_class, score_filter
from leod_core.pseudo.tracker import TrackerConfig, filter_and_inpaint

log = logging.getLogger(__name__)

TRAIN_DIR = "train"
#: LEOD's threshold set at the final check of ``predict.py`` (``obj_thresh=0.01 cls_thresh=0.01``).
DEFAULT_SCORE_THRESH = 0.01


@dataclass(frozen=True)
class QualityConfig:
    """Settings of the pseudo-label quality evaluation (LEOD ``val_dst.py`` as run by ``predict.py``).

    Attributes:
        iou_thresholds: IoU thresholds (strict ``IoU > thr``).
        obj_thresh, cls_thresh: per-class score thresholds (strict ``>``), in ``class_names`` order; ``None``
            (or a single float) means that value for every class (default 0.01).
        class_names: class names by class id.
        refilter_min_track_len: ``model.pseudo_label.min_track_len`` of ``val_dst.py``'s forward-only track
            re-filter (LEOD's ``pseudo_labeler`` model config: 6); ``0`` disables it. The workflow passes the
            experiment's tracker ``min_track_len`` unless ``label_quality.refilter_min_track_len`` is set, as
            LEOD reads one key for both.
        sequence_length: chunk length of that re-filter; ``None``: LEOD's value for the resolution, the
            ``quality_sequence_length`` of :func:`~leod_core.data.cameras.reference_camera` (``val_dst.py``
            picks Gen1's or Gen4's; Gen4 taken to be the ``downsampled_by_2`` case).
    """

    iou_thresholds: tuple[float, ...] = (0.25, 0.5, 0.75)
    obj_thresh: tuple[float, ...] | float | None = None
    cls_thresh: tuple[float, ...] | float | None = None
    class_names: tuple[str, ...] = get_camera(DEFAULT_CAMERA).classes
    refilter_min_track_len: int = 6
    sequence_length: int | None = None

    def __post_init__(self) -> None:
        names = tuple(self.class_names)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"class_names must be non-empty and unique, got {names}")
        object.__setattr__(self, "class_names", names)
        for key in ("obj_thresh", "cls_thresh"):
            value = getattr(self, key)
            if value is None:
                value = DEFAULT_SCORE_THRESH
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (float(value),) * len(names)
            value = tuple(float(v) for v in value)
            if len(value) != len(names):
                raise ValueError(f"{key} has {len(value)} values for {len(names)} classes {names}")
            object.__setattr__(self, key, value)
        thrs = tuple(float(t) for t in self.iou_thresholds)
        if not thrs or any(not 0.0 <= t < 1.0 for t in thrs):
            raise ValueError(f"iou_thresholds must be non-empty values in [0, 1), got {self.iou_thresholds}")
        object.__setattr__(self, "iou_thresholds", thrs)
        if self.refilter_min_track_len < 0:
            raise ValueError(f"refilter_min_track_len must be >= 0, got {self.refilter_min_track_len}")
        if self.sequence_length is not None and self.sequence_length < 1:
            raise ValueError(f"sequence_length must be positive, got {self.sequence_length}")

    @classmethod
    def for_dataset(cls, name: str, **overrides: Any) -> "QualityConfig":
        """LEOD's settings for camera ``name`` (class names and chunk length from the camera registry); an
        unknown camera raises ``ValueError`` listing the known ones."""
        camera = get_camera(name)
        return cls(**{"class_names": camera.classes, "sequence_length": camera.quality_sequence_length, **overrides})

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def chunk_length(self, downsampled_by_2: bool) -> int:
        if self.sequence_length is not None:
            return self.sequence_length
        return reference_camera(downsampled_by_2).quality_sequence_length

    def threshold_keys(self) -> list[str]:
        return [threshold_key(t) for t in self.iou_thresholds]


def threshold_key(thr: float) -> str:
    """JSON key of an IoU threshold: ``0.25 -> "0.25"``, ``0.5 -> "0.5"``."""
    return format(float(thr), "g")


# --------------------------------------------------------------------------------------------- loading
def _read_repr_indices(path: Path) -> np.ndarray:
    """``objframe_idx_2_repr_idx.npy`` of a pseudo sequence: int [F] sorted unique, possibly empty."""
    if not path.is_file():
        raise FormatError(path, "file is missing")
    try:
        idx = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FormatError(path, f"not a readable .npy file ({err})") from err
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise FormatError(path, f"expected int [F] indices, got {idx.dtype} {idx.shape}")
    idx = idx.astype(np.int64)
    if idx.size and (idx[0] < 0 or np.any(np.diff(idx) <= 0)):
        raise FormatError(path, "representation indices are not sorted, unique and non-negative")
    return idx


def load_pseudo_frames(seq_dir: Path, resolution_hw: tuple[int, int],
                       downsampled_by_2: bool) -> dict[int, Tensor]:
    """Labels ``[N, 8]`` of every frame of a pseudo sequence by representation index, loaded as LEOD's
    ``SequenceBase`` loads them (clamped to the sensor frame, halved for ``downsampled_by_2``)."""
    paths = SequencePaths(seq_dir)
    repr_idx = _read_repr_indices(paths.objframe_idx_2_repr_idx)
    seq_labels = read_labels(paths.labels)
    if seq_labels.num_frames != len(repr_idx):
        raise FormatError(paths.labels, f"{seq_labels.num_frames} labeled frames, but objframe_idx_2_repr_idx "
                                        f"has {len(repr_idx)}")
    if len(repr_idx) == 0:
        return {}
    starts = seq_labels.objframe_idx_2_label_idx
    counts = np.diff(np.append(starts, len(seq_labels.labels)))
    frame_of_row = torch.from_numpy(np.repeat(np.arange(len(repr_idx)), counts).astype(np.float32))
    rows = torch.cat([lt.from_structured(seq_labels.labels), frame_of_row[:, None]], dim=1)
    rows = lt.clamp_to_frame(rows, resolution_hw)
    if downsampled_by_2:
        rows = lt.scale(rows, 0.5, resolution_hw)[0]
    frame_ids = rows[:, -1].long().numpy()
    bounds = np.searchsorted(frame_ids, np.arange(len(repr_idx) + 1), side="left")
    rows = rows[:, :lt.NUM_FIELDS].contiguous()
    return {int(r): rows[bounds[i]:bounds[i + 1]].clone() for i, r in enumerate(repr_idx)}


def track_refilter(frames: dict[int, Tensor], num_reprs: int, chunk_length: int, img_hw: tuple[float, float],
                   cfg: QualityConfig) -> dict[int, Tensor]:
    """``val_dst.py: filter_by_track``: per chunk ``[k L, (k+1) L)``, one forward tracking pass over the
    chunk's non-empty frames; boxes of short finished pseudo tracklets get class 1024 (new tensors)."""
    if cfg.refilter_min_track_len <= 0:
        return frames
    # LEOD's LinearTracker defaults (iou 0.45, min_conf 0.55, q 0.9), forward only, no inpainting
    tracker = TrackerConfig(min_track_len=cfg.refilter_min_track_len, inpaint=False, track_method="forward",
                            ignore_label=IGNORE_CLASS_ID)
    out = dict(frames)
    for start in range(0, num_reprs, chunk_length):
        reprs = [r for r in sorted(frames) if start <= r < start + chunk_length and len(frames[r])]
        if not reprs:
            continue
        labels = torch.cat([frames[r] for r in reprs])
        removed = filter_and_inpaint(np.asarray(reprs, dtype=np.int64) - start,
                                     np.asarray([len(frames[r]) for r in reprs], dtype=np.int64),
                                     centre_boxes(labels).numpy(), labels[:, lt.CLASS_ID].numpy().astype(np.int64),
                                     (labels[:, lt.T] != 0).numpy(), img_hw, tracker)[0]
        offset = 0
        for r in reprs:
            n = len(frames[r])
            mask = torch.from_numpy(removed[offset:offset + n])
            if mask.any():
                relabeled = frames[r].clone()
                relabeled[mask, lt.CLASS_ID] = IGNORE_CLASS_ID
                out[r] = relabeled
            offset += n
    return out


# ------------------------------------------------------------------------------------------ evaluation
def _withheld_frames(reader: SequenceReader) -> list[int]:
    kept = set(reader.kept_frames)
    return [i for i in range(reader.num_frames) if i not in kept]


def evaluate_pseudo_labels(pseudo_root: PathLike, source_root: PathLike, split: LabelSplit, cfg: QualityConfig,
                           downsampled_by_2: bool = False) -> dict:
    """Precision/recall of the pseudo dataset ``{pseudo_root}/train`` against the GT that ``split`` withholds
    from the original dataset ``{source_root}/train`` (see the module docstring; returns the JSON layout)."""
    pseudo_train = Path(pseudo_root) / TRAIN_DIR
    source_train = Path(source_root) / TRAIN_DIR
    if not source_train.is_dir():
        raise ValueError(f"original training directory {source_train} does not exist")
    if not pseudo_train.is_dir():
        raise ValueError(f"pseudo training directory {pseudo_train} does not exist")
    thresholds = cfg.iou_thresholds
    acc = [ClassAccumulator(len(thresholds)) for _ in cfg.class_names]
    num_frames = num_sequences = 0
    missing_pseudo = []
    chunk_length = cfg.chunk_length(downsampled_by_2)
    for name in sorted(split.labeled_frames):
        source_dir = source_train / name
        if not source_dir.is_dir():
            raise ValueError(f"sequence {name} of the label split is missing from {source_train}")
        reader = SequenceReader(source_dir, downsampled_by_2=downsampled_by_2, kept_frames=split.labeled_frames[name])
        withheld = _withheld_frames(reader)
        if not withheld:
            continue
        pseudo_dir = pseudo_train / name
        if pseudo_dir.is_dir():
            pseudo = load_pseudo_frames(pseudo_dir, reader.resolution_hw, downsampled_by_2)
        else:
            missing_pseudo.append(name)
            pseudo = {}
        img_hw = tuple(s / 2 for s in reader.resolution_hw) if downsampled_by_2 else reader.resolution_hw
        pseudo = track_refilter(pseudo, reader.num_reprs, chunk_length, img_hw, cfg)
        seq_frames = 0
        for objframe in withheld:
            gt = reader.frame_labels(objframe)
            if len(gt) == 0:
                continue
            repr_idx = int(reader.objframe_idx_2_repr_idx[objframe])
            pse = pseudo.get(repr_idx, lt.empty())
            if bool((pse[:, lt.T] != 0).any()):
                raise ValueError(f"{pseudo_dir}: representation {repr_idx} has ground-truth rows (t != 0) although "
                                 f"the label split withholds its GT; was the pseudo dataset made with this split?")
            pse = score_filter(pse, cfg.obj_thresh, cfg.cls_thresh)
            gt_boxes, pse_boxes = centre_boxes(gt), centre_boxes(pse)
            gt_cls, pse_cls = gt[:, lt.CLASS_ID], pse[:, lt.CLASS_ID]
            for c in range(cfg.num_classes):
                gt_c = gt_boxes[gt_cls == c]
                if len(gt_c) == 0:
                    continue
                pse_c = pse_boxes[pse_cls == c]
                recall, precision = evaluate_one_class(gt_c, pse_c, thresholds)
                acc[c].add(recall, precision, len(gt_c), len(pse_c))
            seq_frames += 1
        num_frames += seq_frames
        num_sequences += seq_frames > 0
    if missing_pseudo:
        log.warning("%d sequences with withheld GT are absent from %s (evaluated as without pseudo labels): %s%s",
                    len(missing_pseudo), pseudo_train, ", ".join(missing_pseudo[:5]),
                    " ..." if len(missing_pseudo) > 5 else "")
    result = _result(acc, cfg, num_frames, num_sequences, split, downsampled_by_2)
    log_summary(result)
    return result


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _result(acc: list[ClassAccumulator], cfg: QualityConfig, num_frames: int, num_sequences: int,
            split: LabelSplit, downsampled_by_2: bool) -> dict:
    keys = cfg.threshold_keys()
    per_class = {}
    for name, a in zip(cfg.class_names, acc):
        n = a.num_frames
        per_class[name] = {
            "precision": {k: (float(v / n) if n else None) for k, v in zip(keys, a.precision)},
            "recall": {k: (float(v / n) if n else None) for k, v in zip(keys, a.recall)},
            "gt_num": a.gt_total / n if n else None,
            "pred_num": a.pred_total / n if n else None,
            "gt_total": a.gt_total,
            "pred_total": a.pred_total,
            "num_frames": n,
        }
    evaluated = [c for c in per_class.values() if c["num_frames"]]
    overall = {metric: {k: _mean([c[metric][k] for c in evaluated]) for k in keys}
               for metric in ("precision", "recall")}
    return {
        **overall,
        "per_class": per_class,
        "num_frames": num_frames,
        "num_sequences": num_sequences,
        "config": {
            "iou_thresholds": list(cfg.iou_thresholds), "obj_thresh": list(cfg.obj_thresh),
            "cls_thresh": list(cfg.cls_thresh), "class_names": list(cfg.class_names),
            "refilter_min_track_len": cfg.refilter_min_track_len, "sequence_length": cfg.chunk_length(downsampled_by_2),
            "downsampled_by_2": downsampled_by_2, "setting": split.setting, "ratio": split.ratio,
        },
    }


def _fmt(value: float | None) -> str:
    return "  -   " if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def format_summary(result: dict) -> str:
    """Readable table of a quality result."""
    keys = list(result["precision"])
    head = " ".join(f"P@{k:<5}" for k in keys) + " " + " ".join(f"R@{k:<5}" for k in keys)
    lines = [f"pseudo-label quality on {result['num_frames']} withheld-GT frames of {result['num_sequences']} "
             f"sequences (precision/recall per frame, mean over frames):",
             f"  {'class':<12} {head}  frames  gt/frame  pred/frame"]
    for name, c in result["per_class"].items():
        vals = " ".join(f"{_fmt(c['precision'][k]):<7}" for k in keys) + " " + \
            " ".join(f"{_fmt(c['recall'][k]):<7}" for k in keys)
        lines.append(f"  {name:<12} {vals} {c['num_frames']:>7}  {_fmt(c['gt_num']):>8}  {_fmt(c['pred_num']):>10}")
    vals = " ".join(f"{_fmt(result['precision'][k]):<7}" for k in keys) + " " + \
        " ".join(f"{_fmt(result['recall'][k]):<7}" for k in keys)
    lines.append(f"  {'mean(class)':<12} {vals}")
    return "\n".join(lines)


def log_summary(result: dict) -> None:
    log.info("%s", format_summary(result))


def write_quality(path: PathLike, result: dict) -> None:
    """Write a quality result as JSON atomically."""
    write_text_atomic(path, json.dumps(result, indent=2, allow_nan=False) + "\n")
