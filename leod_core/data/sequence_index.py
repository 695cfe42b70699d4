"""The sequence index of a preprocessed split: what ``leod split`` and the pseudo-label shard list need to know of
every sequence, read from the tree once.

Without it, every split job and every shard-list job of a plan re-reads every training sequence's files (1458
HDF5 files, label files and index arrays for Gen1): the cost grows with experiments x sequences. The workflow's
``sequence_index`` rule writes ``results/data/{dataset}/sequence_index.json`` once per dataset (after the data is
preprocessed or linked) and those jobs read that one file. Layout (version 1)::

    {"version": 1, "split": "train",
     "sequences": {"seq_a": {"num_reprs": 1200, "num_reprs_ds2": null, "has_boxes": true,
                             "objframe_idx_2_repr_idx": [20, 25, ...]}, ...}}

* ``num_reprs`` / ``num_reprs_ds2``: the number of event representations of ``event_representations.h5`` /
  ``event_representations_ds2_nearest.h5`` (``null`` where that file is absent: a split needs neither, a shard
  list the one it reads).
* ``has_boxes``: ``labels.npz`` holds at least one box, or the sequence has no ``labels.npz`` (it counts as
  labeled, as in :mod:`leod_core.data.splits`); False marks an unlabeled recording.
* ``objframe_idx_2_repr_idx``: the representation index of every label frame (strictly increasing).

Hidden directories (a sequence being written, see :func:`leod_core.data.atomic.atomic_dir`) are skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import (FormatError, PathLike, SequencePaths, open_event_repr, read_labels,
                                    read_objframe_idx_2_repr_idx)

__all__ = ["SEQUENCE_INDEX_VERSION", "SequenceEntry", "SequenceIndex", "build_sequence_index", "read_sequence_index",
           "sequence_dirs", "write_sequence_index"]

SEQUENCE_INDEX_VERSION = 1
_ENTRY_KEYS = {"num_reprs", "num_reprs_ds2", "has_boxes", "objframe_idx_2_repr_idx"}


@dataclass(frozen=True)
class SequenceEntry:
    """One sequence of the index (see the module docstring): representation counts (None: file absent), whether
    it has ground truth, and int64 [F] label-frame representation indices."""

    num_reprs: Optional[int]
    num_reprs_ds2: Optional[int]
    has_boxes: bool
    objframe_idx_2_repr_idx: np.ndarray

    def length(self, downsampled_by_2: bool) -> Optional[int]:
        """Representations of the file read with (or without) ``downsampled_by_2``; None if it is absent."""
        return self.num_reprs_ds2 if downsampled_by_2 else self.num_reprs

    def to_dict(self) -> dict[str, Any]:
        return {"num_reprs": self.num_reprs, "num_reprs_ds2": self.num_reprs_ds2, "has_boxes": self.has_boxes,
                "objframe_idx_2_repr_idx": self.objframe_idx_2_repr_idx.tolist()}


@dataclass(frozen=True)
class SequenceIndex:
    """The sequences of one split directory by name (sorted); ``source`` names where it was read, for messages."""

    split: str
    sequences: Mapping[str, SequenceEntry]
    source: str = ""

    @property
    def names(self) -> list[str]:
        return sorted(self.sequences)

    @property
    def unlabeled(self) -> set[str]:
        """Sequences whose ``labels.npz`` holds no box (unlabeled recordings)."""
        return {name for name, entry in self.sequences.items() if not entry.has_boxes}

    def repr_indices(self) -> dict[str, np.ndarray]:
        """int64 [F] label-frame representation indices of every sequence."""
        return {name: entry.objframe_idx_2_repr_idx for name, entry in self.sequences.items()}

    def lengths(self, downsampled_by_2: bool) -> dict[str, int]:
        """Representations of every sequence in the file that ``downsampled_by_2`` reads; a ValueError names the
        sequences without that file."""
        lengths = {name: entry.length(downsampled_by_2) for name, entry in self.sequences.items()}
        missing = sorted(name for name, length in lengths.items() if length is None)
        if missing:
            kind = "down-sampled (ds2)" if downsampled_by_2 else "full-resolution"
            raise ValueError(f"{self.source or self.split}: sequences {missing[:5]} have no {kind} event "
                             f"representations")
        return lengths

    def to_json(self) -> str:
        payload = {"version": SEQUENCE_INDEX_VERSION, "split": self.split,
                   "sequences": {name: self.sequences[name].to_dict() for name in self.names}}
        return json.dumps(payload, separators=(",", ":")) + "\n"


def sequence_dirs(split_dir: Path) -> list[Path]:
    """The sequence directories of ``split_dir``, sorted, hidden ones skipped; a ValueError if there are none."""
    if not split_dir.is_dir():
        raise ValueError(f"split directory {split_dir} does not exist")
    dirs = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise ValueError(f"split directory {split_dir} has no sequence directories")
    return dirs


def _num_reprs(path: Path) -> Optional[int]:
    if not path.is_file():
        return None
    with open_event_repr(path) as h5:
        return int(h5["data"].shape[0])


def _read_entry(seq_dir: Path) -> SequenceEntry:
    paths = SequencePaths(seq_dir)
    num_reprs, num_reprs_ds2 = _num_reprs(paths.ev_repr_file(False)), _num_reprs(paths.ev_repr_file(True))
    has_boxes = not paths.labels.is_file() or len(read_labels(paths.labels).labels) > 0
    return SequenceEntry(num_reprs, num_reprs_ds2, has_boxes,
                         read_objframe_idx_2_repr_idx(paths.objframe_idx_2_repr_idx))


def build_sequence_index(split_dir: PathLike) -> SequenceIndex:
    """Read every sequence of the split directory ``split_dir`` (e.g. ``{data}/train``; its files are validated,
    a bad one raises :class:`FormatError` naming it)."""
    split_dir = Path(split_dir)
    return SequenceIndex(split_dir.name, {d.name: _read_entry(d) for d in sequence_dirs(split_dir)}, str(split_dir))


def write_sequence_index(split_dir: PathLike, out: PathLike) -> SequenceIndex:
    """Build the index of ``split_dir`` and write it to ``out`` atomically."""
    index = build_sequence_index(split_dir)
    write_text_atomic(out, index.to_json())
    return SequenceIndex(index.split, index.sequences, str(out))


def _optional_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _parse_entry(path: PathLike, name: str, raw: Any) -> SequenceEntry:
    if not name or "/" in name or name.startswith("."):
        raise FormatError(path, f"{name!r} is not a sequence directory name")
    if not isinstance(raw, dict) or set(raw) != _ENTRY_KEYS:
        raise FormatError(path, f"sequence {name!r}: needs exactly the keys {sorted(_ENTRY_KEYS)}")
    if not (_optional_count(raw["num_reprs"]) and _optional_count(raw["num_reprs_ds2"])) \
            or not isinstance(raw["has_boxes"], bool):
        raise FormatError(path, f"sequence {name!r}: bad representation counts or has_boxes")
    frames = raw["objframe_idx_2_repr_idx"]
    if not isinstance(frames, list) or not frames or not all(isinstance(i, int) and not isinstance(i, bool)
                                                             for i in frames):
        raise FormatError(path, f"sequence {name!r}: objframe_idx_2_repr_idx must be a non-empty list of integers")
    idx = np.asarray(frames, dtype=np.int64)
    if idx[0] < 0 or np.any(np.diff(idx) <= 0):
        raise FormatError(path, f"sequence {name!r}: representation indices are not sorted, unique, non-negative")
    return SequenceEntry(raw["num_reprs"], raw["num_reprs_ds2"], raw["has_boxes"], idx)


def read_sequence_index(path: PathLike) -> SequenceIndex:
    """Read and check a sequence index file (:class:`FormatError` naming it and the problem)."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(path, "sequence index file is missing")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(path, f"not a sequence index: not valid JSON ({err})") from err
    if not isinstance(payload, dict) or payload.get("version") != SEQUENCE_INDEX_VERSION:
        raise FormatError(path, f"not a sequence index of version {SEQUENCE_INDEX_VERSION}")
    sequences = payload.get("sequences")
    if not isinstance(payload.get("split"), str) or not isinstance(sequences, dict) or not sequences:
        raise FormatError(path, "not a sequence index: needs a split name and a non-empty 'sequences' mapping")
    return SequenceIndex(payload["split"], {name: _parse_entry(path, name, raw) for name, raw in sequences.items()},
                         str(path))
