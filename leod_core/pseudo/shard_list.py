"""Which training sequences each pseudo-labelling shard labels: the shard list (``shard_list.json``).

The shard list is the one place that assigns sequences to shards. The workflow's ``shard_list`` checkpoint
writes it once per round (:func:`write_shard_list`); every ``leod pseudo-label --shard-list FILE --shard K`` job
labels the sequences it lists for shard ``K`` (:func:`shard_sequences`), and ``leod merge-shards --shard-list
FILE`` checks every shard against it (:func:`leod_core.pseudo.shards.merge_shards`). Layout::

    {"version": 1, "num_shards": N, "requested_shards": n, "num_sequences": S,
     "shards": [["seq_a", "seq_d"], ["seq_b", "seq_c"], ...]}     # N lists, names sorted in each

``N = min(n, S)`` (:func:`make_shard_list`): no shard is left without a sequence. Decisions:

* :func:`assign_shards` is longest-processing-time greedy over sequence lengths (number of representations),
  deterministic; more shards than sequences gives empty shards (the list caps them, a direct call does not).
* A shard list names every training sequence of the split exactly once; reading one checks that the shards are
  disjoint and the counts agree, and raises :class:`~leod_core.data.formats.FormatError` naming the file.
"""
from __future__ import annotations

import heapq
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import FormatError, PathLike
from leod_core.data.sequence_index import build_sequence_index, read_sequence_index
from leod_core.data.splits import read_split

__all__ = ["SHARD_LIST_VERSION", "ShardList", "assign_shards", "make_shard_list", "read_shard_list",
           "sequence_lengths", "shard_sequences", "split_sequence_lengths", "write_shard_list"]

SHARD_LIST_VERSION = 1
TRAIN = "train"
_REQUIRED_KEYS = {"version", "num_shards", "shards"}


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def assign_shards(sequence_lengths: Mapping[str, int], num_shards: int) -> list[list[str]]:
    """Split sequences into ``num_shards`` length-balanced shards, deterministically.

    Longest-processing-time greedy: sequences sorted by length (descending) then name each go to the
    currently lightest shard (ties: lowest shard index). Every sequence lands in exactly one shard, names are
    sorted inside a shard, and max - min shard load <= the longest sequence. With more shards than
    sequences, the extra shards are empty.
    """
    _check_count("num_shards", num_shards)
    for name, length in sequence_lengths.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"sequence names must be non-empty strings, got {name!r}")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(f"sequence {name}: length must be a non-negative integer, got {length!r}")
    heap = [(0, k) for k in range(int(num_shards))]
    shards: list[list[str]] = [[] for _ in range(int(num_shards))]
    for name, length in sorted(sequence_lengths.items(), key=lambda item: (-int(item[1]), item[0])):
        load, k = heapq.heappop(heap)
        shards[k].append(name)
        heapq.heappush(heap, (load + int(length), k))
    return [sorted(names) for names in shards]


def sequence_lengths(data_dir: PathLike, split: str = TRAIN, downsampled_by_2: bool = False) -> dict[str, int]:
    """Number of event representations of each sequence of ``{data_dir}/{split}`` (from the validated HDF5
    shape; hidden directories are skipped)."""
    return build_sequence_index(Path(data_dir) / split).lengths(downsampled_by_2)


def split_sequence_lengths(data_dir: Path, split_path: Path, downsampled_by_2: bool,
                           sequence_index: Optional[Path] = None) -> dict[str, int]:
    """Number of representations of every training sequence of the split (all must exist in ``data_dir``), read
    from the ``sequence_index`` file when given (:mod:`leod_core.data.sequence_index`), else from the tree."""
    split = read_split(split_path)
    index = read_sequence_index(sequence_index) if sequence_index else build_sequence_index(Path(data_dir) / TRAIN)
    lengths = index.lengths(downsampled_by_2)
    missing = sorted(set(split.labeled_frames) - set(lengths))
    if missing:
        raise ValueError(f"{split_path}: sequences {missing[:5]} are not in {index.source}")
    return {name: lengths[name] for name in split.labeled_frames}


@dataclass(frozen=True)
class ShardList:
    """A shard list: ``shards[k]`` are the (sorted) sequence names of shard ``k``; ``requested_shards`` the
    number asked for (``self_training.num_shards``); ``path`` the file it was read from, for messages."""

    shards: tuple[tuple[str, ...], ...]
    requested_shards: int
    path: str = field(default="", compare=False)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def num_sequences(self) -> int:
        return sum(len(names) for names in self.shards)

    def sequences(self, shard: int) -> list[str]:
        """The sequences of shard ``shard``; a ``ValueError`` naming the range for an index outside it."""
        if isinstance(shard, bool) or not isinstance(shard, (int, np.integer)) or not 0 <= shard < self.num_shards:
            where = f" of shard list {self.path}" if self.path else ""
            raise ValueError(f"shard {shard} is not in [0, {self.num_shards}){where}")
        return list(self.shards[shard])

    def to_dict(self) -> dict[str, Any]:
        return {"version": SHARD_LIST_VERSION, "num_shards": self.num_shards,
                "requested_shards": self.requested_shards, "num_sequences": self.num_sequences,
                "shards": [list(names) for names in self.shards]}


def make_shard_list(lengths: Mapping[str, int], requested_shards: int) -> ShardList:
    """The shard list of sequences of these lengths: ``min(requested_shards, sequences)`` length-balanced shards
    (:func:`assign_shards`), so that no shard is empty."""
    _check_count("num_shards", requested_shards)
    if not lengths:
        raise ValueError("there are no sequences to shard")
    shards = assign_shards(lengths, min(int(requested_shards), len(lengths)))
    return ShardList(tuple(tuple(names) for names in shards), int(requested_shards))


def write_shard_list(data_dir: Path, split_path: Path, requested_shards: int, downsampled_by_2: bool,
                     out: Path, sequence_index: Optional[Path] = None) -> ShardList:
    """Make the shard list of the split's training sequences (lengths from the ``sequence_index`` file when
    given) and write it to ``out`` (atomically)."""
    lengths = split_sequence_lengths(data_dir, split_path, downsampled_by_2, sequence_index)
    listing = make_shard_list(lengths, requested_shards)
    write_text_atomic(out, json.dumps(listing.to_dict(), indent=1) + "\n")
    return ShardList(listing.shards, listing.requested_shards, str(out))


def _valid_name(name: Any) -> bool:
    return isinstance(name, str) and bool(name) and "/" not in name and not name.startswith(".")


def read_shard_list(path: PathLike) -> ShardList:
    """Read and check a shard list file (:class:`FormatError` naming it and the problem)."""
    try:
        payload = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(path, f"not a shard list: not valid JSON ({err})") from err
    if not isinstance(payload, dict) or not _REQUIRED_KEYS <= set(payload):
        raise FormatError(path, f"not a shard list (needs keys {sorted(_REQUIRED_KEYS)})")
    if payload["version"] != SHARD_LIST_VERSION:
        raise FormatError(path, f"not a shard list of version {SHARD_LIST_VERSION}: version {payload['version']!r}")
    shards, count = payload["shards"], payload["num_shards"]
    if not isinstance(shards, list) or not all(isinstance(s, list) and all(map(_valid_name, s)) for s in shards):
        raise FormatError(path, "not a shard list: shards must be lists of sequence names")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1 or len(shards) != count:
        raise FormatError(path, f"not a shard list (needs num_shards >= 1 and that many shards, got {count!r} "
                                f"and {len(shards)})")
    names = [name for names in shards for name in names]
    if len(set(names)) != len(names):
        raise FormatError(path, "shards must be disjoint: a sequence is listed twice")
    if payload.get("num_sequences", len(names)) != len(names):
        raise FormatError(path, f"num_sequences {payload['num_sequences']!r} but {len(names)} sequences listed")
    requested = payload.get("requested_shards", count)
    return ShardList(tuple(tuple(names) for names in shards), requested, str(path))


def shard_sequences(shard_list_path: PathLike, shard: int) -> list[str]:
    """The sequences that the shard list file assigns to shard ``shard``."""
    return read_shard_list(shard_list_path).sequences(shard)
