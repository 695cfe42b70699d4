"""Raw sequences (input of preprocessing): ``{seq}_td.dat.h5`` events and ``{seq}_bbox.npy`` boxes."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from leod_core.data.atomic import atomic_path
from leod_core.data.formats.common import (BOX_FIELDS, PROPHESEE_BBOX_DTYPE, RAW_BOX_INTEGER_FIELDS, FormatError,
                                           PathLike, load_npy, same_fields, write_npy, zero_padded_copy)
from leod_core.data.formats.labels import check_boxes

log = logging.getLogger(__name__)


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
    boxes = load_npy(path)
    if boxes.dtype.names is None or not {"t", "x", "y", "w", "h", "class_id"} <= set(boxes.dtype.names):
        raise FormatError(path, f"expected the Prophesee box dtype, got {boxes.dtype}")
    if boxes.ndim != 1:
        raise FormatError(path, f"expected a 1-D box array, got shape {boxes.shape}")
    for name in BOX_FIELDS + RAW_BOX_INTEGER_FIELDS:
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
