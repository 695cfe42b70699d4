"""LEOD's pseudo-labelling inference: four test-time-augmentation views per sequence, per-view filtering and the
per-frame merge of the views (``modules/pseudo_labeler.py``: ``PseudoLabeler`` + ``EventSeqData``,
``modules/utils/ssod.py``: ``pred2label`` / ``filter_pred_boxes``).

Views (LEOD ``tta.enable`` with ``hflip`` and ``tflip``), in the order used everywhere here:
``id``, ``hflip``, ``tflip``, ``tflip_hflip``.

* **tflip**: the whole sequence is streamed backwards, from its last representation to the stream start, with
  a fresh recurrent state, and every representation's channels are reversed (``x.flip(0)``: time bins reversed
  and polarities swapped; LEOD ``SequenceBase.time_flip_data``). A prediction on reversed representation ``j``
  belongs to frame ``j + tflip_offset`` (Gen1 -1, Gen4 -2; LEOD ``EventSeqData.update``); frames outside
  ``[0, num_reprs)`` are dropped (LEOD ``_update`` / ``_aggregate_results``).
* **hflip**: the frame is mirrored along its width *before* the bottom/right zero padding (LEOD
  ``PseudoLabeler.get_data_from_batch``), and boxes are mirrored back with ``x' = W - 1 - x - w``
  (``ObjectLabels.flip_lr_``) in the pixels of the read frame.
* Streams start at ``max(first_labeled_repr - L + 1, 0)`` (LEOD's ``start_from_zero=False``) and run to the
  last representation; the time-reversed stream covers the same representations backwards. (LEOD cuts it into
  chunks of ``L`` from the end — ``time_flip_start/stop_indices`` — and carries the state across chunks, so
  the chunking changes nothing but where padding steps fall; here streams run without padding.)

Per view and frame (LEOD ``_predict_step_impl`` -> ``pred2label`` -> ``filter_pred_boxes``):

1. frames whose ground truth is kept (the label split) are never predicted; their GT passes through unchanged
   (LEOD ``_get_pred_mask``: ``skip_mask = has_gt``; the ``skip_first_t`` step is overwritten there, so
   nothing else is skipped, and frames with *withheld* GT are predicted);
2. YOLOX postprocess: ``obj * cls >= confidence_threshold`` (0.01), class-wise NMS at ``nms_threshold``
   (0.45) ranked by ``obj * cls``;
3. per-class thresholds, strict: ``obj > obj_thresh[c]`` and ``cls > cls_thresh[c]`` (``filter_w_thresh``;
   a class id without a threshold is dropped);
4. clamp ``x1, y1, x2, y2`` into ``[0, W-1] x [0, H-1]`` of the read (down-sampled) frame and drop flat boxes
   (``_crop_to_fov_filter``), drop ``w < 5`` or ``h < 5`` (``_conservative_bbox_filter``, at input
   resolution) and ``w > (9 W) // 10`` (``_faulty_huge_bbox_filter``);
5. rows ``[t=0, x, y, w, h, class_id, cls_conf, obj_conf]`` (top-left corner); hflip views mirrored back;
   scaled by 2 to sensor pixels for ``downsampled_by_2`` data (``ObjectLabels.scale_``: bottom-right corner
   clamped to the doubled canvas, flat boxes dropped).

Merge (LEOD ``tta_postprocess``, run when more than one view is active): per frame without GT, the rows of all
views are concatenated (view order above), rows with ``obj * cls >= confidence_threshold`` go through class-wise
NMS at ``nms_threshold`` ranked by ``obj * cls``, and the survivors keep their own scores and coordinates (no box
fusion). Frames with GT are returned unchanged.

Two execution paths give the same boxes:

* ``batched=True``: all views of ``batch_size`` sequences run as one batch. The forward and the time-reversed
  stream of a sequence occupy two adjacent slots; with hflip the mirrored copy of every slot forms the second
  half of the batch, so 4 views of ``B`` sequences are a ``4B``-wide batch per time step. The FPN + head run
  once per step on the selected (predicted) cells of all views. A slot takes the next stream as soon as its
  own ends (its state is zeroed then); slots never interact (eval-mode BatchNorm, per-sample attention).
* ``batched=False``: the reference — one view of one sequence at a time, batch 1, head per frame.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from leod_core.data import label_tensors as lt
from leod_core.data.formats import (PSEUDO_BBOX_DTYPE, FormatError, SequencePaths, open_event_repr, read_labels,
                                    read_objframe_idx_2_repr_idx)
from leod_core.models.inference import AUTOCAST_DTYPES, autocast_context
from leod_core.models.loss import expand_class_thresholds
from leod_core.models.postprocess import batched_nms, postprocess

log = logging.getLogger(__name__)

Thresholds = Union[float, Tuple[float, ...]]


@dataclass(frozen=True)
class View:
    """One test-time-augmentation view."""

    name: str
    tflip: bool
    hflip: bool


ALL_VIEWS = (View("id", False, False), View("hflip", False, True), View("tflip", True, False),
             View("tflip_hflip", True, True))
_VIEW_BY_FLAGS = {(v.tflip, v.hflip): v for v in ALL_VIEWS}


@dataclass(frozen=True)
class TTAConfig:
    """Settings of LEOD's pseudo-labelling inference (defaults: LEOD's ``predict.yaml`` / ``pseudo_labeler.yaml``
    for Gen1; :meth:`gen4` for 1Mpx).

    Attributes:
        hflip, tflip: the horizontal-flip and time-flip views (``tta.hflip``, ``tta.tflip``; both on gives 4 views).
        tflip_offset: a prediction on reversed representation ``j`` is attributed to frame ``j + tflip_offset``
            (Gen1 -1, Gen4 -2).
        confidence_threshold: YOLOX postprocess and view merge keep ``obj * cls >= this`` (0.01 in LEOD's
            pseudo-labelling command).
        nms_threshold: IoU of the class-wise NMS, per view and in the merge (0.45).
        obj_thresh, cls_thresh: per-class (strict ``>``) thresholds of ``pred2label``; a 2-tuple is Gen1's
            ``(car, ped)`` order, expanded ``[a, b] -> [b, b, a]`` for 3 classes
            (:func:`~leod_core.models.loss.expand_class_thresholds`); a float applies to every class.
        min_box_side: minimum predicted width and height in read-frame pixels (``_conservative_bbox_filter``).
        max_width_frac: predicted boxes wider than ``floor(max_width_frac * W)`` are dropped (LEOD
            ``(9 * W) // 10``; computed exactly on the decimal value).
        batch_size: sequences run side by side (the model batch is ``batch_size * number of views``; LEOD's
            ``predict.yaml`` batch 16 of forward/reversed streams, doubled by hflip, is ``batch_size=8`` here).
        sequence_length: ``L``; streams start at ``max(first_labeled_repr - L + 1, 0)`` (Gen1 21, Gen4 10) and
            representations are read ``L`` at a time.
        autocast_dtype: None (float32) or ``'bfloat16'``/``'bf16'``/``'float16'``/``'fp16'`` for
            ``torch.autocast``.
        downsampled_by_2: read ``event_representations_ds2_nearest.h5`` and scale boxes by 2 (Gen4).
        start_from_zero: stream from representation 0 instead (not LEOD's pseudo-labelling setting).
        batched: the batched path (True) or the one-view-at-a-time reference path (False).
        prefilter_scores: before the per-view NMS, drop candidates whose ``obj * cls`` is below
            :meth:`min_passing_score` (no box that passes the per-class thresholds scores lower). Exact: greedy NMS
            only lets a box suppress lower-ranked ones, so a dropped candidate could neither be kept nor remove a
            kept box; the rows are unchanged and the NMS runs on far fewer candidates. False: NMS over every
            candidate with ``obj * cls >= confidence_threshold`` (LEOD's order of work).
        prefetch_reads: read the next ``sequence_length`` representations of every stream in a background thread
            while the model runs (same data, same order; each open stream then holds two chunks, e.g. 2 x 31 MB
            for Gen1 with ``L = 21``).
    """

    hflip: bool = True
    tflip: bool = True
    tflip_offset: int = -1
    confidence_threshold: float = 0.01
    nms_threshold: float = 0.45
    obj_thresh: Thresholds = (0.6, 0.3)
    cls_thresh: Thresholds = (0.6, 0.3)
    min_box_side: float = 5.0
    max_width_frac: float = 0.9
    batch_size: int = 8
    sequence_length: int = 21
    autocast_dtype: Optional[str] = None
    downsampled_by_2: bool = False
    start_from_zero: bool = False
    batched: bool = True
    prefilter_scores: bool = True
    prefetch_reads: bool = True

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.sequence_length < 1:
            raise ValueError(f"batch_size and sequence_length must be >= 1, got {self.batch_size}, "
                             f"{self.sequence_length}")
        if not 0.0 <= self.confidence_threshold <= 1.0 or not 0.0 <= self.nms_threshold <= 1.0:
            raise ValueError(f"confidence/nms thresholds must lie in [0, 1], got {self.confidence_threshold}, "
                             f"{self.nms_threshold}")
        if not 0.0 < self.max_width_frac <= 1.0 or self.min_box_side < 0:
            raise ValueError(f"need 0 < max_width_frac <= 1 and min_box_side >= 0, got {self.max_width_frac}, "
                             f"{self.min_box_side}")
        if self.autocast_dtype is not None and self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast_dtype must be None or one of {sorted(AUTOCAST_DTYPES)}, "
                             f"got {self.autocast_dtype!r}")
        for name in ("obj_thresh", "cls_thresh"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @classmethod
    def gen1(cls, **overrides) -> "TTAConfig":
        """LEOD's Gen1 settings (the defaults)."""
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def gen4(cls, **overrides) -> "TTAConfig":
        """LEOD's Gen4 (1Mpx) settings: ``tflip_offset=-2``, ``_ds2_nearest`` frames, ``L = 10``."""
        return dataclasses.replace(cls(tflip_offset=-2, downsampled_by_2=True, sequence_length=10), **overrides)

    @property
    def views(self) -> Tuple[View, ...]:
        """Active views, in the order ``id, hflip, tflip, tflip_hflip``."""
        return tuple(v for v in ALL_VIEWS if (self.tflip or not v.tflip) and (self.hflip or not v.hflip))

    @property
    def merges_views(self) -> bool:
        """LEOD merges (``tta_postprocess``) whenever an augmented view was used."""
        return self.hflip or self.tflip

    @property
    def torch_autocast_dtype(self) -> Optional[torch.dtype]:
        return None if self.autocast_dtype is None else AUTOCAST_DTYPES[self.autocast_dtype]

    @property
    def precision(self) -> str:
        return "float32" if self.autocast_dtype is None else f"{self.torch_autocast_dtype} autocast"

    def max_box_width(self, frame_width: int) -> int:
        """``floor(max_width_frac * W)`` exactly (LEOD: ``(9 * W) // 10``)."""
        return math.floor(Fraction(repr(float(self.max_width_frac))) * int(frame_width))

    def min_passing_score(self, num_classes: int) -> float:
        """Smallest float32 ``obj * cls`` that a box passing the per-class thresholds can have:
        ``min_c fl32(obj_thresh_c) * fl32(cls_thresh_c)`` in float32 (``obj > a`` and ``cls > b`` give
        ``obj * cls > a * b`` exactly, and float32 rounding is monotonic)."""
        obj, cls = self.class_thresholds(num_classes)
        products = torch.tensor(obj, dtype=torch.float32) * torch.tensor(cls, dtype=torch.float32)
        return float(products.min())

    def score_floor(self, num_classes: int) -> float:
        """Score threshold of the per-view postprocess: ``confidence_threshold``, raised to
        :meth:`min_passing_score` with ``prefilter_scores``."""
        if not self.prefilter_scores:
            return self.confidence_threshold
        return max(self.confidence_threshold, self.min_passing_score(num_classes))

    def class_thresholds(self, num_classes: int) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(objectness, class) thresholds, one per class."""
        obj = expand_class_thresholds(self.obj_thresh, num_classes)
        cls = expand_class_thresholds(self.cls_thresh, num_classes)
        if obj is None or cls is None:
            raise ValueError("obj_thresh and cls_thresh must not be empty")
        return obj, cls


@dataclass
class MergedSequence:
    """Pseudo-labelling inference result of one sequence.

    Attributes:
        name: sequence directory name.
        seq_dir: the source sequence directory.
        num_reprs: number of representations.
        frame_hw: (H, W) of the frames the model read.
        sensor_hw: (H, W) of the box coordinates (``2 * frame_hw`` for ``downsampled_by_2``).
        stream_range: [start, stop) of the streamed representations (both directions).
        pseudo: representation index -> merged pseudo boxes (``PSEUDO_BBOX_DTYPE``, ``t == 0``, sensor pixels,
            top-left ``x, y, w, h``, ``class_id``, ``class_confidence`` = class score, ``objectness``), frames
            without kept GT that hold >= 1 box, rows by decreasing ``obj * cls`` when views were merged.
        gt: representation index -> kept ground truth (``PSEUDO_BBOX_DTYPE``; the file's ``t``, boxes,
            ``class_id`` and ``class_confidence`` unchanged, ``objectness`` = the file's objectness if it has one,
            else ``class_confidence``), frames with >= 1 box.
        views: with ``keep_views=True``, view name -> representation index -> that view's rows (before the merge).
        num_frame_views: representations streamed times views (model steps spent on this sequence).
    """

    name: str
    seq_dir: Path
    num_reprs: int
    frame_hw: Tuple[int, int]
    sensor_hw: Tuple[int, int]
    stream_range: Tuple[int, int]
    pseudo: Dict[int, np.ndarray]
    gt: Dict[int, np.ndarray]
    views: Optional[Dict[str, Dict[int, np.ndarray]]] = None
    num_frame_views: int = 0

    @property
    def frames(self) -> List[int]:
        """Sorted representation indices holding any box (GT or pseudo)."""
        return sorted(set(self.pseudo) | set(self.gt))

    @property
    def num_pseudo_boxes(self) -> int:
        return int(sum(len(v) for v in self.pseudo.values()))

    @property
    def num_gt_boxes(self) -> int:
        return int(sum(len(v) for v in self.gt.values()))


# ---------------------------------------------------------------------------------------- box helpers
def rows_to_structured(rows: Tensor) -> np.ndarray:
    """``PSEUDO_BBOX_DTYPE`` array of label rows ``Tensor[N, >=8]`` ``[t, x, y, w, h, class_id, cls, obj]``."""
    r = rows.detach().cpu().numpy()
    out = np.zeros(len(r), dtype=PSEUDO_BBOX_DTYPE)
    for k, name in enumerate(lt.FIELDS):
        out[name] = r[:, k]
    return out


def structured_to_rows(arr: np.ndarray) -> Tensor:
    """Inverse of :func:`rows_to_structured` (float32 ``Tensor[N, 8]``)."""
    return lt.from_structured(arr)


def filter_view_predictions(dets: Sequence[Tensor], hflips: Sequence[bool], frame_hw: Tuple[int, int],
                            obj_thresh: Sequence[float], cls_thresh: Sequence[float], cfg: TTAConfig,
                            scale: float = 1.0) -> List[Tensor]:
    """LEOD's per-view post-processing of postprocessed detections, vectorised over many frames.

    Args:
        dets: per frame ``Tensor[N_i, 7]`` ``(x1, y1, x2, y2, obj, cls, class_id)`` in read-frame pixels.
        hflips: per frame, whether it comes from a horizontally flipped view (mirrored back here).
        frame_hw: (H, W) of the read frame (the clamp region and the flip width).
        obj_thresh, cls_thresh: one threshold per class (strict ``>``).
        cfg: ``min_box_side``, ``max_width_frac``.
        scale: 2 for ``downsampled_by_2`` data (sensor pixels out), else 1.

    Returns:
        per frame ``Tensor[M_i, 8]`` label rows ``[t=0, x, y, w, h, class_id, cls_conf, obj_conf]`` (float32, on
        the input device), in the input order of the kept detections.
    """
    if len(dets) != len(hflips):
        raise ValueError(f"{len(dets)} detection tensors but {len(hflips)} flip flags")
    if not dets:
        return []
    height, width = frame_hw
    counts = [int(d.shape[0]) for d in dets]
    det = torch.cat([d.reshape(-1, 7).float() for d in dets])
    device = det.device
    owner = torch.repeat_interleave(torch.arange(len(dets), device=device),
                                    torch.as_tensor(counts, device=device))
    if det.shape[0] == 0:
        return [det.new_zeros((0, lt.NUM_FIELDS)) for _ in dets]
    num_classes = len(obj_thresh)
    cid = det[:, 6].long()
    valid = (cid >= 0) & (cid < num_classes)
    safe = cid.clamp(0, num_classes - 1)
    t_obj = torch.as_tensor(obj_thresh, dtype=torch.float32, device=device)[safe]
    t_cls = torch.as_tensor(cls_thresh, dtype=torch.float32, device=device)[safe]
    keep = valid & (det[:, 4] > t_obj) & (det[:, 5] > t_cls)
    x1 = det[:, 0].clamp(0.0, width - 1.0)
    y1 = det[:, 1].clamp(0.0, height - 1.0)
    x2 = det[:, 2].clamp(0.0, width - 1.0)
    y2 = det[:, 3].clamp(0.0, height - 1.0)
    w, h = x2 - x1, y2 - y1
    keep &= (w > 0) & (h > 0)
    keep &= (w >= cfg.min_box_side) & (h >= cfg.min_box_side)
    keep &= w <= cfg.max_box_width(width)
    rows = torch.stack([torch.zeros_like(x1), x1, y1, w, h, det[:, 6], det[:, 5], det[:, 4],
                        owner.to(torch.float32)], dim=1)[keep]
    flip = torch.as_tensor(list(hflips), dtype=torch.bool, device=device)[rows[:, -1].long()]
    if bool(flip.any()):
        rows[flip] = lt.flip_lr(rows[flip], width)
    if scale != 1.0:
        rows = lt.scale(rows, scale, (height, width))[0]
    own = rows[:, -1].long()
    rows = rows[:, :lt.NUM_FIELDS]
    order = torch.argsort(own, stable=True)
    per = torch.bincount(own, minlength=len(dets)).tolist()
    return list(torch.split(rows[order], per))


def merge_views(rows: Tensor, confidence_threshold: float, nms_threshold: float) -> Tensor:
    """LEOD ``tta_postprocess`` on one frame's concatenated view rows ``Tensor[N, 8]`` (pseudo labels only):
    keep ``obj * cls >= confidence_threshold``, class-wise NMS ranked by ``obj * cls``; survivors keep their own
    rows, by decreasing score."""
    if rows.shape[0] == 0:
        return rows
    score = rows[:, lt.OBJECTNESS] * rows[:, lt.CLASS_CONFIDENCE]
    m = score >= confidence_threshold
    rows, score = rows[m], score[m]
    if rows.shape[0] == 0:
        return rows
    xyxy = torch.stack([rows[:, lt.X], rows[:, lt.Y], rows[:, lt.X] + rows[:, lt.W],
                        rows[:, lt.Y] + rows[:, lt.H]], dim=1)
    keep = batched_nms(xyxy, score, rows[:, lt.CLASS_ID].long(), nms_threshold)
    return rows[keep]


def _gt_rows(labels: np.ndarray) -> np.ndarray:
    out = np.zeros(len(labels), dtype=PSEUDO_BBOX_DTYPE)
    names = labels.dtype.names
    for name in ("t", "x", "y", "w", "h", "class_id", "class_confidence"):
        out[name] = labels[name]
    out["objectness"] = labels["objectness"] if "objectness" in names else labels["class_confidence"]
    return out


# ------------------------------------------------------------------------------------------ sequences
@dataclass
class _Seq:
    """One sequence: paths, GT, and the per-view predictions gathered so far."""

    name: str
    root: Path
    ev_file: Path
    num_reprs: int
    frame_hw: Tuple[int, int]
    start: int
    gt: Dict[int, np.ndarray]
    views: Dict[str, Dict[int, Tensor]] = field(default_factory=dict)
    open_streams: int = 0
    frame_views: int = 0

    @property
    def length(self) -> int:
        return self.num_reprs - self.start

    def add(self, view: str, frame: int, rows: Tensor) -> None:
        per_view = self.views.setdefault(view, {})
        if frame in per_view:
            raise RuntimeError(f"{self.name}: view {view} predicted frame {frame} twice")
        per_view[frame] = rows.detach().to("cpu", torch.float32)

    def predicts(self, frame: int) -> bool:
        return 0 <= frame < self.num_reprs and frame not in self.gt


def _open_seq(root: Path, kept: Sequence[int], cfg: TTAConfig) -> _Seq:
    paths = SequencePaths(root)
    ev_file = paths.ev_repr_file(cfg.downsampled_by_2)
    with open_event_repr(ev_file) as h5:
        num_reprs, _, height, width = h5["data"].shape
    o2r = read_objframe_idx_2_repr_idx(paths.objframe_idx_2_repr_idx, int(num_reprs))
    labels = read_labels(paths.labels)
    if labels.num_frames != len(o2r):
        raise FormatError(paths.labels, f"{labels.num_frames} labeled frames, but objframe_idx_2_repr_idx has "
                                        f"{len(o2r)}")
    kept = sorted(int(i) for i in kept)
    if any(i < 0 or i >= len(o2r) for i in kept):
        raise ValueError(f"{root}: kept GT frames {kept} outside [0, {len(o2r)})")
    gt = {}
    for i in kept:
        rows = labels.frame(i)
        if len(rows):  # LEOD: a labeled frame without boxes has no label (None) and is predicted
            gt[int(o2r[i])] = _gt_rows(rows)
    start = 0 if cfg.start_from_zero else max(int(o2r[0]) - cfg.sequence_length + 1, 0)
    return _Seq(name=root.name, root=root, ev_file=ev_file, num_reprs=int(num_reprs),
                frame_hw=(int(height), int(width)), start=start, gt=gt)


def _finish(seq: _Seq, cfg: TTAConfig, keep_views: bool) -> MergedSequence:
    scale = 2 if cfg.downsampled_by_2 else 1
    names = [v.name for v in cfg.views]
    frames = sorted({f for per in seq.views.values() for f in per})
    pseudo: Dict[int, np.ndarray] = {}
    for f in frames:
        parts = [seq.views[n][f] for n in names if f in seq.views.get(n, {})]
        rows = torch.cat(parts)
        if cfg.merges_views:
            rows = merge_views(rows, cfg.confidence_threshold, cfg.nms_threshold)
        if rows.shape[0]:
            pseudo[f] = rows_to_structured(rows)
    views = None
    if keep_views:
        views = {n: {f: rows_to_structured(r) for f, r in sorted(seq.views.get(n, {}).items())} for n in names}
    return MergedSequence(name=seq.name, seq_dir=seq.root, num_reprs=seq.num_reprs, frame_hw=seq.frame_hw,
                          sensor_hw=(seq.frame_hw[0] * scale, seq.frame_hw[1] * scale),
                          stream_range=(seq.start, seq.num_reprs), pseudo=pseudo, gt=dict(sorted(seq.gt.items())),
                          views=views, num_frame_views=seq.frame_views)


_Chunk = Tuple[List[int], np.ndarray]  # representation indices in processing order, uint8 [n, C, H, W]


class _Stream:
    """One direction of one sequence, read ``chunk`` representations at a time, in processing order
    (forward: ``start .. N-1``; reversed: ``N-1 .. start`` with the channels reversed).

    With a ``reader`` (a one-thread executor shared by all streams), the chunk after the one being consumed is
    read in that thread (h5py serialises file access through its own lock; one read per stream is in flight).
    """

    def __init__(self, seq: _Seq, reverse: bool, chunk: int, reader: Optional[ThreadPoolExecutor] = None):
        self.seq = seq
        self.reverse = reverse
        self.chunk = chunk
        self.reader = reader
        self.pos = seq.num_reprs if reverse else seq.start  # reversed: exclusive upper end of what is left
        self.consumed = 0
        self.h5: Optional[h5py.File] = None
        self.data: Optional[np.ndarray] = None
        self.reprs: List[int] = []
        self.k = 0
        self.pending: Optional[Future] = None

    @property
    def exhausted(self) -> bool:
        return self.consumed >= self.seq.length

    def _next_range(self) -> Optional[Tuple[int, int]]:
        """[a, b) of the next chunk to read (None when all is read); advances ``pos``."""
        if self.reverse:
            a, b = max(self.pos - self.chunk, self.seq.start), self.pos
            self.pos = a
        else:
            a, b = self.pos, min(self.pos + self.chunk, self.seq.num_reprs)
            self.pos = b
        return (a, b) if a < b else None

    def _load(self, a: int, b: int) -> _Chunk:
        """Read representations [a, b) in processing order."""
        if self.h5 is None:
            self.h5 = open_event_repr(self.seq.ev_file)
        try:
            data = self.h5["data"][a:b]
        except OSError as err:
            raise FormatError(self.seq.ev_file, f"cannot read frames {a}:{b} ({err})") from err
        if self.reverse:
            return list(range(b - 1, a - 1, -1)), np.ascontiguousarray(data[::-1, ::-1])  # x.flip(0) per step
        return list(range(a, b)), data

    def _submit_next(self) -> None:
        """Start reading the next chunk in the reader thread (if there is one and a chunk is left)."""
        span = self._next_range()
        self.pending = self.reader.submit(self._load, *span) if span is not None else None

    def _read(self) -> None:
        try:
            if self.reader is None:
                self.reprs, self.data = self._load(*self._next_range())
            else:
                if self.pending is None:
                    self._submit_next()
                self.reprs, self.data = self.pending.result()
                self._submit_next()
        except FormatError:
            self.close()
            raise
        self.k = 0

    def next(self) -> Tuple[int, np.ndarray]:
        """(representation index, uint8 [C, H, W]) of the next step."""
        if self.exhausted:
            raise RuntimeError(f"stream of {self.seq.name} is exhausted")
        if self.data is None or self.k >= len(self.reprs):
            self._read()
        j, x = self.reprs[self.k], self.data[self.k]
        self.k += 1
        self.consumed += 1
        if self.exhausted:
            self.close()
        return j, x

    def frame_of(self, j: int, tflip_offset: int) -> int:
        return j + tflip_offset if self.reverse else j

    def close(self) -> None:
        """Close the file, after any read still in flight (whose result or error is dropped)."""
        if self.pending is not None:
            self.pending.cancel()
            wait([self.pending])
            self.pending = None
        if self.h5 is not None:
            self.h5.close()
            self.h5 = None


def _feature_keys(model, features: Dict[int, Tensor]) -> Sequence[int]:
    stages = getattr(getattr(model, "fpn", None), "in_stages", None)
    return tuple(stages) if stages is not None else tuple(features.keys())


class _Runner:
    """What both paths share: the model, thresholds and the per-view post-processing of a detection batch."""

    def __init__(self, model, cfg: TTAConfig, device: torch.device, frame_hw: Tuple[int, int]):
        self.model = model
        self.cfg = cfg
        self.device = device
        param = next(model.parameters(), None)
        self.in_dtype = param.dtype if param is not None else torch.float32
        self.amp = cfg.torch_autocast_dtype
        self.num_classes = int(model.num_classes)
        self.obj_thr, self.cls_thr = cfg.class_thresholds(self.num_classes)
        self.score_floor = cfg.score_floor(self.num_classes)
        self.frame_hw = frame_hw
        self.scale = 2.0 if cfg.downsampled_by_2 else 1.0

    def to_input(self, x: np.ndarray) -> Tensor:
        return torch.from_numpy(x).to(device=self.device, dtype=self.in_dtype)  # x is reused: blocking copy

    def detect(self, features: Dict[int, Tensor], owners: List[Tuple[_Seq, View, int]]) -> None:
        """Head + postprocess + per-view filter on ``features`` (one row per owner); store the rows."""
        with autocast_context(self.device, self.amp):
            head = self.model.forward_detect(features)
        dets = postprocess(head, self.num_classes, self.score_floor, self.cfg.nms_threshold)
        rows = filter_view_predictions(dets, [v.hflip for _, v, _ in owners], self.frame_hw, self.obj_thr,
                                       self.cls_thr, self.cfg, self.scale)
        for (seq, view, frame), r in zip(owners, rows):
            if r.shape[0]:
                seq.add(view.name, frame, r)


def _run_batched(runner: _Runner, seqs: List[_Seq], cfg: TTAConfig, keep_views: bool, bar: tqdm,
                 reader: Optional[ThreadPoolExecutor]) -> Iterator[MergedSequence]:
    model, device = runner.model, runner.device
    directions = (False, True) if cfg.tflip else (False,)
    hflip = cfg.hflip
    queue: deque[_Stream] = deque()
    for s in sorted(seqs, key=lambda s: s.length, reverse=True):  # stable: caller's order on ties
        s.open_streams = len(directions)
        for rev in directions:  # both directions of a sequence side by side
            queue.append(_Stream(s, rev, cfg.sequence_length, reader))
    num_slots = min(cfg.batch_size * len(directions), len(queue))
    slots: List[Optional[_Stream]] = [None] * num_slots
    states = None
    buf: Optional[np.ndarray] = None
    try:
        while True:
            reset = np.zeros(num_slots, dtype=bool)
            for b in range(num_slots):
                if slots[b] is None or slots[b].exhausted:
                    slots[b] = queue.popleft() if queue else None
                    reset[b] = slots[b] is not None
            active = [b for b in range(num_slots) if slots[b] is not None]
            if not active:
                break
            if len(active) < num_slots and not queue:  # the tail: drop slots that will stay empty
                rows = active + [num_slots + b for b in active] if hflip else active
                if states is not None:
                    idx = torch.as_tensor(rows, dtype=torch.long, device=device)
                    states = [(h.index_select(0, idx), c.index_select(0, idx)) for h, c in states]
                slots = [slots[b] for b in active]
                reset = reset[active]
                num_slots = len(active)
                buf = None
            cells = []
            for b, st in enumerate(slots):
                j, x = st.next()
                if buf is None:
                    buf = np.zeros((num_slots, *x.shape), dtype=np.uint8)
                buf[b] = x
                cells.append((b, st, j))
            x = runner.to_input(buf)
            if hflip:
                x = torch.cat([x, x.flip(-1)])  # mirrored before padding (padding happens in the model)
            if states is not None and bool(reset.any()):
                mask = np.concatenate([reset, reset]) if hflip else reset
                states = model.reset_states(states, torch.from_numpy(mask).to(device))
            with autocast_context(device, runner.amp):
                features, states = model.forward_backbone(x, states)
            idx: List[int] = []
            owners: List[Tuple[_Seq, View, int]] = []
            for b, st, j in cells:
                seq = st.seq
                seq.frame_views += 2 if hflip else 1
                f = st.frame_of(j, cfg.tflip_offset)
                if seq.predicts(f):
                    idx.append(b)
                    owners.append((seq, _VIEW_BY_FLAGS[(st.reverse, False)], f))
                    if hflip:
                        idx.append(num_slots + b)
                        owners.append((seq, _VIEW_BY_FLAGS[(st.reverse, True)], f))
            if idx:
                sel = torch.as_tensor(idx, dtype=torch.long, device=device)
                runner.detect({k: features[k].index_select(0, sel) for k in _feature_keys(model, features)}, owners)
            bar.update(len(cells))
            for _, st, _ in cells:
                if st.exhausted:
                    st.seq.open_streams -= 1
                    if st.seq.open_streams == 0:
                        yield _finish(st.seq, cfg, keep_views)
                        st.seq.views = {}
    finally:
        for st in list(queue) + [s for s in slots if s is not None]:
            st.close()


def _run_sequential(runner: _Runner, seqs: List[_Seq], cfg: TTAConfig, keep_views: bool, bar: tqdm,
                    reader: Optional[ThreadPoolExecutor]) -> Iterator[MergedSequence]:
    model, device = runner.model, runner.device
    for seq in seqs:
        for view in cfg.views:
            st = _Stream(seq, view.tflip, cfg.sequence_length, reader)
            states = None
            try:
                while not st.exhausted:
                    j, x_np = st.next()
                    x = runner.to_input(np.ascontiguousarray(x_np)[None])
                    if view.hflip:
                        x = x.flip(-1)
                    with autocast_context(device, runner.amp):
                        features, states = model.forward_backbone(x, states)
                    seq.frame_views += 1
                    f = st.frame_of(j, cfg.tflip_offset)
                    if seq.predicts(f):
                        runner.detect({k: features[k] for k in _feature_keys(model, features)}, [(seq, view, f)])
                    bar.update(1)
            finally:
                st.close()
        yield _finish(seq, cfg, keep_views)
        seq.views = {}


@torch.inference_mode()
def predict_sequence_views(model, data_dir: Union[str, Path], sequences: Optional[Sequence[str]],
                           kept_gt: Mapping[str, Sequence[int]], cfg: TTAConfig = TTAConfig(),
                           device: Union[str, torch.device] = "cpu", keep_views: bool = False,
                           progress: bool = False) -> Iterator[MergedSequence]:
    """Run LEOD's TTA pseudo-labelling inference over sequences; yield each one's merged boxes when it is done.

    Args:
        model: the detector (:class:`~leod_core.models.detector.RVTDetector` or anything with its
            ``forward_backbone`` / ``forward_detect`` / ``reset_states`` / ``num_classes``); moved to ``device`` and
            put in eval mode here.
        data_dir: directory holding the sequence directories (e.g. ``<dataset>/train``).
        sequences: sequence names (default: every directory of ``data_dir``, sorted).
        kept_gt: sequence name -> objframe indices whose GT is kept (those frames are not predicted; their GT
            passes through). A sequence missing here has no kept GT (an unlabeled SSOD sequence).
        cfg: :class:`TTAConfig` (``cfg.batched`` picks the path).
        device: torch device.
        keep_views: also return each view's rows before the merge (:attr:`MergedSequence.views`).
        progress: tqdm bar over streamed representations (all views).

    Yields:
        :class:`MergedSequence`, in the order the sequences finish (batched path) or the given order.
    """
    data_dir = Path(data_dir)
    if sequences is None:
        if not data_dir.is_dir():
            raise FormatError(data_dir, "sequence directory is missing")
        sequences = sorted(p.name for p in data_dir.iterdir() if p.is_dir())
    names = list(dict.fromkeys(sequences))
    missing = [n for n in names if not (data_dir / n).is_dir()]
    if missing:
        raise FormatError(data_dir, f"unknown sequences {missing}")
    seqs = [_open_seq(data_dir / n, kept_gt.get(n, ()), cfg) for n in names]
    if not seqs:
        return
    shapes = {s.frame_hw for s in seqs}
    if len(shapes) > 1:
        raise FormatError(data_dir, f"sequences have different frame sizes {sorted(shapes)}")
    device = torch.device(device)
    model = model.to(device).eval()
    runner = _Runner(model, cfg, device, seqs[0].frame_hw)
    views = cfg.views
    width = cfg.batch_size * len(views) if cfg.batched else 1
    log.info("TTA pseudo-labelling: %s path, views %s, precision %s, model batch %d, %d sequences on %s; "
             "per-view NMS on scores >= %.4g (%s), reads %s",
             "batched" if cfg.batched else "sequential (one view at a time)", [v.name for v in views],
             cfg.precision, width, len(seqs), device, runner.score_floor,
             "exact pre-filter at the per-class thresholds" if cfg.prefilter_scores else "confidence threshold",
             "prefetched in a background thread" if cfg.prefetch_reads else "inline")
    total = sum(s.length for s in seqs) * len(views) // (2 if cfg.batched and cfg.hflip else 1)
    bar = tqdm(total=total, unit="step", desc="pseudo-label inference", disable=not progress)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tta-read") if cfg.prefetch_reads else None
    try:
        run = _run_batched if cfg.batched else _run_sequential
        yield from run(runner, seqs, cfg, keep_views, bar, reader)
    finally:
        bar.close()
        if reader is not None:
            reader.shutdown(wait=True)
