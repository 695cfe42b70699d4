"""How the synthetic sensor sees a scene: sprite compositing and contrast-threshold events (numba), plus noise.

Internal to the ``leod_core.data.synth*`` modules. Event rows are int64 ``[E, 4]``: (t µs, x px, y px, polarity 0/1).
"""
from __future__ import annotations

import numba
import numpy as np

from leod_core.data.synth_config import SynthConfig

_INITIAL_EVENT_CAPACITY = 1 << 16  # rows of the event buffer before it first grows


@numba.njit(cache=True)
def _splat(prem, alpha, x0, y0, out):
    """Composite one sprite frame (prem, alpha: [SH, SW]) with top-left at (x0, y0) over ``out`` [H, W]."""
    sh, sw = alpha.shape
    height, width = out.shape
    for py in range(max(0, int(np.floor(y0))), min(height, int(np.floor(y0)) + sh + 1)):
        v = py - y0
        iv = int(np.floor(v))
        fv = v - iv
        for px in range(max(0, int(np.floor(x0))), min(width, int(np.floor(x0)) + sw + 1)):
            u = px - x0
            iu = int(np.floor(u))
            fu = u - iu
            a = c = 0.0
            for dv in range(2):
                wv = fv if dv else 1.0 - fv
                for du in range(2):
                    wuv = wv * (fu if du else 1.0 - fu)
                    if 0 <= iv + dv < sh and 0 <= iu + du < sw:
                        a += wuv * alpha[iv + dv, iu + du]
                        c += wuv * prem[iv + dv, iu + du]
            if a > 0.0:
                out[py, px] = c + (1.0 - a) * out[py, px]


@numba.njit(cache=True)
def _render(background, prem, alpha, frame, ox, oy, order, out):
    """Linear-intensity image [H, W] at one step: background, then sprites back to front."""
    out[:, :] = background
    for j in order:
        if not np.isnan(ox[j]):
            _splat(prem[j, frame[j]], alpha[j, frame[j]], ox[j], oy[j], out)


@numba.njit(cache=True)
def _span(previous, current, size, limit):
    """Pixel range [lo, hi) a sprite of ``size`` px touches at offset ``previous`` or ``current`` (NaN: absent)."""
    lo, hi = limit, 0
    for offset in (previous, current):
        if not np.isnan(offset):
            lo = min(lo, max(0, int(np.floor(offset))))
            hi = max(hi, min(limit, int(np.floor(offset)) + size + 1))
    return lo, hi


@numba.njit(cache=True)
def _emit(buf, n, x, y, level, before, ref, c, t0, dt_us):
    """Append the events of pixel (x, y) whose log-intensity went from ``before`` to ``level`` in the step
    starting at ``t0``; return (buffer, event count, new reference). Crossing times are interpolated."""
    count = int(abs(level - ref) / c)
    if n + count > buf.shape[0]:
        grown = np.empty((2 * (n + count), 4), np.int64)
        grown[:n] = buf[:n]
        buf = grown
    sign = 1.0 if level > ref else -1.0
    for m in range(1, count + 1):
        frac = (ref + sign * m * c - before) / (level - before) if level != before else 1.0
        buf[n, 0] = t0 + int(round(min(max(frac, 0.0), 1.0) * dt_us))
        buf[n, 1], buf[n, 2], buf[n, 3] = x, y, 1 if sign > 0 else 0
        n += 1
    return buf, n, ref + sign * count * c


@numba.njit(cache=True)
def _simulate(background, prem, alpha, frame, ox, oy, order, threshold, dt_us):
    """Contrast-threshold events of the rendered video: int64 [E, 4] rows (t µs, x, y, p), unsorted.

    Only pixels under a sprite now or at the previous step can change (the background is static);
    visiting a pixel twice in one step is harmless since its reference is then already within threshold.
    """
    height, width = background.shape
    lin = np.empty_like(background)
    _render(background, prem, alpha, frame[0], ox[0], oy[0], order, lin)
    prev = np.log(lin)
    ref = prev.copy()
    buf, n = np.empty((_INITIAL_EVENT_CAPACITY, 4), np.int64), 0
    for k in range(1, ox.shape[0]):
        _render(background, prem, alpha, frame[k], ox[k], oy[k], order, lin)
        for j in range(ox.shape[1]):
            y0, y1 = _span(oy[k - 1, j], oy[k, j], alpha.shape[2], height)
            x0, x1 = _span(ox[k - 1, j], ox[k, j], alpha.shape[3], width)
            for py in range(y0, y1):
                for px in range(x0, x1):
                    level, before = np.log(lin[py, px]), prev[py, px]
                    prev[py, px] = level
                    if abs(level - ref[py, px]) >= threshold[py, px]:
                        buf, n, ref[py, px] = _emit(buf, n, px, py, level, before, ref[py, px],
                                                    threshold[py, px], (k - 1) * dt_us, dt_us)
    return buf[:n]


def _noise_events(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Uniform background activity plus hot pixels: int64 [E, 4] rows (t µs, x, y, p)."""
    num_pixels = config.height * config.width
    n_noise = rng.poisson(config.noise_rate_hz * num_pixels * config.duration_s)
    hot = rng.integers(num_pixels, size=config.hot_pixels)
    pixel = np.concatenate([rng.integers(num_pixels, size=n_noise),
                            np.repeat(hot, rng.poisson(config.hot_pixel_rate_hz * config.duration_s, size=len(hot)))])
    t = rng.integers(config.duration_us, size=len(pixel))
    return np.stack([t, pixel % config.width, pixel // config.width, rng.integers(2, size=len(pixel))], axis=1)
