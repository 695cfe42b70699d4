"""Label sub-sampling of the training split, as LEOD does it (no randomness involved).

* ``wsod`` (LEOD's ``_ss``, weakly supervised): every training sequence keeps about a fraction ``r`` of its
  labeled frames: every ``round(1/r)``-th frame from index ``offset``, shifted by the first frame that has ``L``
  representations of history (``start_idx_offset`` of LEOD's ``SequenceForRandomAccess``), see
  :func:`wsod_labeled_frames`.
* ``ssod`` (LEOD's ``_seq``, semi-supervised): sorted sequence names sub-sampled with step
  ``k = N // round(N*r)`` from index ``offset``; kept sequences keep all their labels, the others none (they stay
  present, unlabeled).
* ``full``: every labeled frame of every sequence (ratio 1).

Unlabeled recordings (preprocessing's unlabeled sequences: ``labels.npz`` holds label frames but no box, see
:attr:`~leod_core.data.sequence_index.SequenceIndex.unlabeled`) keep ``[]`` in every setting; their frames are
pseudo-labelled. The ratio applies within the labeled recordings: SSOD sub-samples the ``N`` sorted names of the
labeled sequences only (a dataset without unlabeled recordings is split exactly as LEOD does), and WSOD and
``full`` keep none of the unlabeled ones' frames. A sequence directory without ``labels.npz`` counts as labeled.

The ``offset`` selects one of several label splits of the same ratio (LEOD: "All results in the paper are
averaged over three different splits (we offset the index when sub-sampling the data)"; only offset 0 was
released). Valid offsets are ``0 .. num_offsets - 1`` (:func:`num_offsets`: the WSOD stride, the SSOD step ``k``,
1 for ``full``); different offsets select disjoint frames (WSOD) or sequences (SSOD).

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
from leod_core.data.formats import FormatError, PathLike
from leod_core.data.sequence_index import SequenceIndex, build_sequence_index

log = logging.getLogger(__name__)

SETTINGS = ("wsod", "ssod", "full")
FULL_RATIO = 1.0
FORMAT_VERSION = 3
_KEYS_V1 = {"version", "setting", "ratio", "sequence_length", "summary", "labeled_frames"}
#: Keys of each readable file version; version 1 had no offset (it reads as offset 0), versions 1 and 2 no
#: unlabeled_sequences (they read as none).
_KEYS = {1: _KEYS_V1, 2: _KEYS_V1 | {"offset"}, FORMAT_VERSION: _KEYS_V1 | {"offset", "unlabeled_sequences"}}
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


def wsod_labeled_frames(objframe_idx_2_repr_idx: np.ndarray, ratio: float, sequence_length: int,
                        offset: int = 0) -> list[int]:
    """Objframe indices kept by LEOD's WSOD sub-sampling of one sequence (all of them at ratio 1).

    LEOD's ``SequenceBase._subsample_labels``: every ``stride``-th labeled frame from index ``offset`` (the last
    labeled frame if that is none: LEOD keeps at least one); then ``SequenceForRandomAccess``: each shifted by
    the first frame with ``sequence_length`` representations of history, indices shifted past the end dropped.
    A sequence without such a frame keeps its unshifted frames (LEOD leaves it out of random access; streaming
    still uses its labels). ``[]`` only where the shift moves every frame past the end (possible with
    ``offset > 0``; LEOD's own code fails there with an IndexError). ``offset`` must be in ``[0, stride)``.
    """
    num_frames = len(objframe_idx_2_repr_idx)
    stride = wsod_stride(ratio)
    check_offset(offset, stride, f"the WSOD stride at ratio {ratio:g}")
    if parse_ratio(ratio) == FULL_RATIO:
        return list(range(num_frames))
    kept = list(range(offset, num_frames, stride)) or list(range(num_frames))[-1:]
    shift = history_shift(objframe_idx_2_repr_idx, sequence_length)
    return [i + shift for i in kept if i + shift < num_frames]


def history_shift(objframe_idx_2_repr_idx: np.ndarray, sequence_length: int) -> int:
    """Index of the first labeled frame with ``sequence_length`` representations of history (LEOD's
    ``start_idx_offset``); 0 if there is none (LEOD then shifts nothing)."""
    usable = np.flatnonzero(np.asarray(objframe_idx_2_repr_idx) - sequence_length + 1 >= 0)
    return int(usable[0]) if usable.size else 0


def check_offset(offset: int, num: int, what: str) -> None:
    """Raise ``ValueError`` unless ``offset`` is an integer in ``[0, num)`` (``what``: where ``num`` comes from)."""
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < num:
        raise ValueError(f"split offset {offset!r} is not in 0..{num - 1} ({what} is {num})")


def ssod_step(num_sequences: int, ratio: float) -> tuple[int, int]:
    """(number kept, step k) of LEOD's SSOD sub-sampling of ``num_sequences`` sorted names."""
    num_kept = round(num_sequences * parse_ratio(ratio))
    if num_kept == 0:
        raise ValueError(f"ratio {ratio} is too small for {num_sequences} sequences: it keeps none")
    return num_kept, num_sequences // num_kept


def ssod_kept_sequences(names: Sequence[str], ratio: float, offset: int = 0) -> list[str]:
    """Names of the fully labeled sequences: ``sorted(names)[offset::k][:num]`` (LEOD's ``subsample_list``).

    ``offset`` must be in ``[0, k)``: since ``k * num <= N``, every such offset keeps exactly ``num`` sequences,
    and different offsets keep disjoint ones."""
    num_kept, step = ssod_step(len(names), ratio)
    check_offset(offset, step, f"the SSOD step k of {len(names)} sequences at ratio {ratio:g}")
    return sorted(names)[offset::step][:num_kept]


def num_offsets(setting: str, ratio: float, num_sequences: int) -> int:
    """How many label splits ``setting`` has at ``ratio`` (valid offsets are ``0 .. n-1``): the WSOD stride,
    the SSOD step ``k`` of ``num_sequences`` training sequences, 1 for ``full``."""
    if setting == "wsod":
        return wsod_stride(ratio)
    if setting == "ssod":
        return ssod_step(num_sequences, ratio)[1]
    return 1


def check_split_offset(setting: str, ratio: float, num_sequences: int, offset: int) -> None:
    """Raise ``ValueError`` unless ``offset`` is one of the :func:`num_offsets` splits."""
    check_offset(offset, num_offsets(setting, ratio, num_sequences),
                 f"the number of {setting} label splits at ratio {ratio:g}")


@dataclass(frozen=True)
class LabelSplit:
    """Which ground-truth frames of each training sequence are kept (``[]``: none); ``offset``: which of the
    :func:`num_offsets` splits of this setting and ratio it is; ``unlabeled_sequences``: the recordings without
    labels among them (sorted; they keep ``[]``, and SSOD sub-samples the others)."""

    setting: str
    ratio: float
    sequence_length: int
    labeled_frames: dict[str, list[int]]
    offset: int = 0
    unlabeled_sequences: tuple[str, ...] = ()

    @property
    def num_sequences(self) -> int:
        return len(self.labeled_frames)

    @property
    def num_labeled_recordings(self) -> int:
        """Sequences with ground truth: the ``N`` of SSOD's sub-sampling."""
        return self.num_sequences - len(self.unlabeled_sequences)

    @property
    def num_labeled_sequences(self) -> int:
        return sum(1 for frames in self.labeled_frames.values() if frames)

    @property
    def num_labeled_frames(self) -> int:
        return sum(len(frames) for frames in self.labeled_frames.values())

    def summary(self) -> dict[str, int]:
        """Counts for humans, the ``offset``, and the WSOD ``stride`` or the SSOD ``k``."""
        counts = {"num_sequences": self.num_sequences, "num_labeled_sequences": self.num_labeled_sequences,
                  "num_labeled_frames": self.num_labeled_frames, "offset": self.offset}
        if self.setting == "wsod":
            counts["stride"] = wsod_stride(self.ratio)
        elif self.setting == "ssod":
            counts["k"] = ssod_step(self.num_labeled_recordings, self.ratio)[1]
        return counts

    def to_json(self) -> str:
        """JSON text with sorted sequence names, one line per sequence."""
        payload = {"version": FORMAT_VERSION, "setting": self.setting, "ratio": self.ratio,
                   "sequence_length": self.sequence_length, "offset": self.offset, "summary": self.summary(),
                   "unlabeled_sequences": sorted(self.unlabeled_sequences),
                   "labeled_frames": dict(sorted(self.labeled_frames.items()))}
        text = json.dumps(payload, indent=2)
        return _SPREAD_INT_LIST.sub(lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"

    @classmethod
    def from_json(cls, text: str, source: PathLike) -> "LabelSplit":
        """Parse and validate JSON text; problems raise :class:`FormatError` naming ``source``. A version 1
        file (no ``offset``) reads as offset 0, a version 1 or 2 file as without unlabeled sequences."""
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise FormatError(source, f"not valid JSON ({err})") from err
        version = _check_version(source, payload)
        labeled_frames = _check_labeled_frames(source, payload["labeled_frames"])
        split = cls(setting=_check_setting(source, payload["setting"]),
                    ratio=_check_ratio(source, payload["setting"], payload["ratio"]),
                    sequence_length=_check_sequence_length(source, payload["sequence_length"]),
                    labeled_frames=labeled_frames, offset=payload.get("offset", 0),
                    unlabeled_sequences=_check_unlabeled(source, payload.get("unlabeled_sequences", []),
                                                         labeled_frames))
        try:
            check_split_offset(split.setting, split.ratio, split.num_labeled_recordings, split.offset)
            summary = split.summary()
        except ValueError as err:
            raise FormatError(source, str(err)) from err
        if version == 1:
            del summary["offset"]
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


def _check_version(source: PathLike, payload: Any) -> int:
    """The file version of a parsed split file whose keys are those of its version."""
    version = payload.get("version") if isinstance(payload, dict) else None
    if version is None:
        raise FormatError(source, f"expected a JSON object with keys {sorted(_KEYS[FORMAT_VERSION])}")
    if type(version) is not int or version not in _KEYS:
        raise FormatError(source, f"unsupported version {version!r}, expected {FORMAT_VERSION} (or 1)")
    if set(payload) != _KEYS[version]:
        raise FormatError(source, f"expected a JSON object with keys {sorted(_KEYS[version])}")
    return version


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


def _check_unlabeled(source: PathLike, names: Any, labeled_frames: dict[str, list[int]]) -> tuple[str, ...]:
    if not isinstance(names, list) or names != sorted(set(names)) or not all(isinstance(n, str) for n in names):
        raise FormatError(source, "unlabeled_sequences must be a sorted list of unique sequence names")
    wrong = [name for name in names if labeled_frames.get(name) != []]
    if wrong:
        raise FormatError(source, f"unlabeled sequences {wrong} must be training sequences without kept frames")
    return tuple(names)


def _wsod_frames(repr_indices: dict[str, np.ndarray], ratio: float, sequence_length: int, offset: int,
                 unlabeled: set[str]) -> dict[str, list[int]]:
    frames = {}
    for name, repr_idx in repr_indices.items():
        if name in unlabeled:
            frames[name] = []
            continue
        frames[name] = wsod_labeled_frames(repr_idx, ratio, sequence_length, offset)
        if not frames[name]:
            log.warning("sequence %s keeps no label: the history shift moves its frames from offset %d past its "
                        "end", name, offset)
        elif repr_idx[-1] < sequence_length - 1:
            log.warning("sequence %s has no labeled frame with %d representations of history: it keeps frames %s "
                        "unshifted, as LEOD (random-access training skips it)", name, sequence_length, frames[name])
    return frames


def make_split(train_dir: PathLike, setting: str, ratio: float, sequence_length: int, offset: int = 0) -> LabelSplit:
    """Build split number ``offset`` (see :func:`num_offsets`) of ``setting`` of the preprocessed training
    sequences under ``train_dir`` (read once; see :func:`split_from_index`)."""
    return split_from_index(build_sequence_index(train_dir), setting, ratio, sequence_length, offset)


def split_from_index(index: SequenceIndex, setting: str, ratio: float, sequence_length: int,
                     offset: int = 0) -> LabelSplit:
    """Build split number ``offset`` (see :func:`num_offsets`) of ``setting`` of the training sequences that
    ``index`` lists (:mod:`leod_core.data.sequence_index`)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}, expected one of {SETTINGS}")
    ratio = parse_ratio(ratio)
    if setting == "full" and ratio != FULL_RATIO:
        raise ValueError(f"setting 'full' keeps every label and needs ratio 1, got {ratio}")
    if sequence_length < 1:
        raise ValueError(f"sequence_length must be positive, got {sequence_length}")
    unlabeled = index.unlabeled
    labeled = [name for name in index.names if name not in unlabeled]
    check_split_offset(setting, ratio, len(labeled), offset)
    repr_indices = index.repr_indices()
    if setting == "wsod":
        frames = _wsod_frames(repr_indices, ratio, sequence_length, offset, unlabeled)
    else:
        kept = set(ssod_kept_sequences(labeled, ratio, offset))
        frames = {name: list(range(len(idx))) if name in kept else [] for name, idx in repr_indices.items()}
    split = LabelSplit(setting, ratio, sequence_length, frames, offset, tuple(sorted(unlabeled)))
    log.info("%s split of %s at ratio %g (L=%d): %s", setting, index.source, ratio, sequence_length,
             ", ".join(f"{key} {value}" for key, value in split.summary().items()))
    if unlabeled:
        log.info("%d unlabeled recordings keep no label (pseudo-labelled): %s", len(unlabeled),
                 ", ".join(sorted(unlabeled)))
    return split


def write_split(path: PathLike, split: LabelSplit) -> None:
    """Write ``split`` as JSON atomically."""
    write_text_atomic(path, split.to_json())


def read_split(path: PathLike) -> LabelSplit:
    """Read and validate a split JSON file (see :meth:`LabelSplit.read`)."""
    return LabelSplit.read(path)
