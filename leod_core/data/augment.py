"""LEOD's training augmentation (``data/utils/augmentor.py: RandomSpatialAugmentorGenX``) without torchvision.

Per sample (random access) or once per sequence stream (streaming) an :class:`AugmentState` is drawn
(:func:`sample_augment_state`, LEOD's ``randomize_augmentation``); :func:`apply_augmentation` then applies,
in LEOD's order, horizontal flip, zoom-in (its factor and window are drawn at that point, around a box of
the latest labeled step) and zoom-out, to the frames and to both label lists. The time flip is decided
here but applied by the loader (it changes which representations and labels are read).

Frames: ``Tensor[L, C, H, W]``; zooms use ``nearest-exact`` interpolation, computed as index tables once per
size (:func:`resize_index`) and applied with the flip in a single compiled gather (no intermediate frames,
no float conversion of uint8 frames). Boxes follow
:mod:`leod_core.data.label_tensors` (h-flip ``x' = W - 1 - x - w``). A label entry that loses all its
boxes becomes ``None``.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field, replace

import numba
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from leod_core.data import label_tensors as lt

NO_LABEL_WARNING = "zoom-in found no label in the sample: it is skipped"
#: Source index of an output pixel that has no source (outside a zoomed-out frame): it is 0.
OUTSIDE = -1
#: Resize index tables kept (one per input size, output size and frame kind: a few hundred per frame size).
_INDEX_CACHE_SIZE = 4096
#: Indices are resized as digits of this base (every frame dtype, uint8 and bfloat16 included, holds 0..127).
_DIGIT_BASE = 128
#: Most channels of the ramp frames of :func:`resize_index`: torch's kernel choice depends on the channel count of
#: channels-last frames only through thresholds below it.
_RAMP_CHANNELS = 4
#: Frame dtypes the compiled gather handles on the CPU; others use torch indexing.
_KERNEL_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float32,
                            torch.float64})
#: Dtypes every uint8 value converts to exactly (the gather casts uint8 frames to them on the fly).
_EXACT_FROM_UINT8 = frozenset({torch.int16, torch.int32, torch.int64, torch.float32, torch.float64})


@dataclass(frozen=True)
class SamplerAugmentConfig:
    """Augmentation probabilities of one sampler (LEOD ``data_augmentation.random`` / ``.stream``).

    Defaults are LEOD's random-access sampler in the label-efficient configs (``gen{1,4}x*``: time flip 0.5).
    Zoom: with probability ``prob_zoom`` zoom in or out, chosen with weights ``zoom_in_weight :
    zoom_out_weight``; factors uniform in ``[min, max]``. Rotation is off in every LEOD config and is not
    implemented (``prob_rotate`` must be 0).
    """

    prob_hflip: float = 0.5
    prob_tflip: float = 0.5
    prob_rotate: float = 0.0
    rotate_min_deg: float = 2.0
    rotate_max_deg: float = 6.0
    prob_zoom: float = 0.8
    zoom_in_weight: float = 8.0
    zoom_in_min: float = 1.0
    zoom_in_max: float = 1.5
    zoom_out_weight: float = 2.0
    zoom_out_min: float = 1.0
    zoom_out_max: float = 1.2

    def __post_init__(self) -> None:
        for name in ("prob_hflip", "prob_tflip", "prob_rotate", "prob_zoom"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.prob_rotate > 0:
            raise ValueError("rotation is not implemented (LEOD keeps it off: prob 0)")
        if self.zoom_in_weight < 0 or self.zoom_out_weight < 0:
            raise ValueError("zoom weights must be non-negative")
        if self.prob_zoom > 0 and self.zoom_in_weight + self.zoom_out_weight <= 0:
            raise ValueError("prob_zoom > 0 needs a positive zoom-in or zoom-out weight")
        if not (1 <= self.zoom_in_min <= self.zoom_in_max and 1 <= self.zoom_out_min <= self.zoom_out_max):
            raise ValueError("zoom factors need 1 <= min <= max")


#: LEOD ``data_augmentation.stream``: zoom-out only (no ``zoom_in`` key: weight 0), zoom p 0.5.
STREAM_LABEL_EFFICIENT = SamplerAugmentConfig(prob_zoom=0.5, zoom_in_weight=0.0, zoom_in_min=1.0, zoom_in_max=1.0,
                                              zoom_out_weight=1.0)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of both samplers. The default is LEOD's label-efficient setting (time flip 0.5)."""

    random: SamplerAugmentConfig = field(default_factory=SamplerAugmentConfig)
    stream: SamplerAugmentConfig = STREAM_LABEL_EFFICIENT

    @classmethod
    def base(cls) -> "AugmentConfig":
        """LEOD ``config/dataset/base.yaml`` (full-label training): no time flip."""
        return cls(random=SamplerAugmentConfig(prob_tflip=0.0), stream=replace(STREAM_LABEL_EFFICIENT, prob_tflip=0.0))

    @classmethod
    def none(cls) -> "AugmentConfig":
        """No augmentation at all."""
        off = SamplerAugmentConfig(prob_hflip=0.0, prob_tflip=0.0, prob_zoom=0.0)
        return cls(random=off, stream=off)


@dataclass(frozen=True)
class AugmentState:
    """Drawn augmentation parameters (LEOD's ``AugmentationState``); zoom windows are top-left corners."""

    h_flip: bool = False
    t_flip: bool = False
    zoom_in: bool = False
    zoom_in_x0: int = 0
    zoom_in_y0: int = 0
    zoom_in_factor: float = 1.0
    zoom_out: bool = False
    zoom_out_x0: int = 0
    zoom_out_y0: int = 0
    zoom_out_factor: float = 1.0


def _rand(gen: torch.Generator | None) -> float:
    return torch.rand(1, generator=gen).item()


def uniform(low: float, high: float, gen: torch.Generator | None) -> float:
    """LEOD's ``torch_uniform_sample_scalar``."""
    if high < low:
        raise ValueError(f"{high=} is smaller than {low=}")
    return low if high == low else low + (high - low) * _rand(gen)


def sample_augment_state(cfg: SamplerAugmentConfig, hw: tuple[int, int], gen: torch.Generator | None) -> AugmentState:
    """Draw h-flip, t-flip and zoom (in or out; zoom-out window included) as LEOD's ``randomize_augmentation``."""
    h_flip = cfg.prob_hflip > _rand(gen)
    t_flip = cfg.prob_tflip > _rand(gen)
    _rand(gen)  # rotation draw (always off), kept so that the random stream matches LEOD's order
    do_zoom = cfg.prob_zoom > _rand(gen)
    do_zoom_in = False
    if cfg.zoom_in_weight + cfg.zoom_out_weight > 0:
        weights = torch.tensor([cfg.zoom_in_weight, cfg.zoom_out_weight], dtype=torch.float64)
        do_zoom_in = torch.multinomial(weights, 1, generator=gen).item() == 0
    state = AugmentState(h_flip=h_flip, t_flip=t_flip, zoom_in=do_zoom and do_zoom_in)
    if do_zoom and not do_zoom_in:
        factor = uniform(cfg.zoom_out_min, cfg.zoom_out_max, gen)
        height, width = hw
        win_h, win_w = int(height / factor), int(width / factor)
        x0 = int(uniform(0, width - win_w, gen))
        y0 = int(uniform(0, height - win_h, gen))
        state = replace(state, zoom_out=True, zoom_out_x0=x0, zoom_out_y0=y0, zoom_out_factor=factor)
    return state


def _map_labels(labels: list[Tensor | None], fn) -> list[Tensor | None]:
    out = []
    for lab in labels:
        new = None if lab is None else fn(lab)
        out.append(None if new is None or len(new) == 0 else new)
    return out


def _latest_labels(labels: list[Tensor | None]) -> Tensor | None:
    for lab in reversed(labels):
        if lab is not None and len(lab) > 0:
            return lab
    return None


def sample_zoom_in_window(boxes: Tensor, hw: tuple[int, int], win_h: int, win_w: int,
                          gen: torch.Generator | None) -> tuple[int, int]:
    """Top-left corner of a zoom window that contains one of ``boxes`` (LEOD's
    ``randomly_sample_zoom_window_from_objframe``).

    A corner is drawn for every box, then one box is picked with ``randint(0, n - 1)`` (exclusive upper
    bound, as in LEOD: with several boxes the last one is never picked).
    """
    height, width = hw
    corners = []
    for x0_l, y0_l, w_l, h_l in boxes[:, lt.X:lt.H + 1].tolist():
        x1_l, y1_l = x0_l + w_l, y0_l + h_l
        x0_v = max(x1_l - max(win_w, w_l), 0)
        y0_v = max(y1_l - max(win_h, h_l), 0)
        x1_v = min(x0_l + max(win_w, w_l), width - 1)
        y1_v = min(y0_l + max(win_h, h_l), height - 1)
        x1_v = max(x1_v - win_w, x0_v)
        y1_v = max(y1_v - win_h, y0_v)
        corners.append((int(uniform(x0_v, x1_v, gen)), int(uniform(y0_v, y1_v, gen))))
    idx = 0 if len(corners) == 1 else int(torch.randint(0, len(corners) - 1, (1,), generator=gen).item())
    return corners[idx]


@dataclass(frozen=True)
class ResizeInput:
    """What decides how ``F.interpolate(x, size, mode="nearest-exact")`` rounds its source indices, besides the
    sizes: torch picks its kernel (float or double index arithmetic, generic or channels-last) from the dtype,
    the channel count and the memory format of ``x`` (and the output size). Ramp frames of the same kind reproduce
    that choice (:func:`resize_index`): channels-last frames by up to :data:`_RAMP_CHANNELS` channels, others by
    one (their channel count does not matter)."""

    dtype: torch.dtype
    channels: int
    channels_last: bool

    @classmethod
    def of(cls, frames: Tensor) -> "ResizeInput":
        """The kind of ``frames [N, C, H, W]`` (the tensor ``F.interpolate`` would get)."""
        channels_last = frames.is_contiguous(memory_format=torch.channels_last)
        return cls(frames.dtype, min(frames.shape[1], _RAMP_CHANNELS) if channels_last else 1, channels_last)


def _digit_places(size: int) -> list[int]:
    """Place values ``1, B, B^2, ...`` (``B`` = :data:`_DIGIT_BASE`) of the digits of the indices ``0 .. size-1``."""
    places = [1]
    while places[-1] * _DIGIT_BASE < size:
        places.append(places[-1] * _DIGIT_BASE)
    return places


def _ramp_planes(in_hw: tuple[int, int]) -> tuple[np.ndarray, list[int], list[int]]:
    """uint8 ``[P, in_h, in_w]``: the digits of every pixel's row index, then of its column index, one plane per
    digit; with the row and column digits' place values."""
    in_h, in_w = in_hw
    row_places, col_places = _digit_places(in_h), _digit_places(in_w)
    ys, xs = np.meshgrid(np.arange(in_h), np.arange(in_w), indexing="ij")
    planes = [ys // p % _DIGIT_BASE for p in row_places] + [xs // p % _DIGIT_BASE for p in col_places]
    return np.stack(planes).astype(np.uint8), row_places, col_places


def _resize_planes(planes: np.ndarray, out_hw: tuple[int, int], kind: ResizeInput) -> np.ndarray:
    """int64 ``[P, out_h, out_w]``: ``planes [P, h, w]`` resized by ``F.interpolate`` as frames of ``kind`` (in
    calls of ``kind.channels`` channels-last planes, or one call)."""
    group = kind.channels if kind.channels_last else len(planes)
    resized = []
    for first in range(0, len(planes), group):
        chunk = planes[first:first + group]
        chunk = np.concatenate([chunk, np.zeros((group - len(chunk), *chunk.shape[1:]), dtype=chunk.dtype)])
        frames = torch.from_numpy(chunk)[None].to(kind.dtype)
        if kind.channels_last:
            frames = frames.contiguous(memory_format=torch.channels_last)
        resized.append(F.interpolate(frames, size=out_hw, mode="nearest-exact")[0].to(torch.int64).numpy())
    return np.concatenate(resized)[:len(planes)]


@functools.lru_cache(maxsize=_INDEX_CACHE_SIZE)
def resize_index(in_hw: tuple[int, int], out_hw: tuple[int, int], kind: ResizeInput) -> tuple[np.ndarray, np.ndarray]:
    """Source row (int64 ``[out_h]``) and column (int64 ``[out_w]``) of every output pixel of
    ``F.interpolate(x, size=out_hw, mode="nearest-exact")`` for frames ``x [N, C, *in_hw]`` of ``kind``, taken
    from ``F.interpolate`` itself (on ramp frames of the same kind, the indices' digits as pixel values), so that
    gathering with them equals it bit for bit (its index rounding differs between kernels). Read-only (cached)."""
    planes, row_places, col_places = _ramp_planes(in_hw)
    resized = _resize_planes(planes, out_hw, kind)
    rows = sum(p * plane[:, 0] for p, plane in zip(row_places, resized))
    cols = sum(p * plane[0] for p, plane in zip(col_places, resized[len(row_places):]))
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def _zoom_window(size: int, start: int, factor: float) -> np.ndarray:
    """The indices ``[start, start + int(size / factor))`` of an axis of ``size`` (clipped by slicing, as the
    frames are)."""
    return np.arange(size)[start:start + int(size / factor)]


def _zoom_in_index(ev: Tensor, x0: int, y0: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Zoom-in: the window at ``(x0, y0)`` of ``ev [N, C, H, W]`` resized to ``H x W``."""
    height, width = ev.shape[-2:]
    win_rows, win_cols = _zoom_window(height, y0, factor), _zoom_window(width, x0, factor)
    crop = ev[..., y0:y0 + len(win_rows), x0:x0 + len(win_cols)]
    rows, cols = resize_index((len(win_rows), len(win_cols)), (height, width), ResizeInput.of(crop))
    return win_rows[rows], win_cols[cols]


def _zoom_out_index(ev: Tensor, x0: int, y0: int, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Zoom-out: ``ev [N, C, H, W]`` resized to ``int(H / f) x int(W / f)`` and pasted at ``(x0, y0)``,
    :data:`OUTSIDE` elsewhere."""
    height, width = ev.shape[-2:]
    win_h, win_w = int(height / factor), int(width / factor)
    resized_rows, resized_cols = resize_index((height, width), (win_h, win_w), ResizeInput.of(ev))
    rows, cols = np.full(height, OUTSIDE, dtype=np.int64), np.full(width, OUTSIDE, dtype=np.int64)
    rows[y0:y0 + win_h], cols[x0:x0 + win_w] = resized_rows, resized_cols
    return rows, cols


def spatial_index(ev: Tensor, h_flip: bool, zoom_in: tuple[int, int, float] | None = None,
                  zoom_out: tuple[int, int, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row and column source indices (int64 ``[H]``, ``[W]``; :data:`OUTSIDE` for zero pixels) of a horizontal
    flip followed by a zoom-in or a zoom-out ``(x0, y0, factor)`` of frames ``ev [N, C, H, W]``: output pixel
    ``(i, j)`` of the composed transform is input pixel ``(rows[i], cols[j])``. Zooms resample as
    ``F.interpolate(..., mode="nearest-exact")`` does on ``ev``."""
    height, width = ev.shape[-2:]
    rows, cols = np.arange(height), np.arange(width)
    if zoom_in is not None:
        rows, cols = _zoom_in_index(ev, *zoom_in)
    elif zoom_out is not None:
        rows, cols = _zoom_out_index(ev, *zoom_out)
    if h_flip:
        cols = np.where(cols == OUTSIDE, OUTSIDE, width - 1 - cols)
    return rows, cols


@numba.njit(cache=True, nogil=True)
def _gather_planes(src: np.ndarray, rows: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    """``out[k, i, j] = src[k, rows[i], cols[j]]`` (0 where an index is negative) for planes ``src [K, H, W]``,
    ``out [K, len(rows), len(cols)]`` (any numeric dtypes; values are cast). A row whose source row equals the
    previous one's (a nearest-neighbour upscale repeats rows) is copied from that output row."""
    num_planes, out_h, out_w = out.shape
    for k in range(num_planes):
        for i in range(out_h):
            r = rows[i]
            if r < 0:
                out[k, i, :] = 0
            elif i > 0 and r == rows[i - 1]:
                out[k, i, :] = out[k, i - 1, :]
            else:
                for j in range(out_w):
                    c = cols[j]
                    out[k, i, j] = src[k, r, c] if c >= 0 else 0


def transform_frames(ev: Tensor, rows: np.ndarray, cols: np.ndarray, dtype: torch.dtype | None = None) -> Tensor:
    """Frames ``[..., H, W]`` (CPU, a dtype of :data:`_KERNEL_DTYPES`) resampled at ``rows x cols`` (from
    :func:`spatial_index`) in one pass: a new ``Tensor[..., len(rows), len(cols)]`` of ``dtype`` (default
    ``ev.dtype``; the cast must be exact, e.g. uint8 to float32), 0 at :data:`OUTSIDE` indices."""
    dtype = ev.dtype if dtype is None else dtype
    src = ev.detach().contiguous().numpy()
    out = torch.empty((*ev.shape[:-2], len(rows), len(cols)), dtype=dtype)
    _gather_planes(src.reshape(-1, *src.shape[-2:]), rows, cols, out.numpy().reshape(-1, len(rows), len(cols)))
    return out


def _frames_to(ev: Tensor, rows: np.ndarray, cols: np.ndarray, dtype: torch.dtype) -> Tensor:
    """The gather of :func:`transform_frames`, cast to ``dtype`` (in the gather where that is exact), or the same
    gather with torch indexing for frames the kernel does not take (another device or dtype)."""
    if ev.device.type == "cpu" and ev.dtype in _KERNEL_DTYPES:
        fused = dtype == ev.dtype or (ev.dtype == torch.uint8 and dtype in _EXACT_FROM_UINT8)
        return transform_frames(ev, rows, cols, dtype if fused else ev.dtype).to(dtype)
    row_t, col_t = torch.from_numpy(rows).to(ev.device), torch.from_numpy(cols).to(ev.device)
    out = ev[..., row_t.clamp(min=0)[:, None], col_t.clamp(min=0)]
    out[..., row_t == OUTSIDE, :] = 0
    out[..., col_t == OUTSIDE] = 0
    return out.to(dtype)


def apply_augmentation(ev: Tensor, labels: list[Tensor | None], skipped: list[Tensor | None],
                       state: AugmentState, cfg: SamplerAugmentConfig, gen: torch.Generator | None,
                       dtype: torch.dtype | None = None
                       ) -> tuple[Tensor, list[Tensor | None], list[Tensor | None], AugmentState]:
    """Apply ``state`` to frames ``[L, C, H, W]`` and label lists; return them with the state as applied.

    A pending zoom-in draws its factor and window here (LEOD does so per call, from the latest step with
    labels); it is dropped (with a warning) when the sample has no label. The flip and the zoom are applied to
    the frames in one gather (:func:`spatial_index`), which also casts them to ``dtype`` (default: their own);
    frames without a spatial transform are returned as they are (cast if asked).
    """
    height, width = ev.shape[-2:]
    hw = (height, width)
    zoom_in = zoom_out = None
    if state.h_flip:
        labels = _map_labels(labels, lambda lab: lt.flip_lr(lab, width))
        skipped = _map_labels(skipped, lambda lab: lt.flip_lr(lab, width))
    if state.zoom_in:
        factor = uniform(cfg.zoom_in_min, cfg.zoom_in_max, gen)
        latest = _latest_labels(labels)
        if factor == 1 or latest is None:
            if factor != 1:
                warnings.warn(NO_LABEL_WARNING, UserWarning, stacklevel=2)
            state = replace(state, zoom_in=False, zoom_in_x0=0, zoom_in_y0=0, zoom_in_factor=1.0)
        else:
            x0, y0 = sample_zoom_in_window(latest, hw, int(height / factor), int(width / factor), gen)
            zoom_in = (x0, y0, factor)
            labels = _map_labels(labels, lambda lab: lt.zoom_in(lab, x0, y0, factor, hw))
            skipped = _map_labels(skipped, lambda lab: lt.zoom_in(lab, x0, y0, factor, hw))
            state = replace(state, zoom_in_x0=x0, zoom_in_y0=y0, zoom_in_factor=factor)
    if state.zoom_out:
        if state.zoom_in:
            raise ValueError("zoom-in and zoom-out are exclusive")
        x0, y0, factor = state.zoom_out_x0, state.zoom_out_y0, state.zoom_out_factor
        if factor != 1:
            zoom_out = (x0, y0, factor)
            labels = _map_labels(labels, lambda lab: lt.zoom_out(lab, x0, y0, factor, hw))
            skipped = _map_labels(skipped, lambda lab: lt.zoom_out(lab, x0, y0, factor, hw))
    dtype = ev.dtype if dtype is None else dtype
    if state.h_flip or zoom_in is not None or zoom_out is not None:
        ev = _frames_to(ev, *spatial_index(ev, state.h_flip, zoom_in, zoom_out), dtype)
    return ev.to(dtype), labels, skipped, state


__all__ = ["AugmentConfig", "AugmentState", "OUTSIDE", "SamplerAugmentConfig", "STREAM_LABEL_EFFICIENT",
           "ResizeInput", "apply_augmentation", "resize_index", "sample_augment_state", "sample_zoom_in_window",
           "spatial_index", "transform_frames", "uniform"]
