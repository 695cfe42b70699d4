"""Readers and writers of the files event cameras write: Prophesee DAT (``*_td.dat``), EVT 2.0 and EVT 3.0 RAW
(``*.raw``), plus RVT's converted ``*_td.dat.h5`` (:class:`H5Recording`).

Every reader yields :class:`~leod_core.data.formats.RawEvents` (x, y pixels at sensor resolution, p 0/1, t µs
non-decreasing) in chunks of bounded size (:meth:`Recording.chunks`) or whole (:meth:`Recording.read_all`);
corrupt files raise :class:`~leod_core.data.formats.FormatError` naming the file and the byte offset.
The byte layouts are in the docstrings of :mod:`.dat`, :mod:`.evt2` and :mod:`.evt3`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from leod_core.data.formats import EventBlock, FormatError, PathLike, RawEvents, RawH5Reader, write_raw_events
from leod_core.data.recordings.common import DEFAULT_CHUNK_EVENTS, Recording, error_at, read_header
from leod_core.data.recordings.dat import DatRecording, write_dat
from leod_core.data.recordings.evt2 import Evt2Recording, write_evt2
from leod_core.data.recordings.evt3 import Evt3Recording, write_evt3, write_evt3_chunks

__all__ = ["DEFAULT_CHUNK_EVENTS", "FORMATS", "DatRecording", "Evt2Recording", "Evt3Recording", "H5Recording",
           "Recording", "detect_format", "open_recording", "iter_recording", "read_recording", "write_dat",
           "write_evt2", "write_evt3", "write_evt3_chunks", "write_recording"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
#: ``% evt <version>`` values and ``% format <NAME>;...`` names of the RAW encodings read here.
EVT_VERSIONS = {"2.0": "evt2", "3.0": "evt3"}
EVT_FORMAT_NAMES = {"evt2": "evt2", "evt3": "evt3"}
FORMATS = ("dat", "evt2", "evt3", "h5")
_SUPPORTED = "Prophesee DAT (*.dat), EVT 2.0 / EVT 3.0 RAW (*.raw), RVT's *_td.dat.h5"


class H5Recording(Recording):
    """RVT's converted ``*_td.dat.h5`` behind the :class:`Recording` interface, read in chunks by
    :class:`~leod_core.data.formats.RawH5Reader` with RVT's corrections (as preprocessing reads it)."""

    format = "h5"

    def __init__(self, path: PathLike, sensor_hw: tuple[int, int] | None = None):
        self.path = Path(path)
        self._reader = RawH5Reader(self.path, sensor_hw if sensor_hw is not None else (0, 0))
        self.height, self.width = self._reader.height, self._reader.width
        if self.height <= 0 or self.width <= 0:
            raise FormatError(self.path, "the file stores no sensor size (height, width); pass sensor_hw")

    def _decode(self, max_events: int) -> Iterator[EventBlock]:
        return self._reader.blocks(max_events)


def detect_format(path: PathLike) -> str:
    """Which of :data:`FORMATS` ``path`` is, by its first bytes, its ``%`` header and its suffix."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "recording file is missing")
    with open(path, "rb") as f:
        magic = f.read(len(HDF5_MAGIC))
    if magic == HDF5_MAGIC or path.suffix in (".h5", ".hdf5"):    # an unreadable *.h5 is reported by its reader
        return "h5"
    header = read_header(path)            # raises on an empty file
    found = header.get("format")
    if found is not None:
        name = found[1].split(";")[0].strip().lower()
        if name not in EVT_FORMAT_NAMES:
            raise error_at(path, found[0], f"RAW encoding {found[1].split(';')[0]!r} is not supported; "
                                           f"supported formats: {_SUPPORTED}")
        return EVT_FORMAT_NAMES[name]
    found = header.get("evt")
    if found is not None:
        if found[1] not in EVT_VERSIONS:
            raise error_at(path, found[0], f"EVT version {found[1]!r} is not supported; supported formats: "
                                           f"{_SUPPORTED}")
        return EVT_VERSIONS[found[1]]
    if path.suffix == ".dat":
        return "dat"
    raise FormatError(path, f"unrecognised recording (neither its suffix nor its header names a format); "
                            f"supported formats: {_SUPPORTED}")


_READERS: dict[str, Callable[..., Recording]] = {"dat": DatRecording, "evt2": Evt2Recording,
                                                  "evt3": Evt3Recording, "h5": H5Recording}
_WRITERS: dict[str, Callable[[PathLike, RawEvents], None]] = {"dat": write_dat, "evt2": write_evt2,
                                                              "evt3": write_evt3, "h5": write_raw_events}


def open_recording(path: PathLike, sensor_hw: tuple[int, int] | None = None) -> Recording:
    """Open ``path`` with the reader of its format; ``sensor_hw`` (height, width) serves when the file names no
    sensor size."""
    return _READERS[detect_format(path)](path, sensor_hw)


def read_recording(path: PathLike, sensor_hw: tuple[int, int] | None = None) -> RawEvents:
    """Every event of ``path`` (any of :data:`FORMATS`)."""
    return open_recording(path, sensor_hw).read_all()


def iter_recording(path: PathLike, max_events: int = DEFAULT_CHUNK_EVENTS,
                   sensor_hw: tuple[int, int] | None = None) -> Iterator[RawEvents]:
    """The events of ``path`` in chunks of at most ``max_events``."""
    return open_recording(path, sensor_hw).chunks(max_events)


def write_recording(path: PathLike, events: RawEvents, fmt: str) -> None:
    """Write ``events`` to ``path`` in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown recording format {fmt!r}, expected one of {FORMATS}")
    _WRITERS[fmt](path, events)
