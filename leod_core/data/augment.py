"""LEOD's training augmentation (``data/utils/augmentor.py: RandomSpatialAugmentorGenX``) without torchvision.

Per sample (random access) or once per sequence stream (streaming) an :class:`AugmentState` is drawn
(:func:`sample_augment_state`, LEOD's ``randomize_augmentation``); :func:`apply_augmentation` then applies,
in LEOD's order, horizontal flip, zoom-in (its factor and window are drawn at that point, around a box of
the latest labeled step) and zoom-out, to the frames and to both label lists. The time flip is decided
here but applied by the loader (it changes which representations and labels are read).

Frames: ``Tensor[L, C, H, W]``; zooms use ``nearest-exact`` interpolation. Boxes follow
:mod:`leod_core.data.label_tensors` (h-flip ``x' = W - 1 - x - w``). A label entry that loses all its
boxes becomes ``None``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from leod_core.data import label_tensors as lt

NO_LABEL_WARNING = "zoom-in found no label in the sample: it is skipped"


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


def zoom_in_frames(ev: Tensor, x0: int, y0: int, factor: float) -> Tensor:
    """Crop the ``int(H/f) x int(W/f)`` window at ``(x0, y0)`` and resize it to ``H x W`` (nearest-exact)."""
    height, width = ev.shape[-2:]
    win_h, win_w = int(height / factor), int(width / factor)
    crop = ev[..., y0:y0 + win_h, x0:x0 + win_w]
    return F.interpolate(crop, size=(height, width), mode="nearest-exact")


def zoom_out_frames(ev: Tensor, x0: int, y0: int, factor: float) -> Tensor:
    """Resize to ``int(H/f) x int(W/f)`` (nearest-exact) and paste at ``(x0, y0)`` on a zero canvas."""
    height, width = ev.shape[-2:]
    win_h, win_w = int(height / factor), int(width / factor)
    out = torch.zeros_like(ev)
    out[..., y0:y0 + win_h, x0:x0 + win_w] = F.interpolate(ev, size=(win_h, win_w), mode="nearest-exact")
    return out


def apply_augmentation(ev: Tensor, labels: list[Tensor | None], skipped: list[Tensor | None],
                       state: AugmentState, cfg: SamplerAugmentConfig, gen: torch.Generator | None
                       ) -> tuple[Tensor, list[Tensor | None], list[Tensor | None], AugmentState]:
    """Apply ``state`` to frames ``[L, C, H, W]`` and label lists; return them with the state as applied.

    A pending zoom-in draws its factor and window here (LEOD does so per call, from the latest step with
    labels); it is dropped (with a warning) when the sample has no label.
    """
    height, width = ev.shape[-2:]
    hw = (height, width)
    if state.h_flip:
        ev = ev.flip(-1)
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
            ev = zoom_in_frames(ev, x0, y0, factor)
            labels = _map_labels(labels, lambda lab: lt.zoom_in(lab, x0, y0, factor, hw))
            skipped = _map_labels(skipped, lambda lab: lt.zoom_in(lab, x0, y0, factor, hw))
            state = replace(state, zoom_in_x0=x0, zoom_in_y0=y0, zoom_in_factor=factor)
    if state.zoom_out:
        if state.zoom_in:
            raise ValueError("zoom-in and zoom-out are exclusive")
        x0, y0, factor = state.zoom_out_x0, state.zoom_out_y0, state.zoom_out_factor
        if factor != 1:
            ev = zoom_out_frames(ev, x0, y0, factor)
            labels = _map_labels(labels, lambda lab: lt.zoom_out(lab, x0, y0, factor, hw))
            skipped = _map_labels(skipped, lambda lab: lt.zoom_out(lab, x0, y0, factor, hw))
    return ev, labels, skipped, state


__all__ = ["AugmentConfig", "AugmentState", "SamplerAugmentConfig", "STREAM_LABEL_EFFICIENT", "apply_augmentation",
           "sample_augment_state", "sample_zoom_in_window", "uniform", "zoom_in_frames", "zoom_out_frames"]
