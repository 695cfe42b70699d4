"""Label files: ``labels.npz`` (RVT / LEOD boxes per labeled frame) and their checks."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leod_core.data.atomic import atomic_path
from leod_core.data.formats.common import (BOX_FIELDS, BOX_FRAME_TOLERANCE_PX, LABEL_DTYPES, FormatError, PathLike,
                                           same_fields, zero_padded_copy)

def check_boxes(path: PathLike, boxes: np.ndarray, height: int | None = None,
                width: int | None = None) -> None:
    """Raise if boxes have NaN/inf/negative sizes or (with ``height``/``width``) leave the frame [0, W-1]×[0, H-1]."""
    coords = np.stack([boxes[k].astype(np.float64) for k in BOX_FIELDS], axis=-1) if len(boxes) else np.zeros((0, 4))
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


