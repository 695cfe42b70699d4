"""Streaming event windows (:func:`iter_event_windows`, :func:`iter_stacked_histograms`): the same events and
frames as slicing the whole recording, for any chunking; preprocessing streamed in tiny chunks gives RVT's golden
output."""
from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for plain h5py reads)
import numpy as np
import pytest

from leod_core.cli import main as leod
from leod_core.data import preprocess
from leod_core.data.formats import RawEvents
from builders import downsample_by_2_nearest
from leod_core.data.representation import iter_event_windows, iter_stacked_histograms, stacked_histogram

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "preprocess"
HEIGHT, WIDTH = 12, 16


def random_events(seed: int, count: int, repeats: int) -> RawEvents:
    """``count`` events whose timestamps (µs) come in runs of ``repeats`` equal values (runs cross chunk edges)."""
    rng = np.random.default_rng(seed)
    t = np.repeat(np.cumsum(rng.integers(0, 900, size=-(-count // repeats))), repeats)[:count]
    return RawEvents(x=rng.integers(0, WIDTH, count), y=rng.integers(0, HEIGHT, count), p=rng.integers(0, 2, count),
                     t=t.astype(np.int64), height=HEIGHT, width=WIDTH)


def chunked(events: RawEvents, size: int) -> list[RawEvents]:
    return [RawEvents(*(getattr(events, k)[i:i + size] for k in "xypt"), height=HEIGHT, width=WIDTH)
            for i in range(0, len(events.t), size)]


def whole_windows(events: RawEvents, ends: np.ndarray, window: int) -> list[tuple[np.ndarray, ...]]:
    """The reference: ``searchsorted`` on the whole recording, as preprocessing did before it streamed."""
    lo = np.searchsorted(events.t, ends - window, side="left")
    hi = np.searchsorted(events.t, ends, side="right")
    return [tuple(getattr(events, k)[a:b] for k in "xypt") for a, b in zip(lo, hi)]


@pytest.mark.parametrize("chunk", [1, 7, 100, 10_000])
@pytest.mark.parametrize("window, step", [(5_000, 5_000), (12_000, 5_000), (3_000, 5_000)])
def test_windows_equal_slicing_the_whole_recording(chunk, window, step):
    events = random_events(seed=chunk + window, count=3_000, repeats=4)
    # ends before the first event, across the recording (overlapping, touching or gapped windows), after the last
    ends = np.arange(-2 * step, int(events.t[-1]) + 3 * step, step, dtype=np.int64)
    got = list(iter_event_windows(chunked(events, chunk), ends, window))
    expected = whole_windows(events, ends, window)
    assert len(got) == len(expected) == len(ends)
    assert sum(len(w[3]) for w in got) > len(events.t) // 2
    for g, e in zip(got, expected):
        for a, b in zip(g, e):
            np.testing.assert_array_equal(a, b)


def test_repeated_ends_and_an_empty_stream():
    events = random_events(seed=1, count=50, repeats=1)
    ends = np.asarray([events.t[10], events.t[10], events.t[40]], dtype=np.int64)
    got = [w[3] for w in iter_event_windows(chunked(events, 3), ends, 1_000)]
    assert [list(g) for g in got] == [list(e[3]) for e in whole_windows(events, ends, 1_000)]
    assert [len(w[0]) for w in iter_event_windows([], ends, 1_000)] == [0, 0, 0]


def test_decreasing_ends_are_refused():
    with pytest.raises(ValueError, match="non-decreasing"):
        list(iter_event_windows([], np.asarray([5, 3]), 1))


def test_the_stream_is_read_to_its_end():
    """A damaged tail after the last window still raises, as reading the whole file did."""
    events = random_events(seed=2, count=20, repeats=1)

    def damaged():
        yield from chunked(events, 5)
        raise ValueError("damaged tail")

    with pytest.raises(ValueError, match="damaged tail"):
        list(iter_event_windows(damaged(), np.asarray([events.t[3]]), 100))


@pytest.mark.parametrize("downsampled_by_2", [False, True])
def test_histograms_equal_the_histograms_of_whole_slices(downsampled_by_2):
    events = random_events(seed=3, count=4_000, repeats=2)
    ends = np.arange(50_000, int(events.t[-1]), 50_000, dtype=np.int64)
    got = list(iter_stacked_histograms(chunked(events, 333), ends, 50_000, (HEIGHT, WIDTH), 10, 10,
                                       downsampled_by_2))
    for frame, (x, y, p, t) in zip(got, whole_windows(events, ends, 50_000), strict=True):
        expected = stacked_histogram(x, y, p, t, HEIGHT, WIDTH, 10, 10)
        np.testing.assert_array_equal(frame, downsample_by_2_nearest(expected) if downsampled_by_2 else expected)
    assert any(frame.any() for frame in got)


def test_preprocessing_in_tiny_chunks_gives_the_golden_output(tmp_path, monkeypatch):
    """RVT's golden output, with the raw file streamed 97 events at a time (many chunks per window)."""
    monkeypatch.setattr(preprocess, "READ_CHUNK_EVENTS", 97)
    out = tmp_path / "gen1"
    assert leod(["--no-progress", "preprocess", "--raw", str(GOLDEN / "raw"), "--out", str(out),
                 "--preset", "gen1", "--workers", "1"]) == 0
    expected = sorted(p.relative_to(GOLDEN / "expected") for p in (GOLDEN / "expected").rglob("*")
                      if p.is_file() and p.suffix == ".npy")
    assert expected
    for rel in expected:
        np.testing.assert_array_equal(np.load(out / rel), np.load(GOLDEN / "expected" / rel), err_msg=str(rel))
    frames = 0
    for golden in sorted((GOLDEN / "expected").rglob("event_representations.h5")):
        rel = golden.relative_to(GOLDEN / "expected")
        with h5py.File(golden, "r") as a, h5py.File(out / rel, "r") as b:
            np.testing.assert_array_equal(b["data"][()], a["data"][()], err_msg=str(rel))
            frames += len(a["data"])
    assert frames > 0


@pytest.mark.parametrize("hw", [(12, 16), (13, 17), (7, 9)])
def test_downsampled_histogram_equals_the_full_one_downsampled(hw):
    """Computed directly from the events at odd x and y, with counts past 256 (uint8 wrap) and the cutoff."""
    rng = np.random.default_rng(sum(hw))
    count = 20_000
    x, y = rng.integers(0, hw[1], count), rng.integers(0, hw[0], count)
    x[:600], y[:600] = 3, 5                   # one cell gets > 256 events of one polarity (wraps)
    p, t = rng.integers(0, 2, count), np.sort(rng.integers(0, 50_000, count))
    for cutoff in (10, 255):
        full = stacked_histogram(x, y, p, t, *hw, nbins=10, count_cutoff=cutoff)
        half = stacked_histogram(x, y, p, t, *hw, nbins=10, count_cutoff=cutoff, downsampled_by_2=True)
        np.testing.assert_array_equal(half, downsample_by_2_nearest(full))
        assert half.shape == (20, hw[0] // 2, hw[1] // 2) and half.any()
