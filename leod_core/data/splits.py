"""Label sub-sampling of the training split, as LEOD does it (no randomness involved).

* ``wsod`` (LEOD's ``_ss``, weakly supervised): every training sequence keeps about a fraction ``r`` of its
  labeled frames: every ``round(1/r)``-th frame from index 0, shifted by the first frame that has ``L``
  representations of history (``start_idx_offset`` of LEOD's ``SequenceForRandomAccess``).
* ``ssod`` (LEOD's ``_seq``, semi-supervised): sorted sequence names sub-sampled with step
  ``k = N // round(N*r)``; kept sequences keep all their labels, the others none (they stay present, unlabeled).
* ``full``: every labeled frame of every sequence (ratio 1).

A :class:`LabelSplit` maps every training sequence to the sorted objframe indices whose ground truth is kept
and is stored as JSON (see :meth:`LabelSplit.to_json`).
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import FormatError, PathLike, SequencePaths, read_objframe_idx_2_repr_idx

log = logging.getLogger(__name__)

SETTINGS = ("wsod", "ssod", "full")
FULL_RATIO = 1.0
FORMAT_VERSION = 1
_KEYS = {"version", "setting", "ratio", "sequence_length", "summary", "labeled_frames"}
#: An int list that json.dumps(indent=...) spread over lines (a literal newline never occurs inside a string).
_SPREAD_INT_LIST = re.compile(r"\[\n\s*([-\d,\s]+?)\n\s*\]")


def parse_ratio(value: str | float) -> float:
    """Return ``value`` (a number or a decimal string such as ``"0.01"``) as a float in (0, 1]."""
    if isinstance(value, bool):
        raise ValueError(f"ratio {value!r} is not a number")
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"ratio {value!r} is not a number") from None
    if not (math.isfinite(ratio) and 0.0 < ratio <= FULL_RATIO):
        raise ValueError(f"ratio {value!r} is not in (0, 1]")
    return ratio


def wsod_stride(ratio: float) -> int:
    """LEOD's WSOD skip between kept labeled frames: ``round(1/r)`` (100, 50, 20, 10 for 1, 2, 5, 10 %)."""
    return round(1.0 / parse_ratio(ratio))


def wsod_labeled_frames(objframe_idx_2_repr_idx: np.ndarray, ratio: float, sequence_length: int) -> list[int]:
    """Objframe indices kept by LEOD's WSOD sub-sampling of one sequence (all of them at ratio 1).

    ``[]`` when no labeled frame has ``sequence_length`` representations of history.
    """
    num_frames = len(objframe_idx_2_repr_idx)
    if parse_ratio(ratio) == FULL_RATIO:
        return list(range(num_frames))
    kept = list(range(0, num_frames, wsod_stride(ratio)))
    usable = np.flatnonzero(np.asarray(objframe_idx_2_repr_idx) - sequence_length + 1 >= 0)
    if usable.size == 0:
        return []
    offset = int(usable[0])
    return [i + offset for i in kept if i + offset < num_frames]


def ssod_step(num_sequences: int, ratio: float) -> tuple[int, int]:
    """(number kept, step k) of LEOD's SSOD sub-sampling of ``num_sequences`` sorted names."""
    num_kept = round(num_sequences * parse_ratio(ratio))
    if num_kept == 0:
        raise ValueError(f"ratio {ratio} is too small for {num_sequences} sequences: it keeps none")
    return num_kept, num_sequences // num_kept


def ssod_kept_sequences(names: Sequence[str], ratio: float) -> list[str]:
    """Names of the fully labeled sequences: ``sorted(names)[0::k][:num]``."""
    num_kept, step = ssod_step(len(names), ratio)
    return sorted(names)[::step][:num_kept]


@dataclass(frozen=True)
class LabelSplit:
    """Which ground-truth frames of each training sequence are kept (``[]``: an unlabeled sequence)."""

    setting: str
    ratio: float
    sequence_length: int
    labeled_frames: dict[str, list[int]]

    @property
    def num_sequences(self) -> int:
        return len(self.labeled_frames)

    @property
    def num_labeled_sequences(self) -> int:
        return sum(1 for frames in self.labeled_frames.values() if frames)

    @property
    def num_labeled_frames(self) -> int:
        return sum(len(frames) for frames in self.labeled_frames.values())

    def summary(self) -> dict[str, int]:
        """Counts for humans, with the WSOD ``stride`` or the SSOD ``k``."""
        counts = {"num_sequences": self.num_sequences, "num_labeled_sequences": self.num_labeled_sequences,
                  "num_labeled_frames": self.num_labeled_frames}
        if self.setting == "wsod":
            counts["stride"] = wsod_stride(self.ratio)
        elif self.setting == "ssod":
            counts["k"] = ssod_step(self.num_sequences, self.ratio)[1]
        return counts

    def to_json(self) -> str:
        """JSON text with sorted sequence names, one line per sequence."""
        payload = {"version": FORMAT_VERSION, "setting": self.setting, "ratio": self.ratio,
                   "sequence_length": self.sequence_length, "summary": self.summary(),
                   "labeled_frames": dict(sorted(self.labeled_frames.items()))}
        text = json.dumps(payload, indent=2)
        return _SPREAD_INT_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"

    @classmethod
    def from_json(cls, text: str, source: PathLike) -> "LabelSplit":
        """Parse and validate JSON text; problems raise :class:`FormatError` naming ``source``."""
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise FormatError(source, f"not valid JSON ({err})") from err
        if not isinstance(payload, dict) or set(payload) != _KEYS:
            raise FormatError(source, f"expected a JSON object with keys {sorted(_KEYS)}")
        if payload["version"] != FORMAT_VERSION:
            raise FormatError(source, f"unsupported version {payload['version']!r}, expected {FORMAT_VERSION}")
        split = cls(setting=_check_setting(source, payload["setting"]),
                    ratio=_check_ratio(source, payload["setting"], payload["ratio"]),
                    sequence_length=_check_sequence_length(source, payload["sequence_length"]),
                    labeled_frames=_check_labeled_frames(source, payload["labeled_frames"]))
        try:
            summary = split.summary()
        except ValueError as err:
            raise FormatError(source, str(err)) from err
        if payload["summary"] != summary:
            raise FormatError(source, f"summary {payload['summary']} disagrees with the content {summary}")
        return split

    @classmethod
    def read(cls, path: PathLike) -> "LabelSplit":
        """Read and validate a split JSON file."""
        path = Path(path)
        if not path.is_file():
            raise FormatError(path, "split file is missing")
        return cls.from_json(path.read_text(encoding="utf-8"), path)


def _check_setting(source: PathLike, setting: Any) -> str:
    if setting not in SETTINGS:
        raise FormatError(source, f"unknown setting {setting!r}, expected one of {SETTINGS}")
    return setting


def _check_ratio(source: PathLike, setting: str, ratio: Any) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise FormatError(source, f"ratio {ratio!r} is not a number")
    try:
        ratio = parse_ratio(ratio)
    except ValueError as err:
        raise FormatError(source, str(err)) from err
    if setting == "full" and ratio != FULL_RATIO:
        raise FormatError(source, f"setting 'full' needs ratio 1, got {ratio}")
    return ratio


def _check_sequence_length(source: PathLike, length: Any) -> int:
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise FormatError(source, f"sequence_length {length!r} is not a positive integer")
    return length


def _check_labeled_frames(source: PathLike, labeled_frames: Any) -> dict[str, list[int]]:
    if not isinstance(labeled_frames, dict) or not labeled_frames:
        raise FormatError(source, "labeled_frames must be a non-empty object {sequence: [objframe indices]}")
    for name, frames in labeled_frames.items():
        if not name or not isinstance(frames, list) or not all(type(i) is int for i in frames):
            raise FormatError(source, f"sequence {name!r}: needs a name and a list of integer frames")
        if frames and (frames[0] < 0 or any(b <= a for a, b in zip(frames, frames[1:]))):
            raise FormatError(source, f"sequence {name!r}: frames are not sorted, unique and non-negative")
    return labeled_frames


def _sequence_dirs(train_dir: Path) -> list[Path]:
    if not train_dir.is_dir():
        raise ValueError(f"training split directory {train_dir} does not exist")
    dirs = sorted(p for p in train_dir.iterdir() if p.is_dir())
    if not dirs:
        raise ValueError(f"training split directory {train_dir} has no sequence directories")
    return dirs


def _wsod_frames(repr_indices: dict[str, np.ndarray], ratio: float, sequence_length: int) -> dict[str, list[int]]:
    frames = {}
    for name, repr_idx in repr_indices.items():
        frames[name] = wsod_labeled_frames(repr_idx, ratio, sequence_length)
        if not frames[name]:
            log.warning("sequence %s has no labeled frame with %d representations of history: it keeps no label",
                        name, sequence_length)
    return frames


def make_split(train_dir: PathLike, setting: str, ratio: float, sequence_length: int) -> LabelSplit:
    """Build the ``setting`` split of the preprocessed training sequences under ``train_dir``."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}, expected one of {SETTINGS}")
    ratio = parse_ratio(ratio)
    if setting == "full" and ratio != FULL_RATIO:
        raise ValueError(f"setting 'full' keeps every label and needs ratio 1, got {ratio}")
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be positive, got {sequence_length}")
    repr_indices = {d.name: read_objframe_idx_2_repr_idx(SequencePaths(d).objframe_idx_2_repr_idx)
                    for d in _sequence_dirs(Path(train_dir))}
    if setting == "wsod":
        frames = _wsod_frames(repr_indices, ratio, sequence_length)
    else:
        kept = set(ssod_kept_sequences(list(repr_indices), ratio))
        frames = {name: list(range(len(idx))) if name in kept else [] for name, idx in repr_indices.items()}
    split = LabelSplit(setting, ratio, sequence_length, frames)
    log.info("%s split of %s at ratio %g (L=%d): %s", setting, train_dir, ratio, sequence_length,
             ", ".join(f"{key} {value}" for key, value in split.summary().items()))
    return split


def write_split(path: PathLike, split: LabelSplit) -> None:
    """Write ``split`` as JSON atomically."""
    write_text_atomic(path, split.to_json())


def read_split(path: PathLike) -> LabelSplit:
    """Read and validate a split JSON file (see :meth:`LabelSplit.read`)."""
    return LabelSplit.read(path)
