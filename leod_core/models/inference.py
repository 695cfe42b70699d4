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
* Representations are read lazily from the HDF5 file, ``sequence_length`` at a time per slot (one file open
  per slot), cast to the model dtype and zero-padded at the bottom/right (``InputPadderFromShape``).
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

import contextlib
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Sequence

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for h5py)
import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from leod_core.data.formats import (PROPHESEE_BBOX_DTYPE, FormatError, SequencePaths, open_event_repr,
                                    read_objframe_idx_2_repr_idx, read_timestamps_us)
from leod_core.models.detector import RVTDetector
from leod_core.models.postprocess import postprocess

log = logging.getLogger(__name__)

FrameSelection = Literal["labeled", "all"]
AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                    "float16": torch.float16, "fp16": torch.float16, "16": torch.float16}
#: Columns of a detection row (``SequencePredictions.detections[k]``).
DETECTION_COLUMNS = ("x1", "y1", "x2", "y2", "obj_prob", "cls_prob", "class_id")


@dataclass(frozen=True)
class InferenceConfig:
    """Settings of streaming inference.

    Attributes:
        batch_size: sequences run side by side (slots).
        sequence_length: representations read (and detected) per slot and chunk (RVT's ``L``); with
            ``start_from_zero=False`` it also sets where a stream starts (``first_labeled_repr - L + 1``).
        confidence_threshold: YOLOX postprocess keeps anchors with ``obj * cls >= this`` (LEOD's final
            evaluation: 0.001; RVT's training-time validation: 0.1).
        nms_threshold: IoU threshold of the class-wise NMS.
        autocast_dtype: ``'bfloat16'``/``'bf16'`` or ``'float16'``/``'fp16'`` to run under
            ``torch.autocast``; None runs in float32.
        downsampled_by_2: read ``event_representations_ds2_nearest.h5`` (RVT's Gen4 setting).
        start_from_zero: stream from representation 0 instead of RVT's ``max(first_labeled_repr - L + 1, 0)``.
        clamp_to_frame: clamp predicted boxes into the frame (RVT's evaluation does not).
    """

    batch_size: int = 8
    sequence_length: int = 21
    confidence_threshold: float = 0.001
    nms_threshold: float = 0.45
    autocast_dtype: Optional[str] = None
    downsampled_by_2: bool = False
    start_from_zero: bool = False
    clamp_to_frame: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.sequence_length < 1:
            raise ValueError(f"batch_size and sequence_length must be >= 1, got {self.batch_size}, "
                             f"{self.sequence_length}")
        if not 0.0 <= self.confidence_threshold <= 1.0 or not 0.0 <= self.nms_threshold <= 1.0:
            raise ValueError(f"thresholds must lie in [0, 1], got confidence {self.confidence_threshold}, "
                             f"nms {self.nms_threshold}")
        if self.autocast_dtype is not None and self.autocast_dtype not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast_dtype must be None or one of {sorted(AUTOCAST_DTYPES)}, "
                             f"got {self.autocast_dtype!r}")

    @property
    def torch_autocast_dtype(self) -> Optional[torch.dtype]:
        return None if self.autocast_dtype is None else AUTOCAST_DTYPES[self.autocast_dtype]


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
@dataclass
class _Stream:
    """One sequence being streamed: its file, range, and the predictions gathered so far."""

    name: str
    root: Path
    ev_file: Path
    start: int
    stop: int
    timestamps_us: np.ndarray
    repr_2_frame: Dict[int, int]
    frame_hw: tuple[int, int]
    next_idx: int = 0
    h5: Optional[h5py.File] = None
    pending: int = 0  # steps whose detections are still to come
    outputs: Dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def exhausted(self) -> bool:
        return self.next_idx >= self.stop

    def read(self, count: int) -> np.ndarray:
        """The next ``count`` representations (uint8 [count, C, H, W]); opens/closes the file as needed."""
        if self.h5 is None:
            self.h5 = open_event_repr(self.ev_file)
        a, b = self.next_idx, self.next_idx + count
        try:
            data = self.h5["data"][a:b]
        except OSError as err:
            self.close()
            raise FormatError(self.ev_file, f"cannot read frames {a}:{b} ({err})") from err
        self.next_idx = b
        if self.exhausted:
            self.close()
        return data

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()
            self.h5 = None

    def result(self) -> SequencePredictions:
        idx = np.asarray(sorted(self.outputs), dtype=np.int64)
        return SequencePredictions(
            name=self.name, frame_hw=self.frame_hw, repr_idx=idx, timestamps_us=self.timestamps_us[idx],
            objframe_idx=np.asarray([self.repr_2_frame.get(int(i), -1) for i in idx], dtype=np.int64),
            detections=[self.outputs[int(i)] for i in idx], stream_range=(self.start, self.stop))


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


def _open_stream(root: Path, cfg: InferenceConfig) -> _Stream:
    paths = SequencePaths(root)
    ev_file = paths.ev_repr_file(cfg.downsampled_by_2)
    with open_event_repr(ev_file) as h5:
        num_reprs, _, height, width = h5["data"].shape
    o2r = read_objframe_idx_2_repr_idx(paths.objframe_idx_2_repr_idx, num_reprs)
    ts = read_timestamps_us(paths.repr_timestamps)
    if len(ts) != num_reprs:
        raise FormatError(paths.repr_timestamps, f"{len(ts)} timestamps for {num_reprs} representations")
    start = 0 if cfg.start_from_zero else max(int(o2r[0]) - cfg.sequence_length + 1, 0)
    return _Stream(name=root.name, root=root, ev_file=ev_file, start=start, stop=int(num_reprs),
                   timestamps_us=ts, repr_2_frame={int(r): i for i, r in enumerate(o2r)},
                   frame_hw=(int(height), int(width)), next_idx=start)


# ------------------------------------------------------------------------------------------- inference
@dataclass
class _Segment:
    """Representations ``[repr_start, repr_start + len(data))`` of ``stream``, fed at chunk steps
    ``[step, step + len(data))`` of one slot."""

    stream: _Stream
    step: int
    repr_start: int
    data: np.ndarray


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op context for float32 (``dtype`` None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.inference_mode()
def iter_sequence_predictions(model: RVTDetector, data_dir: Path, split: str, cfg: InferenceConfig,
                              device: str | torch.device = "cpu", sequences: Optional[Sequence[str]] = None,
                              frames: FrameSelection = "labeled", progress: bool = True
                              ) -> Iterator[SequencePredictions]:
    """Stream every sequence of ``data_dir/split`` through ``model``; yield each one's predictions when it ends.

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
    device = torch.device(device)
    model = model.to(device).eval()
    param = next(model.parameters())
    in_dtype = param.dtype
    amp = cfg.torch_autocast_dtype
    roots = list_sequences(Path(data_dir), split, sequences)
    streams = [_open_stream(r, cfg) for r in roots]
    if not streams:
        return
    shapes = {s.frame_hw for s in streams}
    if len(shapes) > 1:
        raise FormatError(Path(data_dir) / split, f"sequences have different frame sizes {sorted(shapes)}")
    queue = deque(sorted(streams, key=lambda s: s.length, reverse=True))  # stable: name order on ties
    num_slots = min(cfg.batch_size, len(queue))
    slots: List[Optional[_Stream]] = [None] * num_slots
    L = cfg.sequence_length
    num_classes = model.num_classes
    keep_stages = getattr(getattr(model, "fpn", None), "in_stages", None)
    states = None
    bar = tqdm(total=sum(s.length for s in streams), unit="repr", desc=f"inference {split}", disable=not progress)
    frame_shape = None
    try:
        while True:
            # ---- plan this chunk: per slot, the segments of representations it feeds ----
            plan: List[List[_Segment]] = [[] for _ in range(num_slots)]
            for b in range(num_slots):
                step = 0
                while step < L:
                    if slots[b] is None or slots[b].exhausted:
                        if not queue:
                            slots[b] = None
                            break
                        slots[b] = queue.popleft()
                    s = slots[b]
                    n = min(L - step, s.stop - s.next_idx)
                    first = s.next_idx
                    data = s.read(n)
                    plan[b].append(_Segment(s, step, first, data))
                    s.pending += n
                    step += n
            active = [b for b in range(num_slots) if plan[b]]
            if not active:
                break
            # drop slots that will never be used again (queue empty and nothing planned)
            if len(active) < num_slots and not queue:
                keep = torch.as_tensor(active, dtype=torch.long, device=device)
                if states is not None:
                    states = [(h.index_select(0, keep), c.index_select(0, keep)) for h, c in states]
                plan = [plan[b] for b in active]
                slots = [slots[b] for b in active]
                num_slots = len(active)
            if frame_shape is None:
                frame_shape = plan[0][0].data.shape[1:]
            steps = max(seg.step + len(seg.data) for segs in plan for seg in segs)

            # ---- run the backbone step by step, keep the features of wanted outputs ----
            feats: List[Dict[int, Tensor]] = []
            owners: List[tuple[_Stream, int]] = []
            buf = np.zeros((num_slots, *frame_shape), dtype=np.uint8)
            for t in range(steps):
                buf[:] = 0
                reset = torch.zeros(num_slots, dtype=torch.bool)
                where: List[tuple[int, _Stream, int]] = []
                for b, segs in enumerate(plan):
                    for seg in segs:
                        k = t - seg.step
                        if 0 <= k < len(seg.data):
                            buf[b] = seg.data[k]
                            repr_idx = seg.repr_start + k
                            if repr_idx == seg.stream.start:
                                reset[b] = True
                            where.append((b, seg.stream, repr_idx))
                            break
                x = torch.from_numpy(buf).to(device=device, dtype=in_dtype, non_blocking=True)
                if states is not None and bool(reset.any()):
                    states = model.reset_states(states, reset.to(device))
                with autocast_context(device, amp):
                    features, states = model.forward_backbone(x, states)
                sel = [(b, s, r) for b, s, r in where if frames == "all" or r in s.repr_2_frame]
                for b, s, r in where:
                    if frames != "all" and r not in s.repr_2_frame:
                        s.pending -= 1
                if sel:
                    idx = torch.as_tensor([b for b, _, _ in sel], dtype=torch.long, device=device)
                    stages = keep_stages if keep_stages is not None else features.keys()
                    feats.append({k: features[k].index_select(0, idx) for k in stages})
                    owners.extend((s, r) for _, s, r in sel)
                bar.update(len(where))

            # ---- FPN + head + postprocess on the selected steps of the chunk ----
            if owners:
                batched = {k: torch.cat([f[k] for f in feats]) for k in feats[0]}
                with autocast_context(device, amp):
                    head = model.forward_detect(batched)
                dets = postprocess(head, num_classes, cfg.confidence_threshold, cfg.nms_threshold)
                for (s, r), det in zip(owners, dets):
                    if cfg.clamp_to_frame:
                        det = clamp_detections(det, s.frame_hw)
                    s.outputs[r] = det.cpu().numpy().astype(np.float32, copy=False)
                    s.pending -= 1
            # ---- yield the sequences that are complete ----
            done = {id(seg.stream): seg.stream for segs in plan for seg in segs
                    if seg.stream.exhausted and seg.stream.pending == 0}
            for s in done.values():
                yield s.result()
                s.outputs = {}
    finally:
        bar.close()
        for s in streams:
            s.close()
