"""RVT's stacked-histogram event representation, computed with NumPy (bit-identical to RVT's torch code)."""
from __future__ import annotations

import numpy as np

#: RVT accumulates counts in uint8 ("fast mode"), so a pixel hit 256 times wraps to 0 before clipping.
_UINT8_WRAP = 256


def stacked_histogram(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, height: int, width: int,
                      nbins: int, count_cutoff: int) -> np.ndarray:
    """Histogram of one event window, uint8 [2 * nbins, height, width], channel = ``p * nbins + bin``.

    ``x``, ``y`` (pixels), ``p`` (0/1) and ``t`` (µs, non-decreasing) are int64 [N]. The time bin of an
    event is ``floor((t - t_first) / max(t_last - t_first, 1) * nbins)``, clamped to ``nbins - 1`` and
    evaluated in float32 as RVT does (torch divides int64 tensors into float32). Counts wrap modulo 256
    (RVT's uint8 accumulation) and are then clipped to ``count_cutoff``.
    """
    num_cells = 2 * nbins * height * width
    if len(t) == 0:
        return np.zeros((2 * nbins, height, width), dtype=np.uint8)
    span = max(int(t[-1] - t[0]), 1)
    t_norm = (t - t[0]).astype(np.float32) / np.float32(span) * np.float32(nbins)
    time_bin = np.minimum(np.floor(t_norm), nbins - 1).astype(np.int64)
    index = x + width * y + height * width * time_bin + nbins * height * width * p
    counts = np.bincount(index, minlength=num_cells) % _UINT8_WRAP
    return np.minimum(counts, count_cutoff).astype(np.uint8).reshape(2 * nbins, height, width)


def downsample_by_2_nearest(frames: np.ndarray) -> np.ndarray:
    """×0.5 'nearest-exact' downsampling of [..., H, W] to [..., H // 2, W // 2] (RVT's gen4 ``_ds2_nearest``).

    With scale 0.5, torch's nearest-exact picks source index ``floor((i + 0.5) * 2) = 2 i + 1``.
    """
    out_h, out_w = frames.shape[-2] // 2, frames.shape[-1] // 2
    return np.ascontiguousarray(frames[..., 1:2 * out_h:2, 1:2 * out_w:2])
