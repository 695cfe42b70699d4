"""Readers and writers for RVT's dataset layout (raw and preprocessed), byte-compatible with RVT/LEOD.

Preprocessed sequence directory (``{root}/{split}/{seq}/``)::

    event_representations_v2/stacked_histogram_dt=50_nbins=10/
        event_representations.h5            # dataset ``data``: uint8 [T, 20, H, W], one frame per chunk,
                                            # Blosc zstd (HDF5 filter 32001); gen4: ..._ds2_nearest.h5
        objframe_idx_2_repr_idx.npy         # int64 [F]: representation index of each labeled frame
        timestamps_us.npy                   # int64 [T]: end time (µs) of each representation
    labels_v2/labels.npz                    # ``labels`` (structured) + ``objframe_idx_2_label_idx`` int64 [F]
    labels_v2/timestamps_us.npy             # int64 [F]: time (µs) of each labeled frame

Raw sequence (input of preprocessing): ``{split}/{seq}_td.dat.h5`` (group ``events``: ``x``, ``y``, ``p``,
``t`` in µs, optional ``height``/``width``) beside ``{split}/{seq}_bbox.npy`` (Prophesee box dtype).

Every reader validates what it opens and raises :class:`FormatError` naming the file and the problem.
Every writer writes to a temporary name and renames.
"""
from __future__ import annotations

import io
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from leod_core.data.atomic import atomic_path

log = logging.getLogger(__name__)

PathLike = str | os.PathLike

SPLITS = ("train", "val", "test")
#: Class names by dataset, in class-id order (RVT's label maps; the synthetic camera mirrors Gen1).
DATASET_CLASSES = {"gen1": ("car", "pedestrian"), "gen4": ("pedestrian", "two-wheeler", "car"),
                   "synth": ("car", "pedestrian")}
EV_REPR_NAME = "stacked_histogram_dt=50_nbins=10"
EV_REPR_CHANNELS = 20
IGNORE_CLASS_ID = 1024
BLOSC_FILTER_ID = 32001

#: Prophesee ground-truth box dtype (raw ``*_bbox.npy`` and RVT's ``labels.npz``), itemsize 40.
PROPHESEE_BBOX_DTYPE = np.dtype({
    "names": ["t", "x", "y", "w", "h", "class_id", "track_id", "class_confidence"],
    "formats": ["<u8", "<f4", "<f4", "<f4", "<f4", "<u4", "<u4", "<f4"],
    "offsets": [0, 8, 12, 16, 20, 24, 28, 32],
    "itemsize": 40,
})
#: LEOD's pseudo-label dtype (``BBOX_DTYPE`` in LEOD), itemsize 40. Pseudo rows have ``t == 0``.
PSEUDO_BBOX_DTYPE = np.dtype({
    "names": ["t", "x", "y", "w", "h", "class_id", "class_confidence", "objectness"],
    "formats": ["<i8", "<f4", "<f4", "<f4", "<f4", "<u4", "<f4", "<f4"],
    "offsets": [0, 8, 12, 16, 20, 24, 28, 32],
    "itemsize": 40,
})
LABEL_DTYPES = (PROPHESEE_BBOX_DTYPE, PSEUDO_BBOX_DTYPE)
#: Slack (pixels) of the frame check of :func:`check_boxes`, for float32 rounding of cropped box corners.
BOX_FRAME_TOLERANCE_PX = 1e-3
#: Fields of a raw box file that must hold integers (the others, coordinates, may be any number type).
RAW_BOX_INTEGER_FIELDS = ("t", "class_id")


def same_fields(dtype: np.dtype, reference: np.dtype) -> bool:
    """True if ``dtype`` has the fields of ``reference`` in order with the same types, ignoring padding.

    RVT's ``labels.npz`` holds the packed 36-byte form that ``np.concatenate`` makes of the 40-byte
    Prophesee dtype; both are the same labels.
    """
    return dtype.names == reference.names and all(
        dtype.fields[name][0] == reference.fields[name][0] for name in reference.names)
_BOX_FIELDS = ("x", "y", "w", "h")


class FormatError(ValueError):
    """A file does not follow the expected layout; the message names the file and the problem."""

    def __init__(self, path: PathLike, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem


def zero_padded_copy(array: np.ndarray) -> np.ndarray:
    """Copy of a structured array with its padding bytes zeroed, so equal boxes give identical files."""
    out = np.zeros(array.shape, dtype=array.dtype)
    for name in array.dtype.names:
        out[name] = array[name]
    return out


# ----------------------------------------------------------------------------------------------- paths
@dataclass(frozen=True)
class SequencePaths:
    """Paths of one preprocessed sequence directory ``{root}/{split}/{seq}``."""

    root: Path

    @property
    def ev_repr_dir(self) -> Path:
        return self.root / "event_representations_v2" / EV_REPR_NAME

    def ev_repr_file(self, downsampled_by_2: bool) -> Path:
        suffix = "_ds2_nearest" if downsampled_by_2 else ""
        return self.ev_repr_dir / f"event_representations{suffix}.h5"

    @property
    def objframe_idx_2_repr_idx(self) -> Path:
        return self.ev_repr_dir / "objframe_idx_2_repr_idx.npy"

    @property
    def repr_timestamps(self) -> Path:
        return self.ev_repr_dir / "timestamps_us.npy"

    @property
    def labels(self) -> Path:
        return self.root / "labels_v2" / "labels.npz"

    @property
    def label_timestamps(self) -> Path:
        return self.root / "labels_v2" / "timestamps_us.npy"


def raw_paths(split_dir: PathLike, seq: str, gen4_style: bool = False) -> tuple[Path, Path]:
    """(events h5, boxes npy) of a raw sequence: ``{seq}_td.dat.h5`` (gen1) or ``{seq}_td.h5`` (gen4)."""
    split_dir = Path(split_dir)
    events = split_dir / f"{seq}_td{'' if gen4_style else '.dat'}.h5"
    return events, split_dir / f"{seq}_bbox.npy"


# ------------------------------------------------------------------------------------------ npy helpers
def _load_npy(path: PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "file is missing")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FormatError(path, f"not a readable .npy file ({err})") from err


def write_npy(path: PathLike, array: np.ndarray) -> None:
    """Save one array atomically in .npy format."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def read_timestamps_us(path: PathLike) -> np.ndarray:
    """Read an int64 [N] array of strictly increasing timestamps (µs)."""
    ts = _load_npy(path)
    if ts.dtype != np.int64 or ts.ndim != 1:
        raise FormatError(path, f"expected int64 [N] timestamps, got {ts.dtype} {ts.shape}")
    if ts.size > 1 and np.any(np.diff(ts) <= 0):
        raise FormatError(path, "timestamps are not strictly increasing")
    return ts


def read_objframe_idx_2_repr_idx(path: PathLike, num_reprs: int | None = None) -> np.ndarray:
    """Read int64 [F] representation indices of labeled frames (strictly increasing, < ``num_reprs``)."""
    idx = _load_npy(path)
    if idx.dtype != np.int64 or idx.ndim != 1 or idx.size == 0:
        raise FormatError(path, f"expected non-empty int64 [F] indices, got {idx.dtype} {idx.shape}")
    if np.any(np.diff(idx) <= 0) or idx[0] < 0:
        raise FormatError(path, "representation indices are not sorted, unique and non-negative")
    if num_reprs is not None and idx[-1] >= num_reprs:
        raise FormatError(path, f"index {int(idx[-1])} points past the {num_reprs} representations")
    return idx


# ---------------------------------------------------------------------------------------------- labels
def check_boxes(path: PathLike, boxes: np.ndarray, height: int | None = None,
                width: int | None = None) -> None:
    """Raise if boxes have NaN/inf/negative sizes or (with ``height``/``width``) leave the frame [0, W-1]×[0, H-1]."""
    coords = np.stack([boxes[k].astype(np.float64) for k in _BOX_FIELDS], axis=-1) if len(boxes) else np.zeros((0, 4))
    if not np.all(np.isfinite(coords)):
        raise FormatError(path, "boxes contain NaN or infinite coordinates")
    if np.any(coords[:, 2:] < 0):
        raise FormatError(path, "boxes have negative width or height")
    if height is not None and width is not None and len(coords):
        x, y, w, h = coords.T
        tol = BOX_FRAME_TOLERANCE_PX
        if np.any(x < -tol) or np.any(y < -tol) or np.any(x + w > width - 1 + tol) or np.any(y + h > height - 1 + tol):
            raise FormatError(path, f"boxes lie outside the {height}x{width} frame")


@dataclass(frozen=True)
class SequenceLabels:
    """Labels of one sequence in RVT's ``labels.npz`` layout.

    Invariants: ``labels`` has the fields of the Prophesee or the pseudo dtype (padded or packed); ``objframe_idx_2_label_idx`` is int64 [F],
    starts at 0 and is non-decreasing; frame ``i`` owns rows ``[idx[i], idx[i+1])`` (the last frame owns
    the rest), and every row of a frame with ``t != 0`` carries the same timestamp.
    """

    labels: np.ndarray
    objframe_idx_2_label_idx: np.ndarray

    @property
    def num_frames(self) -> int:
        return len(self.objframe_idx_2_label_idx)

    def frame(self, objframe_idx: int) -> np.ndarray:
        """Rows (structured array view) of labeled frame ``objframe_idx``."""
        start = int(self.objframe_idx_2_label_idx[objframe_idx])
        end = (int(self.objframe_idx_2_label_idx[objframe_idx + 1]) if objframe_idx + 1 < self.num_frames
               else len(self.labels))
        return self.labels[start:end]

    @classmethod
    def from_frames(cls, frames: list[np.ndarray]) -> "SequenceLabels":
        """Build from per-frame row arrays (all of one dtype), in frame order."""
        starts = np.cumsum([0] + [len(f) for f in frames[:-1]], dtype=np.int64)
        return cls(labels=np.concatenate(frames), objframe_idx_2_label_idx=starts)

    def validate(self, path: PathLike, height: int | None = None, width: int | None = None) -> None:
        """Raise :class:`FormatError` naming ``path`` unless the invariants of the class docstring hold and the
        boxes pass :func:`check_boxes`; ground-truth frames (``t != 0``) must be in increasing time order."""
        if not any(same_fields(self.labels.dtype, ref) for ref in LABEL_DTYPES):
            raise FormatError(path, f"labels have dtype {self.labels.dtype}, expected the Prophesee or "
                                    "the LEOD pseudo-label dtype")
        if self.labels.ndim != 1:
            raise FormatError(path, f"labels must be a 1-D array of rows, got shape {self.labels.shape}")
        idx = self.objframe_idx_2_label_idx
        if idx.dtype != np.int64 or idx.ndim != 1:
            raise FormatError(path, f"objframe_idx_2_label_idx must be int64 [F], got {idx.dtype} {idx.shape}")
        if idx.size and (idx[0] != 0 or np.any(np.diff(idx) < 0) or idx[-1] > len(self.labels)):
            raise FormatError(path, "objframe_idx_2_label_idx is not sorted from 0 within the labels")
        if idx.size == 0 and len(self.labels):
            raise FormatError(path, f"{len(self.labels)} label rows but no labeled frame (objframe_idx_2_label_idx "
                                    "is empty)")
        check_boxes(path, self.labels, height, width)
        check_frame_timestamps(path, self.labels["t"], idx)


def check_frame_timestamps(path: PathLike, t: np.ndarray, objframe_idx_2_label_idx: np.ndarray) -> None:
    """Raise unless the ground-truth rows (``t != 0``) of each labeled frame share one timestamp and those
    timestamps strictly increase from frame to frame (pseudo rows, ``t == 0``, are not checked)."""
    counts = np.diff(np.append(objframe_idx_2_label_idx, len(t)))
    frame_of_row = np.repeat(np.arange(len(objframe_idx_2_label_idx)), counts)
    is_gt = t != 0
    gt_t, gt_frame = t[is_gt].astype(np.int64), frame_of_row[is_gt]
    same_frame = np.diff(gt_frame) == 0
    steps = np.diff(gt_t)
    mixed = same_frame & (steps != 0)
    if np.any(mixed):
        raise FormatError(path, f"labeled frame {int(gt_frame[np.argmax(mixed)])} holds rows with different "
                                "timestamps (field t)")
    backwards = ~same_frame & (steps <= 0)
    if np.any(backwards):
        frame = int(gt_frame[np.argmax(backwards) + 1])
        raise FormatError(path, f"timestamps (field t) of the labeled frames are not increasing: frame {frame} is "
                                f"not later than the frame before it")


def read_labels(path: PathLike, height: int | None = None, width: int | None = None) -> SequenceLabels:
    """Read and validate ``labels_v2/labels.npz`` (boxes checked against the frame when ``height``/``width`` given)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "labels file is missing")
    try:  # our own handle: np.load leaks the one it opens when the zip is unreadable
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
            missing = {"labels", "objframe_idx_2_label_idx"} - set(npz.files)
            if missing:
                raise FormatError(path, f"missing arrays {sorted(missing)}")
            seq_labels = SequenceLabels(npz["labels"], npz["objframe_idx_2_label_idx"])
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        if isinstance(err, FormatError):
            raise
        raise FormatError(path, f"not a readable .npz file ({err})") from err
    seq_labels.validate(path, height, width)
    return seq_labels


#: Zip member timestamp of the .npz files we write (the zip format's epoch), so equal arrays give equal bytes.
_ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An uncompressed ``.npz`` as ``np.savez`` writes it, with fixed member timestamps (deterministic bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
    return buf.getvalue()


def labels_npz_bytes(seq_labels: SequenceLabels) -> bytes:
    """``labels.npz`` content of ``seq_labels`` (padding bytes zeroed, deterministic)."""
    return npz_bytes({"labels": zero_padded_copy(seq_labels.labels),
                      "objframe_idx_2_label_idx": np.ascontiguousarray(seq_labels.objframe_idx_2_label_idx,
                                                                       dtype=np.int64)})


def write_labels(path: PathLike, seq_labels: SequenceLabels) -> None:
    """Validate and save ``labels.npz`` atomically (uncompressed, readable as RVT's ``np.savez`` output)."""
    seq_labels.validate(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(labels_npz_bytes(seq_labels))


# ------------------------------------------------------------------------------ event representations
def blosc_zstd() -> hdf5plugin.Blosc:
    """RVT's compression: Blosc (filter 32001) with zstd, level 1, byte shuffle."""
    return hdf5plugin.Blosc(cname="zstd", clevel=1, shuffle=hdf5plugin.Blosc.SHUFFLE)


class EventReprWriter:
    """Append-only writer of a stacked-histogram HDF5 file (dataset ``data``, uint8 [T, C, H, W]).

    Frames go to a temporary file which is renamed to ``path`` by :meth:`commit`; use as a context manager.
    """

    def __init__(self, path: PathLike, channels: int, height: int, width: int):
        self.path = Path(path)
        self._frame_shape = (channels, height, width)
        self._tmp_ctx = atomic_path(self.path)
        tmp = self._tmp_ctx.__enter__()
        self._h5 = h5py.File(tmp, "w")
        self._data = self._h5.create_dataset(
            "data", shape=(0, *self._frame_shape), maxshape=(None, *self._frame_shape), dtype=np.uint8,
            chunks=(1, *self._frame_shape), **blosc_zstd())
        self.num_frames = 0

    def append(self, frames: np.ndarray) -> None:
        """Append uint8 frames of shape [N, C, H, W]."""
        if frames.dtype != np.uint8 or frames.shape[1:] != self._frame_shape:
            raise ValueError(f"{self.path}: frames must be uint8 [N, *{self._frame_shape}], got "
                             f"{frames.dtype} {frames.shape}")
        n = len(frames)
        self._data.resize(self.num_frames + n, axis=0)
        self._data[self.num_frames:self.num_frames + n] = frames
        self.num_frames += n

    def __enter__(self) -> "EventReprWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._h5.close()
        self._tmp_ctx.__exit__(exc_type, exc, tb)


def open_event_repr(path: PathLike, channels: int = EV_REPR_CHANNELS) -> h5py.File:
    """Open a stacked-histogram HDF5 file read-only after validating dataset ``data`` (uint8 [T, C, H, W])."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "event representation file is missing")
    try:
        h5 = h5py.File(path, "r")
    except OSError as err:
        raise FormatError(path, f"not a readable HDF5 file ({err})") from err
    data = h5.get("data")
    problem = None
    if not isinstance(data, h5py.Dataset):
        problem = "has no dataset 'data'"
    elif data.dtype != np.uint8 or data.ndim != 4 or data.shape[1] != channels:
        problem = f"dataset 'data' must be uint8 [T, {channels}, H, W], got {data.dtype} {data.shape}"
    if problem:
        h5.close()
        raise FormatError(path, problem)
    return h5


def read_event_repr(path: PathLike, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Read frames ``[start, stop)`` as uint8 [N, C, H, W]; a damaged chunk raises :class:`FormatError`."""
    with open_event_repr(path) as h5:
        try:
            return h5["data"][start:stop]
        except OSError as err:
            raise FormatError(path, f"cannot read frames {start}:{stop} ({err})") from err


# ------------------------------------------------------------------------------------------ raw events
@dataclass(frozen=True)
class RawEvents:
    """Events of one raw sequence: x, y (pixels, sensor resolution), p (0/1), t (µs, non-decreasing)."""

    x: np.ndarray
    y: np.ndarray
    p: np.ndarray
    t: np.ndarray
    height: int
    width: int


def make_non_decreasing(t: np.ndarray) -> int:
    """Raise every timestamp to the running maximum in place (RVT's correction); return how many changed."""
    running = np.maximum.accumulate(t)
    changed = int(np.count_nonzero(running != t))
    t[:] = running
    return changed


def read_raw_events(path: PathLike, default_hw: tuple[int, int]) -> RawEvents:
    """Read group ``events`` of a raw ``*_td.dat.h5`` / ``*_td.h5`` file as RVT does.

    Timestamps are made non-decreasing (logged), polarity is clipped to >= 0; ``height``/``width``
    come from the file if present, else ``default_hw``.
    """
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "raw event file is missing")
    try:
        with h5py.File(path, "r") as h5:
            group = h5.get("events")
            if not isinstance(group, h5py.Group):
                raise FormatError(path, "has no group 'events'")
            missing = [k for k in ("x", "y", "p", "t") if k not in group]
            if missing:
                raise FormatError(path, f"group 'events' lacks datasets {missing}")
            arrays = {k: group[k][()] for k in ("x", "y", "p", "t")}
            height = _sensor_side(path, group, "height", default_hw[0])
            width = _sensor_side(path, group, "width", default_hw[1])
    except OSError as err:
        raise FormatError(path, f"not a readable HDF5 file ({err})") from err
    n = len(arrays["t"])
    if any(a.ndim != 1 or len(a) != n for a in arrays.values()):
        raise FormatError(path, "events x, y, p, t must be 1-D arrays of equal length")
    if not all(np.issubdtype(a.dtype, np.integer) for a in arrays.values()):
        raise FormatError(path, "events x, y, p, t must be integers")
    t = arrays["t"].astype(np.int64)
    if n and t[0] < 0:
        raise FormatError(path, "first event timestamp is negative")
    changed = make_non_decreasing(t)
    if changed:
        log.warning("%s: raised %d decreasing event timestamps to the running maximum", path, changed)
    x, y = arrays["x"].astype(np.int64), arrays["y"].astype(np.int64)
    if n and (x.min() < 0 or y.min() < 0 or x.max() >= width or y.max() >= height):
        raise FormatError(path, f"events lie outside the {height}x{width} sensor")
    p = np.clip(arrays["p"].astype(np.int64), 0, None)
    if n and p.max() > 1:
        raise FormatError(path, "polarity must be 0/1 (or -1/1)")
    return RawEvents(x=x, y=y, p=p, t=t, height=height, width=width)


def _sensor_side(path: Path, group: h5py.Group, key: str, default: int) -> int:
    """Dataset ``key`` (``height`` / ``width``) of a raw ``events`` group: a positive integer scalar, or
    ``default`` when the file stores none."""
    if key not in group:
        return default
    value = np.asarray(group[key][()])
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer) or value <= 0:
        raise FormatError(path, f"events/{key} must be a positive integer scalar, got {value.dtype} {value.tolist()}")
    return int(value)


def write_raw_events(path: PathLike, events: RawEvents) -> None:
    """Write a raw event file (group ``events``: x, y uint16, p int8, t int64, height, width) atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        group = h5.create_group("events")
        for key, dtype in (("x", np.uint16), ("y", np.uint16), ("p", np.int8), ("t", np.int64)):
            group.create_dataset(key, data=getattr(events, key).astype(dtype), compression="gzip",
                                 compression_opts=1, shuffle=True)
        group.create_dataset("height", data=np.int64(events.height))
        group.create_dataset("width", data=np.int64(events.width))


def read_raw_boxes(path: PathLike) -> np.ndarray:
    """Read a raw ``*_bbox.npy`` (Prophesee dtype, rows sorted by ``t``, finite boxes)."""
    boxes = _load_npy(path)
    if boxes.dtype.names is None or not {"t", "x", "y", "w", "h", "class_id"} <= set(boxes.dtype.names):
        raise FormatError(path, f"expected the Prophesee box dtype, got {boxes.dtype}")
    if boxes.ndim != 1:
        raise FormatError(path, f"expected a 1-D box array, got shape {boxes.shape}")
    for name in _BOX_FIELDS + RAW_BOX_INTEGER_FIELDS:
        kind = np.integer if name in RAW_BOX_INTEGER_FIELDS else np.number
        if not np.issubdtype(boxes.dtype[name], kind):
            raise FormatError(path, f"box field {name!r} has type {boxes.dtype[name]}, expected "
                                    f"{'an integer' if kind is np.integer else 'a number'} type")
    if len(boxes) and np.any(np.diff(boxes["t"].astype(np.int64)) < 0):
        raise FormatError(path, "boxes are not sorted by timestamp")
    check_boxes(path, boxes)
    return boxes


def write_raw_boxes(path: PathLike, boxes: np.ndarray) -> None:
    """Write boxes in the Prophesee dtype atomically."""
    if not same_fields(boxes.dtype, PROPHESEE_BBOX_DTYPE):
        raise ValueError(f"{path}: boxes must have the Prophesee dtype, got {boxes.dtype}")
    write_npy(path, zero_padded_copy(boxes))
