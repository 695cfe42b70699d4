"""RVT's stacked-histogram event representation, computed with NumPy (bit-identical to RVT's torch code)."""
from __future__ import annotations

import numba
import numpy as np

@numba.njit(cache=True, nogil=True)
def _accumulate(out: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, nbins: int,
                count_cutoff: int) -> None:
    """Add events into ``out`` (uint8 [2, nbins, H, W], zeroed) in place, then clip to ``count_cutoff``."""
    span = np.float32(max(t[-1] - t[0], 1))
    for i in range(len(t)):
        t_norm = np.float32(t[i] - t[0]) / span * np.float32(nbins)
        time_bin = min(int(np.floor(t_norm)), nbins - 1)
        out[p[i], time_bin, y[i], x[i]] += np.uint8(1)   # uint8 arithmetic wraps at 256 like RVT's
    flat = out.ravel()
    for i in range(flat.size):
        if flat[i] > count_cutoff:
            flat[i] = count_cutoff


def stacked_histogram(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, height: int, width: int,
                      nbins: int, count_cutoff: int) -> np.ndarray:
    """Histogram of one event window, uint8 [2 * nbins, height, width], channel = ``p * nbins + bin``.

    ``x``, ``y`` (pixels), ``p`` (0/1) and ``t`` (µs, non-decreasing) are int64 [N]. The time bin of an
    event is ``floor((t - t_first) / max(t_last - t_first, 1) * nbins)``, clamped to ``nbins - 1`` and
    evaluated in float32 as RVT does (torch divides int64 tensors into float32). Counts accumulate in uint8
    and wrap at 256 (RVT's "fast mode"), then are clipped to ``count_cutoff``.
    """
    out = np.zeros((2, nbins, height, width), dtype=np.uint8)
    if len(t):
        _accumulate(out, x, y, p, t, nbins, count_cutoff)
    return out.reshape(2 * nbins, height, width)


def downsample_by_2_nearest(frames: np.ndarray) -> np.ndarray:
    """×0.5 'nearest-exact' downsampling of [..., H, W] to [..., H // 2, W // 2] (RVT's gen4 ``_ds2_nearest``).

    With scale 0.5, torch's nearest-exact picks source index ``floor((i + 0.5) * 2) = 2 i + 1``.
    """
    out_h, out_w = frames.shape[-2] // 2, frames.shape[-1] // 2
    return np.ascontiguousarray(frames[..., 1:2 * out_h:2, 1:2 * out_w:2])
