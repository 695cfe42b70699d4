"""Stacked-histogram event representations: the Blosc-compressed HDF5 ``event_representations*.h5``."""
from __future__ import annotations

from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from leod_core.data.atomic import atomic_path
from leod_core.data.formats.common import EV_REPR_CHANNELS, FormatError, PathLike

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


