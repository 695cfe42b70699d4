"""Raw sequences (input of preprocessing): ``{seq}_td.dat.h5`` events and ``{seq}_bbox.npy`` boxes."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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


def raise_to_running_max(t: np.ndarray, carry: int) -> tuple[np.ndarray, int, int]:
    """RVT's correction of one chunk of timestamps (µs): (``t`` raised to the running maximum starting from
    ``carry``, the running maximum after the chunk, how many were raised); chunk by chunk, the running maximum of
    the whole array."""
    running = np.maximum(np.maximum.accumulate(t), carry) if len(t) else t
    raised = int(np.count_nonzero(running != t))
    return running, (int(running[-1]) if len(t) else carry), raised


#: One decoded block: x, y, p, t (int64 [N]) and how many timestamps were raised to the running maximum.
EventBlock = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]


class RawH5Reader:
    """Group ``events`` of a raw ``*_td.dat.h5`` / ``*_td.h5`` file, read in blocks as RVT reads it whole.

    Opening validates the group (datasets x, y, p, t: 1-D integer arrays of equal length) and the sensor size
    (``height`` / ``width`` from the file if present, else ``default_hw``; pixels). :meth:`blocks` then reads
    ``max_events`` events at a time (int64), with RVT's corrections carried across blocks: timestamps raised to
    the running maximum, polarity -1 clipped to 0; a negative first timestamp, events outside the sensor or a
    polarity above 1 raise :class:`FormatError`.
    """

    _KEYS = ("x", "y", "p", "t")

    def __init__(self, path: PathLike, default_hw: tuple[int, int]):
        self.path = Path(path)
        if not self.path.is_file():
            raise FormatError(self.path, "raw event file is missing")
        try:
            with h5py.File(self.path, "r") as h5:
                group = h5.get("events")
                if not isinstance(group, h5py.Group):
                    raise FormatError(self.path, "has no group 'events'")
                missing = [k for k in self._KEYS if k not in group]
                if missing:
                    raise FormatError(self.path, f"group 'events' lacks datasets {missing}")
                shapes = {k: group[k].shape for k in self._KEYS}
                dtypes = [group[k].dtype for k in self._KEYS]
                self.height = _sensor_side(self.path, group, "height", default_hw[0])
                self.width = _sensor_side(self.path, group, "width", default_hw[1])
        except OSError as err:
            raise FormatError(self.path, f"not a readable HDF5 file ({err})") from err
        self.num_events = shapes["t"][0] if len(shapes["t"]) == 1 else -1
        if any(len(s) != 1 or s[0] != self.num_events for s in shapes.values()):
            raise FormatError(self.path, "events x, y, p, t must be 1-D arrays of equal length")
        if not all(np.issubdtype(d, np.integer) for d in dtypes):
            raise FormatError(self.path, "events x, y, p, t must be integers")

    def blocks(self, max_events: int) -> Iterator[EventBlock]:
        """Yield the events in order, ``max_events`` at a time (see the class docstring)."""
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        carry = 0
        try:
            with h5py.File(self.path, "r") as h5:
                group = h5["events"]
                for start in range(0, self.num_events, max_events):
                    x, y, p, t = (group[k][start:start + max_events].astype(np.int64) for k in self._KEYS)
                    if start == 0 and t[0] < 0:
                        raise FormatError(self.path, "first event timestamp is negative")
                    t, carry, raised = raise_to_running_max(t, carry)
                    self._check_inside(x, y)
                    yield x, y, self._polarity(p), t, raised
        except OSError as err:
            raise FormatError(self.path, f"not a readable HDF5 file ({err})") from err

    def _check_inside(self, x: np.ndarray, y: np.ndarray) -> None:
        if x.min() < 0 or y.min() < 0 or x.max() >= self.width or y.max() >= self.height:
            raise FormatError(self.path, f"events lie outside the {self.height}x{self.width} sensor")

    def _polarity(self, p: np.ndarray) -> np.ndarray:
        p = np.clip(p, 0, None)
        if p.max() > 1:
            raise FormatError(self.path, "polarity must be 0/1 (or -1/1)")
        return p


def read_raw_events(path: PathLike, default_hw: tuple[int, int]) -> RawEvents:
    """Read group ``events`` of a raw ``*_td.dat.h5`` / ``*_td.h5`` file whole, as RVT does
    (:class:`RawH5Reader`: timestamps made non-decreasing and logged, polarity clipped to >= 0; ``height`` /
    ``width`` from the file if present, else ``default_hw``)."""
    reader = RawH5Reader(path, default_hw)
    blocks = list(reader.blocks(max(reader.num_events, 1)))
    changed = sum(b[4] for b in blocks)
    if changed:
        log.warning("%s: raised %d decreasing event timestamps to the running maximum", reader.path, changed)
    if blocks:
        x, y, p, t, _ = blocks[0]
    else:
        x = y = p = t = np.zeros(0, dtype=np.int64)
    return RawEvents(x=x, y=y, p=p, t=t, height=reader.height, width=reader.width)


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
