"""Which file holds the events of a raw sequence (``{split}/{seq}_bbox.npy``), how it is read, and where
``leod synth`` writes each event format.

Accepted event files beside ``{seq}_bbox.npy`` (exactly one per sequence; two or more is an error naming them):

- ``{seq}_td.dat.h5`` (``{seq}_td.h5`` with gen4-style names): RVT's conversion, read as RVT does
  (:class:`~leod_core.data.formats.RawH5Reader`);
- ``{seq}_td.dat``: Prophesee DAT (Gen1's original release);
- ``{seq}.raw`` or ``{seq}_td.raw``: EVT 2.0 / EVT 3.0 RAW, the encoding taken from the ``%`` header.

In ``train`` a sequence may have an event file and no ``{seq}_bbox.npy`` (an unlabeled recording,
:func:`sequences_with_events`).

Every event file is read in chunks through :func:`~leod_core.data.recordings.open_recording`; the sensor size
comes from the file, else from the given default (pixels).
"""
from __future__ import annotations

from pathlib import Path


from leod_core.data.formats import FormatError, PathLike, raw_paths
from leod_core.data.recordings import FORMATS, Recording, open_recording

#: Name endings ``{seq}<ending>`` of the camera recordings accepted besides RVT's h5, in search order.
RECORDING_ENDINGS = ("_td.dat", ".raw", "_td.raw")
#: Name ending of the event file ``leod synth --format`` writes, by recording format (h5: :func:`raw_paths`).
WRITTEN_ENDINGS = {"dat": "_td.dat", "evt2": "_td.raw", "evt3": "_td.raw"}
_H5_FORMAT = "h5"
_H5_SUFFIX = ".h5"


def events_file_for_writing(split_dir: PathLike, seq: str, fmt: str) -> Path:
    """Where the events of ``seq`` in format ``fmt`` (one of :data:`~leod_core.data.recordings.FORMATS`) go."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown recording format {fmt!r}, expected one of {FORMATS}")
    if fmt == _H5_FORMAT:
        return raw_paths(split_dir, seq)[0]
    return Path(split_dir) / f"{seq}{WRITTEN_ENDINGS[fmt]}"


def find_events_file(split_dir: PathLike, seq: str, gen4_style: bool) -> Path:
    """The one event file of sequence ``seq`` in ``split_dir`` (see the module docstring); none or several
    raise a :class:`FormatError` (none names RVT's h5 path, several name every file found)."""
    split_dir = Path(split_dir)
    h5_file, boxes_file = raw_paths(split_dir, seq, gen4_style)
    candidates = [h5_file, *(split_dir / f"{seq}{ending}" for ending in RECORDING_ENDINGS)]
    found = [path for path in candidates if path.is_file()]
    if not found:
        raise FormatError(h5_file, f"raw events of {boxes_file.name} are missing (looked for "
                                   f"{', '.join(path.name for path in candidates)})")
    if len(found) > 1:
        raise FormatError(boxes_file, f"ambiguous raw events: {len(found)} event files for one sequence "
                                      f"({', '.join(str(path) for path in found)}); keep one")
    return found[0]


def sequences_with_events(split_dir: PathLike, gen4_style: bool) -> set[str]:
    """Names ``seq`` of the accepted event files in ``split_dir``; a name with several accepted endings is
    read with the longest (``a_td.raw`` is sequence ``a``, as ``leod synth`` writes it)."""
    h5_ending = raw_paths("", "", gen4_style)[0].name
    endings = sorted((h5_ending, *RECORDING_ENDINGS), key=len, reverse=True)
    names = set()
    for path in Path(split_dir).iterdir():
        ending = next((e for e in endings if path.name.endswith(e) and len(path.name) > len(e)), None)
        if ending is not None and path.is_file():
            names.add(path.name[: -len(ending)])
    return names


def open_sequence_events(path: PathLike, default_hw: tuple[int, int]) -> Recording:
    """The events of ``path`` as preprocessing reads them, in chunks (:meth:`Recording.chunks`): RVT's h5
    (:class:`~leod_core.data.recordings.H5Recording`, RVT's corrections) or a recording of its detected format.
    ``default_hw`` (height, width; pixels) serves when the file stores no sensor size."""
    return open_recording(path, default_hw)
