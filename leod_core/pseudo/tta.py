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

Both paths run the :class:`~leod_core.models.streaming.StreamingEngine` (FPN + head once per step) and give the
same boxes:

* ``batched=True``: all views of ``batch_size`` sequences as one batch: the forward and the time-reversed stream
  of a sequence in two adjacent slots, with hflip the mirrored copy of every slot in the second half, so 4 views
  of ``B`` sequences are a ``4B``-row batch per time step.
* ``batched=False``: the reference: one view of one sequence at a time, batch 1.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from leod_core.data.cameras import DEFAULT_CAMERA, get_camera
from leod_core.data.formats import PSEUDO_BBOX_DTYPE, FormatError, SequencePaths, read_labels
from leod_core.models.loss import expand_class_thresholds
from leod_core.models.postprocess import postprocess
from leod_core.models.streaming import ALL_VIEWS, Owner, StreamConfig, StreamingEngine, StreamJob, View
from leod_core.pseudo.views import filter_view_predictions, merge_views, rows_to_structured, structured_to_rows

log = logging.getLogger(__name__)

__all__ = ["ALL_VIEWS", "MergedSequence", "TTAConfig", "View", "filter_view_predictions", "merge_views",
           "predict_sequence_views", "rows_to_structured", "structured_to_rows"]

Thresholds = Union[float, Tuple[float, ...]]
#: The camera whose settings are the defaults (LEOD's defaults are Gen1's).
_DEFAULT = get_camera(DEFAULT_CAMERA)


@dataclass(frozen=True)
class TTAConfig(StreamConfig):
    """Settings of LEOD's pseudo-labelling inference (defaults: LEOD's ``predict.yaml`` / ``pseudo_labeler.yaml``
    for Gen1; :meth:`gen4` for 1Mpx): the streaming settings of
    :class:`~leod_core.models.streaming.StreamConfig` (there: ``batch_size``, ``sequence_length``,
    ``autocast_dtype``, ``downsampled_by_2``, ``start_from_zero``, ``prefetch_reads``) plus the fields below.

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
        batched: the batched path (True) or the one-view-at-a-time reference path (False).
        prefilter_scores: before the per-view NMS, drop candidates whose ``obj * cls`` is below
            :meth:`min_passing_score` (no box that passes the per-class thresholds scores lower). Exact: greedy NMS
            only lets a box suppress lower-ranked ones, so a dropped candidate could neither be kept nor remove a
            kept box; the rows are unchanged and the NMS runs on far fewer candidates. False: NMS over every
            candidate with ``obj * cls >= confidence_threshold`` (LEOD's order of work).
    """

    hflip: bool = True
    tflip: bool = True
    tflip_offset: int = _DEFAULT.tflip_offset
    confidence_threshold: float = 0.01
    obj_thresh: Thresholds = _DEFAULT.pseudo_obj_thresh
    cls_thresh: Thresholds = _DEFAULT.pseudo_cls_thresh
    min_box_side: float = 5.0
    max_width_frac: float = 0.9
    batched: bool = True
    prefilter_scores: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.max_width_frac <= 1.0 or self.min_box_side < 0:
            raise ValueError(f"need 0 < max_width_frac <= 1 and min_box_side >= 0, got {self.max_width_frac}, "
                             f"{self.min_box_side}")
        for name in ("obj_thresh", "cls_thresh"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @classmethod
    def for_camera(cls, camera: str, **overrides) -> "TTAConfig":
        """LEOD's pseudo-labelling settings of a registered camera (time-flip offset, resolution, stream length
        ``L``, per-class thresholds; Gen4: -2, ``_ds2_nearest`` frames, ``L = 10``), then ``overrides``."""
        return dataclasses.replace(cls(**get_camera(camera).tta_defaults()), **overrides)

    @property
    def views(self) -> Tuple[View, ...]:
        """Active views, in the order ``id, hflip, tflip, tflip_hflip``."""
        return tuple(v for v in ALL_VIEWS if (self.tflip or not v.tflip) and (self.hflip or not v.hflip))

    @property
    def merges_views(self) -> bool:
        """LEOD merges (``tta_postprocess``) whenever an augmented view was used."""
        return self.hflip or self.tflip

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


def _gt_rows(labels: np.ndarray) -> np.ndarray:
    out = np.zeros(len(labels), dtype=PSEUDO_BBOX_DTYPE)
    names = labels.dtype.names
    for name in ("t", "x", "y", "w", "h", "class_id", "class_confidence"):
        out[name] = labels[name]
    out["objectness"] = labels["objectness"] if "objectness" in names else labels["class_confidence"]
    return out


# ------------------------------------------------------------------------------------------ sequences
def _open_job(root: Path, kept: Sequence[int], cfg: TTAConfig) -> Tuple[StreamJob, Dict[int, np.ndarray]]:
    """The stream job of sequence ``root`` and its kept ground truth (representation index -> rows, frames with
    >= 1 box; those frames are not predicted)."""
    job = StreamJob.open(root, cfg)
    o2r = job.reader.objframe_idx_2_repr_idx
    paths = SequencePaths(root)
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
    job.skipped = frozenset(gt)
    return job, gt


def _finish(job: StreamJob, gt: Dict[int, np.ndarray], cfg: TTAConfig, keep_views: bool) -> MergedSequence:
    """Merge the views' rows of every predicted frame (empty results dropped)."""
    scale = 2 if cfg.downsampled_by_2 else 1
    names = [v.name for v in cfg.views]
    per_view = {n: {f: r for f, r in job.outputs.get(n, {}).items() if r.shape[0]} for n in names}
    pseudo: Dict[int, np.ndarray] = {}
    for f in sorted({f for per in per_view.values() for f in per}):
        rows = torch.cat([per_view[n][f] for n in names if f in per_view[n]])
        if cfg.merges_views:
            rows = merge_views(rows, cfg.confidence_threshold, cfg.nms_threshold)
        if rows.shape[0]:
            pseudo[f] = rows_to_structured(rows)
    views = None
    if keep_views:
        views = {n: {f: rows_to_structured(r) for f, r in sorted(per_view[n].items())} for n in names}
    reader = job.reader
    return MergedSequence(name=job.name, seq_dir=reader.root, num_reprs=reader.num_reprs, frame_hw=reader.frame_hw,
                          sensor_hw=(reader.frame_hw[0] * scale, reader.frame_hw[1] * scale),
                          stream_range=(job.start, reader.num_reprs), pseudo=pseudo, gt=dict(sorted(gt.items())),
                          views=views, num_frame_views=job.length * len(cfg.views))


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
    jobs, gts = [], {}
    for n in names:
        job, gts[n] = _open_job(data_dir / n, kept_gt.get(n, ()), cfg)
        jobs.append(job)
    if not jobs:
        return
    device = torch.device(device)
    model = model.to(device).eval()
    num_classes = int(model.num_classes)
    obj_thr, cls_thr = cfg.class_thresholds(num_classes)
    score_floor = cfg.score_floor(num_classes)
    scale = 2.0 if cfg.downsampled_by_2 else 1.0

    def decode(head: Tensor, owners: List[Owner]) -> List[Tensor]:
        """Postprocess + LEOD's per-view filter: float32 label rows ``Tensor[M, 8]`` (CPU, sensor pixels) per owner."""
        dets = postprocess(head, num_classes, score_floor, cfg.nms_threshold)
        rows = filter_view_predictions(dets, [v.hflip for _, v, _ in owners], jobs[0].reader.frame_hw, obj_thr,
                                       cls_thr, cfg, scale)
        return [r.detach().to("cpu", torch.float32) for r in rows]

    views = cfg.views
    width = cfg.batch_size * len(views) if cfg.batched else 1
    log.info("TTA pseudo-labelling: %s path, views %s, precision %s, model batch %d, %d sequences on %s; "
             "per-view NMS on scores >= %.4g (%s)", "batched" if cfg.batched else "sequential (one view at a time)",
             [v.name for v in views], cfg.precision, width, len(jobs), device, score_floor,
             "exact pre-filter at the per-class thresholds" if cfg.prefilter_scores else "confidence threshold")
    engines = [StreamingEngine(model, cfg, device, decode, group, tflip_offset=cfg.tflip_offset)
               for group in ([views] if cfg.batched else [(v,) for v in views])]
    total = sum(j.length for j in jobs) * sum(len(e.directions) for e in engines)
    bar = tqdm(total=total, unit="step", desc="pseudo-label inference", disable=not progress)
    try:
        if cfg.batched:
            for job in engines[0].run(jobs, bar):
                yield _finish(job, gts[job.name], cfg, keep_views)
                job.outputs = {}
        else:
            for job in jobs:
                for engine in engines:
                    for _ in engine.run([job], bar):
                        pass
                yield _finish(job, gts[job.name], cfg, keep_views)
                job.outputs = {}
    finally:
        bar.close()
