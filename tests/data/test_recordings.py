"""Tests of leod_core.data.recordings: DAT / EVT 2.0 / EVT 3.0 round trips on synthetic-camera events, chunked
reading, bounded memory, time-base reconstruction, EVT3 vectors and wraparound, format detection, and a
cross-check against independent decoders."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from leod_core.data.formats import FormatError, RawEvents, raw_paths, read_raw_events
from leod_core.data.recordings import (detect_format, iter_recording, open_recording, read_recording,
                                       write_evt3_chunks, write_recording)
from leod_core.data.recordings import evt2, evt3
from leod_core.data.synth import SynthConfig, generate_dataset, sequence_name

SMALL = SynthConfig(height=32, width=48, duration_s=1.5, num_train=1, num_val=1, num_test=1,
                    car_width_px=(10.0, 18.0), ped_height_px=(10.0, 16.0), initial_objects_mean=2.0)
SUFFIX = {"dat": "_td.dat", "evt2": ".raw", "evt3": ".raw"}
FORMATS = tuple(SUFFIX)


@pytest.fixture(scope="module")
def camera(tmp_path_factory) -> RawEvents:
    """Events of one sequence of a small synthetic dataset, as preprocessing reads them."""
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(root, SMALL, progress=False)
    events_path, _ = raw_paths(root / "train", sequence_name("train", 0))
    return read_raw_events(events_path, (SMALL.height, SMALL.width))


def _events(x, y, p, t, height=32, width=48) -> RawEvents:
    return RawEvents(x=np.asarray(x, np.int64), y=np.asarray(y, np.int64), p=np.asarray(p, np.int64),
                     t=np.asarray(t, np.int64), height=height, width=width)


def _assert_same(a: RawEvents, b: RawEvents) -> None:
    assert (a.height, a.width) == (b.height, b.width)
    for k in "xypt":
        np.testing.assert_array_equal(np.asarray(getattr(a, k), np.int64), np.asarray(getattr(b, k), np.int64),
                                      err_msg=k)


def _write(tmp_path, events: RawEvents, fmt: str, name: str = "rec"):
    path = tmp_path / f"{name}_{fmt}{SUFFIX[fmt]}"
    write_recording(path, events, fmt)
    return path


def _tiled(events: RawEvents, copies: int) -> RawEvents:
    """``copies`` back-to-back repetitions of ``events`` (timestamps shifted), for a longer recording."""
    span = int(events.t[-1]) + 1
    t = np.concatenate([events.t + i * span for i in range(copies)])
    return _events(*(np.tile(getattr(events, k), copies) for k in "xyp"), t, events.height, events.width)


def _raw_file(path, header: str, words: np.ndarray):
    path.write_bytes(header.encode() + words.tobytes())
    return path


# ----------------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("fmt", FORMATS)
def test_write_then_read_gives_the_camera_events_back(tmp_path, camera, fmt):
    assert len(camera.t) > 1000
    path = _write(tmp_path, camera, fmt)
    assert detect_format(path) == fmt
    recording = open_recording(path)
    assert recording.format == fmt and (recording.height, recording.width) == (SMALL.height, SMALL.width)
    decoded = read_recording(path)
    _assert_same(decoded, camera)
    assert decoded.x.dtype == np.uint16 and decoded.p.dtype == np.int8 and decoded.t.dtype == np.int64


@pytest.mark.parametrize("fmt", FORMATS)
def test_chunked_reading_equals_whole_reading(tmp_path, camera, fmt):
    path = _write(tmp_path, camera, fmt)
    whole = read_recording(path)
    for max_events in (1, 7, 12, 13, 1000, 10 ** 7):
        chunks = list(iter_recording(path, max_events))
        assert all(0 < len(c.t) <= max_events for c in chunks)
        assert len(chunks) >= -(-len(whole.t) // max_events)
        _assert_same(RawEvents(*(np.concatenate([getattr(c, k) for c in chunks]) for k in "xypt"),
                               height=whole.height, width=whole.width), whole)


@pytest.mark.parametrize("fmt", FORMATS)
def test_streaming_memory_is_bounded_by_the_chunk_not_the_file(tmp_path, camera, fmt):
    events = _tiled(camera, 100)
    path = _write(tmp_path, events, fmt)
    max_events, count = 2000, 0
    recording = open_recording(path)
    tracemalloc.start()
    try:
        for chunk in recording.chunks(max_events):
            assert len(chunk.t) <= max_events
            count += len(chunk.t)
        _, streaming_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == len(events.t) > 100 * max_events
    # a chunk of 2000 events: words plus x, y, p, t and temporaries, far below the file or its events
    assert streaming_peak < 1_000_000 < 13 * len(events.t)


def test_empty_recordings_read_as_no_events(tmp_path):
    for fmt in FORMATS:
        path = _write(tmp_path, _events([], [], [], []), fmt)
        assert list(open_recording(path).chunks(10)) == []
        assert len(read_recording(path).t) == 0


# ----------------------------------------------------------------------------------------------- EVT2 time
def test_evt2_rebuilds_time_from_time_high_and_lsb(tmp_path):
    t = [0, 63, 64, 65, 127, 128, 5_000_000, (1 << 34) + 70]     # the last one past the 34-bit wrap
    events = _events([0, 1, 2, 3, 4, 5, 6, 7], [1] * 8, [0, 1] * 4, t)
    path = _write(tmp_path, events, "evt2")
    recording = open_recording(path)
    words = np.fromfile(path, "<u4", offset=recording.data_offset)
    kinds = words >> evt2.TYPE_SHIFT
    highs = words[kinds == evt2.EV_TIME_HIGH] & evt2.TIME_HIGH_MASK
    # one EV_TIME_HIGH per change of t >> 6, and an extra one to cross the 28-bit wrap in legal steps
    assert highs.tolist() == [0, 1, 2, 5_000_000 >> 6, (5_000_000 >> 6) + (1 << 27) - 1, 1]
    assert np.count_nonzero(kinds <= evt2.CD_ON) == 8
    lsb = (words[kinds <= evt2.CD_ON] >> evt2.T_LSB_SHIFT) & evt2.T_LSB_MASK
    assert lsb.tolist() == [v & 63 for v in t]
    _assert_same(read_recording(path), events)


def test_evt2_skips_trigger_and_other_words_and_corrects_late_lsb(tmp_path, caplog):
    high = (evt2.EV_TIME_HIGH << 28) | 10
    cd = lambda kind, lsb, x, y: (kind << 28) | (lsb << 22) | (x << 11) | y  # noqa: E731
    words = np.array([high, cd(1, 5, 3, 4), (evt2.EXT_TRIGGER << 28) | (7 << 22) | 1, cd(0, 9, 5, 6),
                      (evt2.OTHERS << 28), (evt2.CONTINUED << 28) | 123, cd(1, 2, 7, 8)], "<u4")
    path = _raw_file(tmp_path / "hand.raw", "% evt 2.0\n% geometry 48x32\n% end\n", words)
    decoded = read_recording(path)
    assert decoded.x.tolist() == [3, 5, 7] and decoded.y.tolist() == [4, 6, 8] and decoded.p.tolist() == [1, 0, 1]
    assert decoded.t.tolist() == [645, 649, 649]     # 640 + 2 came late: raised to the running maximum
    assert "raised 1 decreasing event timestamps" in caplog.text


# ----------------------------------------------------------------------------------------------- EVT3
def _w3(kind: int, payload: int) -> int:
    return (kind << evt3.TYPE_SHIFT) | payload


def test_evt3_vectors_decode_to_consecutive_x(tmp_path):
    words = np.array([_w3(evt3.EVT_TIME_HIGH, 1), _w3(evt3.EVT_TIME_LOW, 5), _w3(evt3.EVT_ADDR_Y, 9),
                      _w3(evt3.VECT_BASE_X, (1 << 11) | 10), _w3(evt3.VECT_12, 0b1000_0000_0101),
                      _w3(evt3.VECT_8, 0b1000_0001),                     # base is now 22
                      _w3(evt3.CONTINUED_4, 3), _w3(evt3.EVT_TIME_LOW, 6), _w3(evt3.EVT_ADDR_X, 40),
                      _w3(evt3.VECT_BASE_X, 0), _w3(evt3.VECT_12, 0xFFF), _w3(evt3.EXT_TRIGGER, 1),
                      _w3(evt3.OTHERS, 0), _w3(evt3.CONTINUED_12, 0xABC)], "<u2")
    path = _raw_file(tmp_path / "vect.raw", "% format EVT3;height=32;width=48\n% end\n", words)
    expected_x = [10, 12, 21, 22, 29, 40] + list(range(12))
    expected_p = [1] * 5 + [0] + [0] * 12
    expected_t = [4096 + 5] * 5 + [4096 + 6] * 13
    for max_events in (1, 5, 12, 100):
        chunks = list(iter_recording(path, max_events))
        assert all(len(c.t) <= max_events for c in chunks)
        got = RawEvents(*(np.concatenate([getattr(c, k) for c in chunks]) for k in "xypt"), height=32, width=48)
        _assert_same(got, _events(expected_x, [9] * 18, expected_p, expected_t))


def test_evt3_time_high_wraps_every_2_pow_24_us(tmp_path):
    period = 1 << 24
    t = [100, period - 1, period + 3, 3 * period + 17, 3 * period + 17, 3 * period + 9000, 10 * period]
    events = _events([1, 2, 3, 4, 5, 6, 7], [0, 0, 1, 1, 2, 2, 3], [1, 0, 1, 0, 1, 0, 1], t)
    path = _write(tmp_path, events, "evt3")
    words = np.fromfile(path, "<u2", offset=open_recording(path).data_offset)
    highs = words[(words >> evt3.TYPE_SHIFT) == evt3.EVT_TIME_HIGH] & evt3.PAYLOAD_MASK
    # one EVT_TIME_HIGH per 4096 µs from the first event on, wrapping from 4095 to 0 every 2**24 µs
    assert np.array_equal(highs, np.arange(t[0] >> 12, (t[-1] >> 12) + 1) % (1 << 12))
    _assert_same(read_recording(path), events)
    for max_events in (1, 3):
        assert np.concatenate([c.t for c in iter_recording(path, max_events)]).tolist() == t


# ----------------------------------------------------------------------------------------------- detection
def test_detect_format_on_each_format_and_rvt_h5(tmp_path, camera):
    for fmt in FORMATS:
        assert detect_format(_write(tmp_path, camera, fmt)) == fmt
    h5_path = tmp_path / "seq_td.dat.h5"
    write_recording(h5_path, camera, "h5")
    assert detect_format(h5_path) == "h5"
    _assert_same(read_recording(h5_path), camera)
    assert [len(c.t) for c in iter_recording(h5_path, 1000)][0] == 1000


def test_detect_format_rejects_an_unknown_file_naming_the_supported_formats(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    with pytest.raises(FormatError, match="supported formats: Prophesee DAT") as err:
        detect_format(path)
    assert str(path) in str(err.value)
    with pytest.raises(FormatError, match="unrecognised"):
        open_recording(path)


# ----------------------------------------------------------------------------------------------- cross-check
def _expelliarmus_read(path, fmt):
    wizard = pytest.importorskip("expelliarmus", reason="expelliarmus (independent DAT/EVT2 decoder) is not "
                                                        "installed").Wizard
    return wizard(encoding=fmt, fpath=str(path)).read()


@pytest.mark.parametrize("fmt", ["dat", "evt2"])
def test_expelliarmus_decodes_our_dat_and_evt2_event_for_event(tmp_path, camera, fmt):
    path = _write(tmp_path, camera, fmt)
    theirs = _expelliarmus_read(path, fmt)
    ours = read_recording(path)
    assert len(theirs) == len(ours.t) == len(camera.t)
    for k in "xypt":
        np.testing.assert_array_equal(theirs[k].astype(np.int64), getattr(ours, k).astype(np.int64), err_msg=k)


def test_evt3_package_decodes_our_evt3_event_for_event(tmp_path, camera):
    decoder = pytest.importorskip("evt3", reason="the evt3 package (independent EVT3 decoder) is not installed")
    period = 1 << 24     # add a stretch past the 24-bit time wrap
    events = RawEvents(*(np.concatenate([getattr(camera, k), getattr(camera, k)]) for k in "xyp"),
                       t=np.concatenate([camera.t, camera.t + 2 * period]), height=camera.height, width=camera.width)
    path = _write(tmp_path, events, "evt3")
    theirs = decoder.decode_file(str(path))
    ours = read_recording(path)
    assert (theirs.sensor_height, theirs.sensor_width) == (ours.height, ours.width)
    for k, theirs_k in (("x", theirs.x), ("y", theirs.y), ("p", theirs.polarity), ("t", theirs.timestamp)):
        np.testing.assert_array_equal(np.asarray(theirs_k).astype(np.int64), getattr(ours, k).astype(np.int64),
                                      err_msg=k)


@pytest.mark.parametrize("sizes", [(1,), (7, 1, 500), (2000,)])
def test_evt3_written_in_chunks_decodes_to_the_same_events(tmp_path, camera, sizes):
    """A long recording is written chunk by chunk (bounded memory); chunk edges inside one time high, across
    several, and past the 24-bit wrap decode to the events (ours and the evt3 package)."""
    events = _tiled(camera, 3)
    events = RawEvents(events.x, events.y, events.p, events.t + np.where(np.arange(len(events.t)) >=
                       len(events.t) // 2, 1 << 24, 0), events.height, events.width)
    bounds = np.cumsum([0, *sizes])
    bounds = np.unique(np.concatenate([bounds[bounds < len(events.t)], np.arange(bounds[-1], len(events.t), 997),
                                       [len(events.t)]]))
    chunks = [RawEvents(*(getattr(events, k)[a:b] for k in "xypt"), events.height, events.width)
              for a, b in zip(bounds[:-1], bounds[1:])]
    path = tmp_path / "chunked.raw"
    write_evt3_chunks(path, chunks, (events.height, events.width))
    _assert_same(read_recording(path), events)
    decoder = pytest.importorskip("evt3", reason="the evt3 package (independent EVT3 decoder) is not installed")
    np.testing.assert_array_equal(np.asarray(decoder.decode_file(str(path)).timestamp).astype(np.int64), events.t)
    with pytest.raises(ValueError, match="non-decreasing across chunks"):
        write_evt3_chunks(tmp_path / "bad.raw", chunks[::-1][:2], (events.height, events.width))
    assert not (tmp_path / "bad.raw").exists()
