"""The streaming inference engine: whole sequences through the recurrent detector, side by side, in order.

Used by evaluation (:func:`leod_core.models.inference.iter_sequence_predictions`, the identity view only) and by
LEOD's pseudo-labelling (:func:`leod_core.pseudo.tta.predict_sequence_views`, up to four test-time-augmentation
views). What RVT / LEOD do and this engine reproduces:

* A sequence is streamed from ``start = max(first_labeled_repr - L + 1, 0)`` (``start_from_zero``: 0) to its last
  representation, without augmentation, read through :meth:`SequenceReader.iter_chunks` ``L`` representations
  at a time (optionally read ahead in a background thread; then a stream's first read is a single
  representation, :data:`FIRST_READ_SIZE`, so that its first step does not wait for ``L``).
* **Views** are a batch-level option. A time-flipped view (``tflip``) is another stream of the sequence, from its
  last representation back to ``start`` with every representation's channels reversed; its step on
  representation ``j`` predicts frame ``j + tflip_offset``. A mirrored view (``hflip``) is the mirrored copy
  (``x.flip(-1)``, before the model's bottom/right zero padding) of every row, forming another block of the
  batch. Rows, mirrored copies and that zero padding (when the model has a ``pad_multiple``) are written into
  one reused host buffer: on the CPU in the model's dtype (the copy converts, the model reads the buffer itself),
  for an accelerator in uint8 (a quarter of the bytes to transfer, converted on the device once per step). So
  with all four views, ``B`` sequences are a ``4B``-row batch: rows ``[0, 2B)`` are the forward and time-flipped
  streams (adjacent slots), rows ``[2B, 4B)`` their mirrored copies.
* Streams are queued long -> short (stable) and run in ``batch_size x directions`` slots. Work is planned in
  chunks of ``chunk_steps`` steps: each slot in turn fills the chunk, taking the next queued stream as soon as
  its own ends (its recurrent state is zeroed at that step, RVT's ``is_first_sample`` reset). A slot without a
  stream runs on zeros and its outputs are dropped; once the queue is empty, slots left without a stream at a
  chunk start are removed from the batch. Slots never interact (eval-mode BatchNorm, per-sample attention).
* The backbone runs step by step; the FPN + YOLOX head run once per chunk on the features of the rows whose
  predictions are wanted (RVT's ``BackboneFeatureSelector``), in batch order (every row of a one-step chunk: the
  backbone's tensors themselves); a caller's ``decode`` turns the head output into per-row results
  (postprocess, filters).

Boxes are in pixels of the frame the model reads (the half-size ``_ds2_nearest`` frame for Gen4 with
``downsampled_by_2``); the zero padding is at the bottom/right, so padded-input pixels are read-frame pixels.
"""
from __future__ import annotations

import contextlib
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from leod_core.data.cameras import DEFAULT_CAMERA, get_camera
from leod_core.data.formats import FormatError
from leod_core.data.sequence import SequenceReader
from leod_core.models.compiled import CPU_INFERENCE_OPTIONS, model_step

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                   "float16": torch.float16, "fp16": torch.float16, "16": torch.float16}


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` to ``dtype`` on ``device``'s type, or a no-op context for float32 (``dtype`` None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
#: The camera whose settings are the defaults (RVT's and LEOD's defaults are Gen1's).
_DEFAULT = get_camera(DEFAULT_CAMERA)


@dataclass(frozen=True)
class StreamConfig:
    """Settings every streaming inference shares (:class:`~leod_core.models.inference.InferenceConfig` and
    :class:`~leod_core.pseudo.tta.TTAConfig` extend it).

    Attributes:
        batch_size: sequences run side by side (the model batch is ``batch_size`` times the number of views).
        sequence_length: RVT's ``L``: representations read per stream and chunk; with ``start_from_zero=False``
            streams start at ``max(first_labeled_repr - L + 1, 0)``.
        confidence_threshold: YOLOX postprocess keeps anchors with ``obj * cls >= this``.
        nms_threshold: IoU threshold of the class-wise NMS.
        autocast_dtype: ``'bfloat16'``/``'bf16'`` or ``'float16'``/``'fp16'`` to run under ``torch.autocast``;
            None runs in float32.
        downsampled_by_2: read ``event_representations_ds2_nearest.h5`` (RVT's Gen4 setting).
        start_from_zero: stream from representation 0 instead of ``max(first_labeled_repr - L + 1, 0)``.
        prefetch_reads: read the next ``sequence_length`` representations of every stream in a background thread
            while the model runs (same data, same order; each open stream then holds two chunks, e.g. 2 x 31 MB
            for Gen1 with ``L = 21``).
        compile_model: run the backbone step and the head through ``torch.compile`` (inductor; compiled once per
            model, the batch dimension dynamic, on the CPU with the weights frozen into the graph:
            :mod:`leod_core.models.compiled`), falling back to eager with a WARNING if compiling fails.
    """

    batch_size: int = 8
    sequence_length: int = _DEFAULT.sequence_length
    confidence_threshold: float = 0.001
    nms_threshold: float = 0.45
    autocast_dtype: Optional[str] = None
    downsampled_by_2: bool = _DEFAULT.downsampled_by_2
    start_from_zero: bool = False
    prefetch_reads: bool = True
    compile_model: bool = False

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

    @property
    def precision(self) -> str:
        return "float32" if self.autocast_dtype is None else f"{self.torch_autocast_dtype} autocast"


@dataclass(frozen=True)
class View:
    """One test-time-augmentation view: time-flipped stream and/or mirrored frames."""

    name: str
    tflip: bool
    hflip: bool


#: Every view, in the order used everywhere: identity, h-flip, time flip, both.
ALL_VIEWS = (View("id", False, False), View("hflip", False, True), View("tflip", True, False),
             View("tflip_hflip", True, True))
IDENTITY = ALL_VIEWS[0]
_VIEW_BY_FLAGS = {(v.tflip, v.hflip): v for v in ALL_VIEWS}


@dataclass(eq=False)
class StreamJob:
    """One sequence to stream and the results gathered for it.

    Attributes:
        reader: the sequence (labels need not be loaded).
        start: first streamed representation; streams cover ``[start, reader.num_reprs)``.
        wanted: representation indices to detect on (None: every one).
        skipped: representation indices never detected on (e.g. frames whose ground truth is kept).
        outputs: view name -> predicted frame -> what ``decode`` returned for it.
    """

    reader: SequenceReader
    start: int
    wanted: Optional[AbstractSet[int]] = None
    skipped: AbstractSet[int] = frozenset()
    outputs: Dict[str, Dict[int, Any]] = field(default_factory=dict)
    open_streams: int = 0

    @classmethod
    def open(cls, root: Path, cfg: StreamConfig, **kw) -> "StreamJob":
        """The job of sequence directory ``root`` under ``cfg`` (``downsampled_by_2``, start of the stream)."""
        reader = SequenceReader(root, downsampled_by_2=cfg.downsampled_by_2, load_labels=False)
        return cls(reader, reader.stream_start(cfg.sequence_length, cfg.start_from_zero), **kw)

    @property
    def name(self) -> str:
        return self.reader.name

    @property
    def length(self) -> int:
        """Streamed representations per view."""
        return self.reader.num_reprs - self.start

    def predicts(self, frame: int) -> bool:
        return (0 <= frame < self.reader.num_reprs and frame not in self.skipped
                and (self.wanted is None or frame in self.wanted))

    def add(self, view: str, frame: int, result: Any) -> None:
        per_view = self.outputs.setdefault(view, {})
        if frame in per_view:
            raise RuntimeError(f"{self.name}: view {view} predicted frame {frame} twice")
        per_view[frame] = result


def _host_dtype(device: torch.device, in_dtype: torch.dtype) -> torch.dtype:
    """The dtype the engine assembles a step's input in: the model's own on the CPU, where the buffer then is the
    model input (no conversion pass), else uint8 (converted on the device)."""
    return in_dtype if device.type == "cpu" else torch.uint8


#: Representations in a stream's first read when reads are prefetched: its first step waits for that read alone
#: (one decompressed representation, not ``L``), and the stream's next ``L`` are read ahead while the model runs.
FIRST_READ_SIZE = 1
#: (representation index, uint8 [C, H, W] representation, first step of its stream)
_Step = Tuple[int, np.ndarray, bool]
#: Who a selected batch row belongs to: (job, view, predicted frame).
Owner = Tuple[StreamJob, View, int]


class _Stream:
    """One direction of one job (a batch slot's content): ``start .. N-1`` forward, or ``N-1 .. start`` with the
    channels reversed, read ``read_size`` representations at a time through the job's reader."""

    def __init__(self, job: StreamJob, reverse: bool, read_size: int, executor: Optional[ThreadPoolExecutor]):
        self.job = job
        self.reverse = reverse
        self.remaining = job.length
        first = FIRST_READ_SIZE if executor is not None else None
        self._chunks = job.reader.iter_chunks(job.start, job.reader.num_reprs, read_size, reverse=reverse,
                                              executor=executor, first_chunk=first)
        self._idx = np.zeros(0, dtype=np.int64)
        self._data: Optional[np.ndarray] = None
        self._k = 0

    @property
    def exhausted(self) -> bool:
        return self.remaining == 0

    def take(self, count: int) -> List[_Step]:
        """The next ``count`` steps (``count <= remaining``); closes the file after the last one."""
        steps = []
        for _ in range(count):
            if self._k >= len(self._idx):
                self._idx, self._data = next(self._chunks)
                self._k = 0
            steps.append((int(self._idx[self._k]), self._data[self._k], self.remaining == self.job.length))
            self._k += 1
            self.remaining -= 1
        if self.exhausted:
            self.close()
        return steps

    def close(self) -> None:
        """Close the file, after any read still in flight."""
        self._chunks.close()


def _concat_features(feats: List[Dict[int, Tensor]]) -> Dict[int, Tensor]:
    """The selected features of a chunk's steps ``[{k: Tensor[n_t, C_k, h_k, w_k]}]`` stacked along the batch
    (one step: its tensors, without a copy)."""
    if len(feats) == 1:
        return feats[0]
    return {k: torch.cat([f[k] for f in feats]) for k in feats[0]}


#: Per slot: (first chunk step, stream, its steps) segments.
_Plan = List[List[Tuple[int, _Stream, List[_Step]]]]


class StreamingEngine:
    """Streams jobs through a recurrent detector, all views of a batch of sequences side by side.

    Args:
        model: the detector (:class:`~leod_core.models.detector.RVTDetector` or anything with its
            ``forward_backbone`` / ``forward_detect`` / ``reset_states``), on ``device`` in eval mode.
        cfg: :class:`StreamConfig` (batch size, ``L``, precision, prefetching).
        device: torch device.
        decode: (head output of the selected rows, their owners) -> one result per owner, stored in
            :attr:`StreamJob.outputs`.
        views: active views; must be every combination of their ``tflip`` and ``hflip`` values (e.g. identity
            only, or all four), in :data:`ALL_VIEWS` order.
        chunk_steps: steps planned, run and detected together (evaluation: ``L``, as RVT; pseudo-labelling: 1).
        tflip_offset: a time-flipped step on representation ``j`` predicts frame ``j + tflip_offset``.
    """

    def __init__(self, model, cfg: StreamConfig, device: torch.device,
                 decode: Callable[[Any, List[Owner]], Sequence[Any]], views: Sequence[View] = (IDENTITY,),
                 chunk_steps: int = 1, tflip_offset: int = 0):
        self.directions = tuple(sorted({v.tflip for v in views}))
        self.mirrors = tuple(sorted({v.hflip for v in views}))
        if tuple(views) != tuple(v for v in ALL_VIEWS if v.tflip in self.directions and v.hflip in self.mirrors):
            raise ValueError(f"views {[v.name for v in views]} are not every combination of their flips")
        if chunk_steps < 1:
            raise ValueError(f"chunk_steps must be >= 1, got {chunk_steps}")
        self.model, self.cfg, self.device, self.decode = model, cfg, device, decode
        self.views, self.chunk_steps, self.tflip_offset = tuple(views), chunk_steps, tflip_offset
        param = next(model.parameters(), None)
        self.in_dtype = param.dtype if param is not None else torch.float32
        self.host_dtype = _host_dtype(device, self.in_dtype)
        self.amp = cfg.torch_autocast_dtype
        self.feature_stages = getattr(getattr(model, "fpn", None), "in_stages", None)
        self.pad_multiple: Optional[int] = getattr(model, "pad_multiple", None)
        self._announced = False
        options = CPU_INFERENCE_OPTIONS if device.type == "cpu" else None   # inference only: weights are constants
        self.step = model_step(model, cfg.compile_model, options=options)

    def run(self, jobs: Sequence[StreamJob], bar: Optional[tqdm] = None) -> Iterator[StreamJob]:
        """Stream every job; yield each one when all its streams have ended and their results are stored.

        ``bar`` advances by one per stream step (the mirrored copies of a row are not counted).
        """
        if not jobs:
            return
        shapes = {j.reader.frame_hw for j in jobs}
        if len(shapes) > 1:
            raise FormatError(jobs[0].reader.root.parent, f"sequences have different frame sizes {sorted(shapes)}")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-read") \
            if self.cfg.prefetch_reads else None
        if not self._announced:
            log.info("streaming inference: views %s, %s, model batch up to %d, head every %d steps, reads %s, "
                     "input %s", [v.name for v in self.views], self.cfg.precision,
                     self.cfg.batch_size * len(self.views), self.chunk_steps,
                     "prefetched in a background thread" if executor is not None else "inline",
                     f"assembled in {self.host_dtype} on the host"
                     + (f", zero-padded to multiples of {self.pad_multiple}" if self.pad_multiple
                        else ", padded by the model"))
            self._announced = True
        queue: deque[_Stream] = deque()
        for job in sorted(jobs, key=lambda j: j.length, reverse=True):  # stable: caller's order on ties
            job.open_streams = len(self.directions)
            queue.extend(_Stream(job, rev, self.cfg.sequence_length, executor) for rev in self.directions)
        slots: List[Optional[_Stream]] = [None] * min(self.cfg.batch_size * len(self.directions), len(queue))
        try:
            yield from self._loop(queue, slots, bar)
        finally:
            for st in list(queue) + [s for s in slots if s is not None]:
                st.close()
            if executor is not None:
                executor.shutdown(wait=True)
            self.step.log_summary()

    def _plan(self, queue: deque, slots: List[Optional[_Stream]]) -> _Plan:
        """Fill the next chunk of every slot in turn, taking queued streams as slots' streams end."""
        plan: _Plan = [[] for _ in slots]
        for b in range(len(slots)):
            step = 0
            while step < self.chunk_steps:
                if slots[b] is None or slots[b].exhausted:
                    if not queue:
                        slots[b] = None
                        break
                    slots[b] = queue.popleft()
                st = slots[b]
                steps = st.take(min(self.chunk_steps - step, st.remaining))
                plan[b].append((step, st, steps))
                step += len(steps)
        return plan

    def _input_buffer(self, num_slots: int, reader: SequenceReader) -> Tensor:
        """Zeroed host ``[mirrors, num_slots, C, H_in, W_in]`` of :attr:`host_dtype`: the input of one step, rows of
        mirrored views in the second block, reused across steps. ``H_in, W_in`` is the read frame rounded up to the
        model's :attr:`pad_multiple` (its bottom/right zero padding, which then stays zero here) or the frame
        itself."""
        multiple = self.pad_multiple or 1
        in_hw = tuple(-(-n // multiple) * multiple for n in reader.frame_hw)
        return torch.zeros((len(self.mirrors), num_slots, reader.channels, *in_hw), dtype=self.host_dtype)

    def _put(self, buf: Tensor, slot: int, x: Optional[np.ndarray]) -> None:
        """Write representation ``x`` (C-contiguous uint8 ``[C, H, W]``; None: zeros) as ``slot``'s rows of ``buf``
        (see :meth:`_input_buffer`), mirrored along the width (before the padding) in the mirrored views' block."""
        height, width = buf.shape[-2:] if x is None else x.shape[-2:]
        rows = torch.from_numpy(x) if x is not None else None
        for m, mirrored in enumerate(self.mirrors):
            region = buf[m, slot, :, :height, :width]
            if rows is None:
                region.zero_()
            else:
                region.copy_(rows.flip(-1) if mirrored else rows)

    def _select(self, features: Dict[int, Tensor], rows: List[int]) -> Dict[int, Tensor]:
        """The FPN's input stages of one step's backbone features ``{k: Tensor[B, C_k, h_k, w_k]}``, batch rows
        ``rows`` (every row in order: the step's tensors themselves, without a copy)."""
        stages = self.feature_stages if self.feature_stages is not None else features.keys()
        if rows == list(range(next(iter(features.values())).shape[0])):
            return {k: features[k] for k in stages}
        sel = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        return {k: features[k].index_select(0, sel) for k in stages}

    def _loop(self, queue: deque, slots: List[Optional[_Stream]], bar: Optional[tqdm]) -> Iterator[StreamJob]:
        model, device = self.model, self.device
        reader = queue[0].job.reader
        states = None
        buf = self._input_buffer(len(slots), reader)
        while True:
            plan = self._plan(queue, slots)
            active = [b for b in range(len(slots)) if plan[b]]
            if not active:
                return
            if len(active) < len(slots) and not queue:  # the tail: drop slots that will stay empty
                if states is not None:
                    rows = [m * len(slots) + b for m in range(len(self.mirrors)) for b in active]
                    keep = torch.as_tensor(rows, dtype=torch.long, device=device)
                    states = [(h.index_select(0, keep), c.index_select(0, keep)) for h, c in states]
                plan = [plan[b] for b in active]
                slots[:] = [slots[b] for b in active]
            num_slots = len(slots)
            if buf.shape[1] != num_slots:
                buf = self._input_buffer(num_slots, reader)
            feats: List[Dict[int, Tensor]] = []
            owners: List[Owner] = []
            for t in range(max(step + len(steps) for segs in plan for step, _, steps in segs)):
                reset = np.zeros(num_slots, dtype=bool)
                cells: List[Tuple[int, _Stream, int]] = []
                for b, segs in enumerate(plan):
                    cell = next(((st, steps[t - step]) for step, st, steps in segs
                                 if step <= t < step + len(steps)), None)
                    if cell is None:
                        self._put(buf, b, None)
                        continue
                    st, (j, x, first) = cell
                    self._put(buf, b, x)
                    reset[b] = first
                    cells.append((b, st, j))
                x = buf.reshape(-1, *buf.shape[2:]).to(device=device, dtype=self.in_dtype)
                if states is not None and bool(reset.any()):
                    mask = np.concatenate([reset] * len(self.mirrors))
                    states = model.reset_states(states, torch.from_numpy(mask).to(device))
                with autocast_context(device, self.amp):
                    features, states = self.step.backbone(x, states)
                picked = [(b, st, j + self.tflip_offset if st.reverse else j) for b, st, j in cells]
                picked = [(b, st, frame) for b, st, frame in picked if st.job.predicts(frame)]
                idx = [m * num_slots + b for m in range(len(self.mirrors)) for b, _, _ in picked]
                owners.extend((st.job, _VIEW_BY_FLAGS[(st.reverse, mirrored)], frame)
                              for mirrored in self.mirrors for _, st, frame in picked)
                if idx:
                    feats.append(self._select(features, idx))
                if bar is not None:
                    bar.update(len(cells))
            if owners:
                with autocast_context(device, self.amp):
                    head = self.step.detect(_concat_features(feats))
                for (job, view, frame), result in zip(owners, self.decode(head, owners)):
                    job.add(view.name, frame, result)
            for segs in plan:
                for _, st, _ in segs:
                    if st.exhausted:
                        st.job.open_streams -= 1
                        if st.job.open_streams == 0:
                            yield st.job
