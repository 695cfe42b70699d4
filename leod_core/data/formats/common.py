"""Constants, dtypes, errors, npy helpers and paths of RVT's dataset layout (see the package docstring)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leod_core.data.atomic import atomic_path
from leod_core.data.cameras import CameraView

PathLike = str | os.PathLike

SPLITS = ("train", "val", "test")
#: Class names by camera, in class-id order: a read-only view of the camera registry (``get_camera(name).classes``).
DATASET_CLASSES = CameraView(lambda camera: camera.classes)
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
BOX_FIELDS = ("x", "y", "w", "h")


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
def load_npy(path: PathLike) -> np.ndarray:
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
    ts = load_npy(path)
    if ts.dtype != np.int64 or ts.ndim != 1:
        raise FormatError(path, f"expected int64 [N] timestamps, got {ts.dtype} {ts.shape}")
    if ts.size > 1 and np.any(np.diff(ts) <= 0):
        raise FormatError(path, "timestamps are not strictly increasing")
    return ts


def read_objframe_idx_2_repr_idx(path: PathLike, num_reprs: int | None = None) -> np.ndarray:
    """Read int64 [F] representation indices of labeled frames (strictly increasing, < ``num_reprs``)."""
    idx = load_npy(path)
    if idx.dtype != np.int64 or idx.ndim != 1 or idx.size == 0:
        raise FormatError(path, f"expected non-empty int64 [F] indices, got {idx.dtype} {idx.shape}")
    if np.any(np.diff(idx) <= 0) or idx[0] < 0:
        raise FormatError(path, "representation indices are not sorted, unique and non-negative")
    if num_reprs is not None and idx[-1] >= num_reprs:
        raise FormatError(path, f"index {int(idx[-1])} points past the {num_reprs} representations")
    return idx


