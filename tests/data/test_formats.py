"""RVT layout readers/writers: round trips, invariants, and clear errors on bad files."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from leod_core.data import formats
from leod_core.data.formats import FormatError, SequenceLabels


def gt_frames() -> list[np.ndarray]:
    frames = []
    for t, n in ((300_000, 2), (550_000, 0), (800_000, 1)):
        rows = np.zeros(n, dtype=formats.PROPHESEE_BBOX_DTYPE)
        rows["t"], rows["x"], rows["y"], rows["w"], rows["h"] = t, 10, 20, 30, 40
        frames.append(rows)
    return frames


def test_labels_round_trip_and_frame_slicing(tmp_path):
    labels = SequenceLabels.from_frames(gt_frames())
    np.testing.assert_array_equal(labels.objframe_idx_2_label_idx, [0, 2, 2])
    path = tmp_path / "labels_v2/labels.npz"
    formats.write_labels(path, labels)
    back = formats.read_labels(path, height=240, width=304)
    assert [len(back.frame(i)) for i in range(back.num_frames)] == [2, 0, 1]
    assert back.frame(2)["t"][0] == 800_000
    assert not list(path.parent.glob(".*tmp*"))


def test_pseudo_label_dtype_is_accepted(tmp_path):
    rows = np.zeros(3, dtype=formats.PSEUDO_BBOX_DTYPE)
    rows["class_id"] = [0, 1, formats.IGNORE_CLASS_ID]
    rows["objectness"] = [0.9, 0.5, 0.0]
    formats.write_labels(tmp_path / "l.npz", SequenceLabels(rows, np.array([0, 1], dtype=np.int64)))
    back = formats.read_labels(tmp_path / "l.npz")
    assert back.labels.dtype == formats.PSEUDO_BBOX_DTYPE
    assert back.frame(1)["class_id"].tolist() == [1, formats.IGNORE_CLASS_ID]


def test_missing_labels_file(tmp_path):
    with pytest.raises(FormatError, match="labels.npz: labels file is missing"):
        formats.read_labels(tmp_path / "labels.npz")


def test_labels_npz_missing_array(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, labels=gt_frames()[0])
    with pytest.raises(FormatError, match=r"labels.npz: missing arrays \['objframe_idx_2_label_idx'\]"):
        formats.read_labels(path)


def test_truncated_labels_npz(tmp_path):
    path = tmp_path / "labels.npz"
    formats.write_labels(path, SequenceLabels.from_frames(gt_frames()))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FormatError, match="labels.npz: not a readable .npz file"):
        formats.read_labels(path)


def test_labels_with_wrong_dtype(tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, labels=np.zeros(2, dtype=[("t", "<i8"), ("x", "<f4")]), objframe_idx_2_label_idx=np.zeros(1, np.int64))
    with pytest.raises(FormatError, match="labels.npz: labels have dtype"):
        formats.read_labels(path)


def test_labels_with_nan_boxes(tmp_path):
    frames = gt_frames()
    frames[0]["w"][1] = np.nan
    path = tmp_path / "labels.npz"
    np.savez(path, labels=np.concatenate(frames), objframe_idx_2_label_idx=np.array([0, 2, 2]))
    with pytest.raises(FormatError, match="labels.npz: boxes contain NaN"):
        formats.read_labels(path)


def test_labels_outside_frame_and_unsorted_index(tmp_path):
    path = tmp_path / "labels.npz"
    formats.write_labels(path, SequenceLabels.from_frames(gt_frames()))
    with pytest.raises(FormatError, match="outside the 50x50 frame"):
        formats.read_labels(path, height=50, width=50)
    np.savez(path, labels=np.concatenate(gt_frames()), objframe_idx_2_label_idx=np.array([0, 3, 2]))
    with pytest.raises(FormatError, match="objframe_idx_2_label_idx is not sorted"):
        formats.read_labels(path)


def test_unsorted_and_wrongly_typed_timestamps(tmp_path):
    path = tmp_path / "timestamps_us.npy"
    formats.write_npy(path, np.array([100, 300, 200], dtype=np.int64))
    with pytest.raises(FormatError, match="timestamps_us.npy: timestamps are not strictly increasing"):
        formats.read_timestamps_us(path)
    formats.write_npy(path, np.array([1.0, 2.0]))
    with pytest.raises(FormatError, match="expected int64"):
        formats.read_timestamps_us(path)


def test_pickled_npy_is_refused(tmp_path):
    path = tmp_path / "objframe_idx_2_repr_idx.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="not a readable .npy file"):
        formats.read_objframe_idx_2_repr_idx(path)


def test_repr_index_past_the_end(tmp_path):
    path = tmp_path / "objframe_idx_2_repr_idx.npy"
    formats.write_npy(path, np.array([4, 6, 8], dtype=np.int64))
    assert formats.read_objframe_idx_2_repr_idx(path, num_reprs=9).tolist() == [4, 6, 8]
    with pytest.raises(FormatError, match="index 8 points past the 8 representations"):
        formats.read_objframe_idx_2_repr_idx(path, num_reprs=8)


def write_frames(path: Path, frames: np.ndarray) -> None:
    with formats.EventReprWriter(path, *frames.shape[1:]) as writer:
        writer.append(frames[:2])
        writer.append(frames[2:])


def test_event_repr_round_trip_storage_settings(tmp_path):
    frames = np.random.default_rng(0).integers(0, 11, size=(5, 20, 8, 12), dtype=np.uint8)
    path = tmp_path / "event_representations.h5"
    write_frames(path, frames)
    np.testing.assert_array_equal(formats.read_event_repr(path, 1, 4), frames[1:4])
    with h5py.File(path, "r") as h5:
        data = h5["data"]
        assert data.chunks == (1, 20, 8, 12) and data.maxshape == (None, 20, 8, 12)
        assert str(formats.BLOSC_FILTER_ID) in data._filters


def test_failed_event_repr_write_leaves_no_file(tmp_path):
    path = tmp_path / "event_representations.h5"
    with pytest.raises(ValueError, match="frames must be uint8"):
        with formats.EventReprWriter(path, 20, 8, 12) as writer:
            writer.append(np.zeros((1, 20, 8, 12), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


def test_truncated_event_repr(tmp_path):
    frames = np.random.default_rng(1).integers(0, 11, size=(30, 20, 32, 32), dtype=np.uint8)
    path = tmp_path / "event_representations.h5"
    write_frames(path, frames)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FormatError, match="event_representations.h5: "):
        formats.read_event_repr(path)


def test_event_repr_with_wrong_dtype_or_name(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=np.zeros((1, 20, 4, 4), dtype=np.float32))
    with pytest.raises(FormatError, match=r"bad.h5: dataset 'data' must be uint8"):
        formats.read_event_repr(path)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("frames", data=np.zeros((1, 20, 4, 4), dtype=np.uint8))
    with pytest.raises(FormatError, match="bad.h5: has no dataset 'data'"):
        formats.read_event_repr(path)


def test_raw_events_round_trip_and_time_correction(tmp_path, caplog):
    events = formats.RawEvents(x=np.array([1, 2, 3]), y=np.array([0, 1, 2]), p=np.array([1, 0, 1]),
                               t=np.array([10, 5, 20]), height=4, width=6)
    path = tmp_path / "seq_td.dat.h5"
    formats.write_raw_events(path, events)
    back = formats.read_raw_events(path, default_hw=(240, 304))
    assert (back.height, back.width) == (4, 6)
    assert back.t.tolist() == [10, 10, 20]       # RVT raises decreasing times to the running maximum
    assert "raised 1 decreasing event timestamps" in caplog.text


def test_raw_events_outside_sensor_and_missing_group(tmp_path):
    path = tmp_path / "seq_td.dat.h5"
    events = formats.RawEvents(x=np.array([7]), y=np.array([0]), p=np.array([1]), t=np.array([1]), height=4, width=6)
    formats.write_raw_events(path, events)
    with pytest.raises(FormatError, match="outside the 4x6 sensor"):
        formats.read_raw_events(path, default_hw=(240, 304))
    with h5py.File(path, "w") as h5:
        h5.create_dataset("x", data=np.zeros(2))
    with pytest.raises(FormatError, match="seq_td.dat.h5: has no group 'events'"):
        formats.read_raw_events(path, default_hw=(240, 304))
