"""RVT's stacked-histogram event representation, computed with NumPy (bit-identical to RVT's torch code)."""
from __future__ import annotations

from typing import Iterable, Iterator

import numba
import numpy as np

from leod_core.data.formats import RawEvents


@numba.njit(cache=True, nogil=True)
def _accumulate(out: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, nbins: int,
                count_cutoff: int, stride: int) -> None:
    """Add events into ``out`` (uint8 [2, nbins, H, W], zeroed) in place, then clip the cells they touched to
    ``count_cutoff``. ``stride`` 2 keeps the events at odd x and y only, in cell ``(y // 2, x // 2)`` (the cells
    nearest-exact downsampling keeps); time bins use the first and last event of all of them."""
    span = np.float32(max(t[-1] - t[0], 1))
    width = out.shape[3]
    plane = out.shape[2] * width
    touched = np.empty(len(t), dtype=np.int64)
    count = 0
    for i in range(len(t)):
        if stride == 2 and (x[i] % 2 == 0 or y[i] % 2 == 0):
            continue
        t_norm = np.float32(t[i] - t[0]) / span * np.float32(nbins)
        time_bin = min(int(np.floor(t_norm)), nbins - 1)
        row, col = y[i] // stride, x[i] // stride
        out[p[i], time_bin, row, col] += np.uint8(1)   # uint8 arithmetic wraps at 256 like RVT's
        touched[count] = (p[i] * nbins + time_bin) * plane + row * width + col
        count += 1
    flat = out.ravel()
    for k in range(count):
        if flat[touched[k]] > count_cutoff:
            flat[touched[k]] = count_cutoff


def stacked_histogram(x: np.ndarray, y: np.ndarray, p: np.ndarray, t: np.ndarray, height: int, width: int,
                      nbins: int, count_cutoff: int, downsampled_by_2: bool = False) -> np.ndarray:
    """Histogram of one event window, uint8 [2 * nbins, height, width], channel = ``p * nbins + bin``.

    ``x``, ``y`` (pixels), ``p`` (0/1) and ``t`` (µs, non-decreasing) are int64 [N]. The time bin of an
    event is ``floor((t - t_first) / max(t_last - t_first, 1) * nbins)``, clamped to ``nbins - 1`` and
    evaluated in float32 as RVT does (torch divides int64 tensors into float32). Counts accumulate in uint8
    and wrap at 256 (RVT's "fast mode"), then are clipped to ``count_cutoff``.

    ``downsampled_by_2`` returns [2 * nbins, height // 2, width // 2]: RVT's ``_ds2_nearest`` frame, the
    full-size histogram downsampled by 0.5 with torch's 'nearest-exact' (output ``i`` takes input ``2 i + 1``),
    computed directly from the events at odd x and y.
    """
    stride = 2 if downsampled_by_2 else 1
    out = np.zeros((2, nbins, height // stride, width // stride), dtype=np.uint8)
    if len(t):
        _accumulate(out, x, y, p, t, nbins, count_cutoff, stride)
    return out.reshape(2 * nbins, height // stride, width // stride)


def iter_event_windows(chunks: Iterable[RawEvents], ends_us: np.ndarray, window_us: int
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The events of every window ``[end - window_us, end]`` (µs, both ends included), ``end`` in ``ends_us``
    (non-decreasing), from a stream of event chunks (non-decreasing ``t`` across chunks).

    Yields (x, y, p, t) int64 [N] per window, exactly the events ``searchsorted`` on the whole recording selects,
    holding only the events from the current window's start on plus one chunk (memory does not grow with the
    recording's length). The stream is read to its end after the last window.
    """
    ends_us = np.asarray(ends_us, dtype=np.int64)
    if len(ends_us) > 1 and np.any(np.diff(ends_us) < 0):
        raise ValueError("window ends must be non-decreasing")
    source = iter(chunks)
    buf = [np.zeros(0, dtype=np.int64) for _ in range(4)]
    exhausted = False
    for end in ends_us.tolist():
        while not exhausted and (len(buf[3]) == 0 or buf[3][-1] <= end):
            chunk = next(source, None)
            if chunk is None:
                exhausted = True
            else:
                buf = [np.concatenate([b, np.asarray(getattr(chunk, k), dtype=np.int64)])
                       for b, k in zip(buf, "xypt")]
        lo = int(np.searchsorted(buf[3], end - window_us, side="left"))
        hi = int(np.searchsorted(buf[3], end, side="right"))
        yield tuple(b[lo:hi] for b in buf)
        buf = [b[lo:] for b in buf]
    for _ in source:    # read to the end: a damaged tail raises, and the reader's summary is logged, as when whole
        continue


def iter_stacked_histograms(chunks: Iterable[RawEvents], ends_us: np.ndarray, window_us: int, sensor_hw:
                            tuple[int, int], nbins: int, count_cutoff: int, downsampled_by_2: bool
                            ) -> Iterator[np.ndarray]:
    """One :func:`stacked_histogram` per window of :func:`iter_event_windows`: uint8 [2 * nbins, H, W] at sensor
    resolution ``sensor_hw`` (pixels), or [2 * nbins, H // 2, W // 2] with ``downsampled_by_2``."""
    height, width = sensor_hw
    for x, y, p, t in iter_event_windows(chunks, ends_us, window_us):
        yield stacked_histogram(x, y, p, t, height, width, nbins, count_cutoff, downsampled_by_2)
