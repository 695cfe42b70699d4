"""Bad preprocessed sequences (event representations, frame index, ``labels.npz``), each opened with
:class:`SequenceReader` (what ``leod train`` / ``evaluate`` load sequences with), run through ``leod split``
or read as ``leod evaluate`` reads them."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

from leod_core.data.formats import FormatError, SequencePaths, read_timestamps_us
from leod_core.data.sequence import SequenceReader

from .common import (SENSOR_HW, TRAIN_SEQ, BadCase, Call, Pristine, replace_h5, resave_npy, set_first,
                     split_call, truncate)


def seq_copy(work: Path, pristine: Pristine) -> SequencePaths:
    """Paths of the train sequence of a copy of the pristine preprocessed dataset."""
    shutil.copytree(pristine.data, work / "data")
    return SequencePaths(work / "data" / "train" / TRAIN_SEQ)


def reader_case(damage: Callable[[SequencePaths], None], read_all: bool = False) -> Callable[[Path, Pristine], Call]:
    """Open the damaged sequence with :class:`SequenceReader` (what ``leod train`` / ``evaluate`` load
    sequences with); ``read_all`` also reads every representation."""
    def build(work: Path, pristine: Pristine) -> Call:
        seq = seq_copy(work, pristine)
        damage(seq)

        def run() -> object:
            reader = SequenceReader(seq.root)
            return reader.read_reprs(0, reader.num_reprs) if read_all else reader
        return Call(run=run)
    return build


def split_cli_case(damage: Callable[[SequencePaths], None]) -> Callable[[Path, Pristine], Call]:
    """``leod split`` on the damaged dataset (it reads every training sequence's frame index)."""
    def build(work: Path, pristine: Pristine) -> Call:
        damage(seq_copy(work, pristine))
        return split_call(work, work / "data")
    return build


def truncate_file(select: Callable[[SequencePaths], Path]) -> Callable[[SequencePaths], None]:
    return lambda seq: truncate(select(seq))


def remove_file(select: Callable[[SequencePaths], Path]) -> Callable[[SequencePaths], None]:
    return lambda seq: select(seq).unlink()


# --------------------------------------------------------------------------------------- preprocessed
def repr_file(seq: SequencePaths) -> Path:
    return seq.ev_repr_file(False)


def frame_index_file(seq: SequencePaths) -> Path:
    return seq.objframe_idx_2_repr_idx


def labels_file(seq: SequencePaths) -> Path:
    return seq.labels


def replace_repr(datasets: dict[str, np.ndarray]) -> Callable[[SequencePaths], None]:
    """Replace the event representation file by one holding just ``datasets``."""
    return lambda seq: replace_h5(repr_file(seq), datasets)


def empty_sequence(seq: SequencePaths) -> None:
    """A sequence whose recording is empty: no representation, but labels that point into it."""
    replace_repr({"data": np.zeros((0, 20, *SENSOR_HW), np.uint8)})(seq)


def damage_repr_chunk(seq: SequencePaths) -> None:
    """Overwrite the compressed bytes of one frame's chunk (a bad disk block)."""
    path = repr_file(seq)
    with h5py.File(path, "r") as h5:
        chunk = h5["data"].id.get_chunk_info(h5["data"].id.get_num_chunks() // 2)
    with open(path, "r+b") as f:
        f.seek(chunk.byte_offset)
        f.write(b"\xff" * chunk.size)


def edit_frame_index(make: Callable[[np.ndarray], np.ndarray], allow_pickle: bool = False
                     ) -> Callable[[SequencePaths], None]:
    """Replace ``objframe_idx_2_repr_idx.npy`` by ``make(current indices)``."""
    return lambda seq: resave_npy(frame_index_file(seq), make, allow_pickle)


def unsorted_repr_timestamps(work: Path, pristine: Pristine) -> Call:
    """``timestamps_us.npy`` with two representations swapped, read as ``leod evaluate`` reads it."""
    seq = seq_copy(work, pristine)
    resave_npy(seq.repr_timestamps, lambda ts: ts[[1, 0, *range(2, len(ts))]])
    return Call(run=lambda: read_timestamps_us(seq.repr_timestamps))


# ------------------------------------------------------------------------------------------------ labels
def labels_npz(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays of ``labels.npz``: the label rows and the first row of each labeled frame."""
    return {"labels": labels, "objframe_idx_2_label_idx": starts}


def edit_labels(edit: Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]) -> Callable[[SequencePaths], None]:
    """Rewrite ``labels.npz`` with ``np.savez`` (as RVT writes it) from ``edit(labels, frame starts)``."""
    def damage(seq: SequencePaths) -> None:
        with np.load(seq.labels, allow_pickle=False) as npz:
            labels, starts = npz["labels"].copy(), npz["objframe_idx_2_label_idx"].copy()
        np.savez(seq.labels, **edit(labels, starts))
    return damage


def with_label(field: str, value: float) -> Callable[[np.ndarray, np.ndarray], dict[str, np.ndarray]]:
    return lambda labels, starts: labels_npz(set_first(field, value)(labels), starts)


def second_frame_before_first(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    end = starts[2] if len(starts) > 2 else len(labels)
    labels["t"][starts[1]:end] = labels["t"][0] - 1
    return labels_npz(labels, starts)


def two_times_in_one_frame(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    counts = np.diff(np.append(starts, len(labels)))
    frame = int(np.argmax(counts >= 2))
    assert counts[frame] >= 2, "the pristine labels have a frame with two boxes"
    labels["t"][starts[frame] + 1] += 1
    return labels_npz(labels, starts)


def without_frame_index(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return {"labels": labels}


def labels_as_floats(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return labels_npz(np.stack([labels[k].astype(np.float32) for k in ("x", "y", "w", "h")], axis=-1), starts)


def labels_as_column(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return labels_npz(labels[:, None], starts)


def first_frame_index_shifted(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return labels_npz(labels, starts + 1)


def one_frame_dropped(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return labels_npz(labels[:starts[-1]], starts[:-1])


def rows_without_frames(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
    return labels_npz(labels, starts[:0])


def pickled_labels(seq: SequencePaths) -> None:
    with np.load(seq.labels, allow_pickle=False) as npz:
        starts = npz["objframe_idx_2_label_idx"].copy()
    np.savez(seq.labels, **labels_npz(np.array([{"x": 1.0}], dtype=object), starts))


# -------------------------------------------------------------------------------------------------- cases
_H5, _LAB, _IDX = r"event_representations\.h5", r"labels_v2/labels\.npz", r"objframe_idx_2_repr_idx\.npy"

PREPROCESSED_CASES = [
    # preprocessed sequence: SequenceReader (leod train / evaluate), leod split, read_timestamps_us
    BadCase("repr-h5-truncated", "preprocessed", reader_case(truncate_file(repr_file)), FormatError,
            _H5 + r": not a readable HDF5 file"),
    BadCase("repr-h5-missing", "preprocessed", reader_case(remove_file(repr_file)), FormatError,
            _H5 + r": event representation file is missing"),
    BadCase("repr-h5-no-data-dataset", "preprocessed",
            reader_case(replace_repr({"frames": np.zeros((1, 20, *SENSOR_HW), np.uint8)})), FormatError,
            _H5 + r": has no dataset 'data'"),
    BadCase("repr-h5-float32", "preprocessed",
            reader_case(replace_repr({"data": np.zeros((10, 20, *SENSOR_HW), np.float32)})), FormatError,
            _H5 + r": dataset 'data' must be uint8 \[T, 20, H, W\], got float32"),
    BadCase("repr-h5-10-channels", "preprocessed",
            reader_case(replace_repr({"data": np.zeros((10, 10, *SENSOR_HW), np.uint8)})), FormatError,
            _H5 + r": dataset 'data' must be uint8 \[T, 20, H, W\], got uint8 \(10, 10, 64, 96\)"),
    BadCase("repr-h5-damaged-chunk", "preprocessed", reader_case(damage_repr_chunk, read_all=True), FormatError,
            _H5 + r": cannot read frames 0:10"),
    BadCase("repr-empty-sequence", "preprocessed", reader_case(empty_sequence), FormatError,
            _IDX + r": index \d+ points past the 0 representations"),
    BadCase("frame-index-past-end", "preprocessed", reader_case(edit_frame_index(lambda a: a + 100)), FormatError,
            _IDX + r": index \d+ points past the 10 representations"),
    BadCase("frame-index-float", "preprocessed", split_cli_case(edit_frame_index(lambda a: a.astype(np.float64))),
            FormatError, _IDX + r": expected non-empty int64 \[F\] indices, got float64"),
    BadCase("frame-index-unsorted", "preprocessed", split_cli_case(edit_frame_index(lambda a: a[::-1].copy())),
            FormatError, _IDX + r": representation indices are not sorted, unique and non-negative"),
    BadCase("frame-index-empty", "preprocessed", split_cli_case(edit_frame_index(lambda a: a[:0])), FormatError,
            _IDX + r": expected non-empty int64 \[F\] indices"),
    BadCase("frame-index-pickled", "preprocessed",
            split_cli_case(edit_frame_index(lambda a: np.array([a, None], dtype=object), allow_pickle=True)),
            FormatError, _IDX + r": not a readable \.npy file"),
    BadCase("frame-index-missing", "preprocessed", split_cli_case(remove_file(frame_index_file)), FormatError,
            _IDX + r": file is missing"),
    BadCase("repr-timestamps-unsorted", "preprocessed", unsorted_repr_timestamps, FormatError,
            r"stacked_histogram_dt=50_nbins=10/timestamps_us\.npy: timestamps are not strictly increasing"),
    # labels.npz: SequenceReader
    BadCase("labels-truncated", "labels", reader_case(truncate_file(labels_file)), FormatError,
            _LAB + r": not a readable \.npz file"),
    BadCase("labels-missing-file", "labels", reader_case(remove_file(labels_file)), FormatError,
            _LAB + r": labels file is missing"),
    BadCase("labels-missing-frame-index", "labels", reader_case(edit_labels(without_frame_index)), FormatError,
            _LAB + r": missing arrays \['objframe_idx_2_label_idx'\]"),
    BadCase("labels-pickled-objects", "labels", reader_case(pickled_labels), FormatError,
            _LAB + r": not a readable \.npz file \(Object arrays cannot be loaded"),
    BadCase("labels-plain-float-array", "labels", reader_case(edit_labels(labels_as_floats)), FormatError,
            _LAB + r": labels have dtype float32, expected the Prophesee or the LEOD pseudo-label dtype"),
    BadCase("labels-2d", "labels", reader_case(edit_labels(labels_as_column)), FormatError,
            _LAB + r": labels must be a 1-D array of rows, got shape \(\d+, 1\)"),
    BadCase("labels-nan-box", "labels", reader_case(edit_labels(with_label("y", np.nan))), FormatError,
            _LAB + r": boxes contain NaN or infinite coordinates"),
    BadCase("labels-inf-box", "labels", reader_case(edit_labels(with_label("w", -np.inf))), FormatError,
            _LAB + r": boxes contain NaN or infinite coordinates"),
    BadCase("labels-negative-height", "labels", reader_case(edit_labels(with_label("h", -1.0))), FormatError,
            _LAB + r": boxes have negative width or height"),
    BadCase("labels-frames-out-of-time-order", "labels", reader_case(edit_labels(second_frame_before_first)),
            FormatError, _LAB + r": timestamps \(field t\) of the labeled frames are not increasing: frame 1"),
    BadCase("labels-two-times-in-one-frame", "labels", reader_case(edit_labels(two_times_in_one_frame)),
            FormatError, _LAB + r": labeled frame \d+ holds rows with different timestamps \(field t\)"),
    BadCase("labels-frame-index-not-from-0", "labels", reader_case(edit_labels(first_frame_index_shifted)),
            FormatError, _LAB + r": objframe_idx_2_label_idx is not sorted from 0 within the labels"),
    BadCase("labels-frame-count-mismatch", "labels", reader_case(edit_labels(one_frame_dropped)), FormatError,
            _LAB + r": 3 labeled frames, but objframe_idx_2_repr_idx has 4"),
    BadCase("labels-rows-without-frames", "labels", reader_case(edit_labels(rows_without_frames)), FormatError,
            _LAB + r": \d+ label rows but no labeled frame"),
]
