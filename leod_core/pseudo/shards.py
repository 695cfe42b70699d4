"""Sharding pseudo-labelling over GPU jobs, shard manifests, and merging shards into one pseudo dataset.

Layout (``docs/layout.md``)::

    .../round{r+1}/pseudo/shards/{k}/train/{seq}/   # pseudo sequences of shard k (see leod_core.pseudo.writer)
    .../round{r+1}/pseudo/shards/{k}/shard.json     # manifest, written LAST: the shard is complete
    .../round{r+1}/pseudo/dataset/                  # merged pseudo dataset (RVT layout)
        train/{seq}/...                             # copies of the shards' label files + event symlinks
        val -> source val,  test -> source test     # symlinks (LEOD)
        pseudo_summary.json                         # counts and input fingerprint, written last

Which sequences each shard labels is the shard list's decision (:mod:`leod_core.pseudo.shard_list`). Decisions:

* A shard is complete iff ``shard.json`` exists and every non-empty sequence it lists is a complete
  sequence directory. Sequences without any box are listed under ``empty_sequences`` and have no directory.
  The manifest records per sequence the row counts and the SHA-256 of its two label files; the merge
  checks them, so a file damaged or changed after the shard finished is an error, not a silent mix.
* :func:`merge_shards` builds the whole dataset in a hidden sibling directory ``.{out_root.name}.tmp-*``
  and renames it to ``out_root`` at the end (a killed merge leaves no ``out_root``; the hidden directory can
  be deleted by hand). Files are copied, never moved: the shards stay intact and a merge can be rerun.
  Rerunning with the same shard manifests on a complete merged dataset checks it and returns its summary
  without writing anything. A different existing ``out_root`` is an error unless ``overwrite=True``, which
  swaps the new dataset in atomically, and only if ``out_root`` looks like a pseudo dataset (it holds
  nothing but ``train``, ``val``, ``test`` and ``pseudo_summary.json``); nothing outside ``out_root`` is
  ever deleted. An empty ``out_root`` directory is simply replaced.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from leod_core.data.atomic import atomic_dir, write_text_atomic
from leod_core.data.formats import FormatError, PathLike, read_labels
from leod_core.pseudo.shard_list import ShardList, assign_shards, sequence_lengths, split_sequence_lengths
from leod_core.pseudo.writer import (detect_downsampled, is_complete_sequence, label_counts, link_eval_splits,
                                     link_path, pseudo_sequence_files, samefile, sha256_bytes,
                                     verify_pseudo_sequence)

log = logging.getLogger(__name__)

__all__ = ["MANIFEST_NAME", "SUMMARY_NAME", "ShardManifest", "assign_shards", "is_shard_complete", "merge_shards",
           "read_shard_manifest", "sequence_lengths", "shard_sequence_dir", "split_sequence_lengths",
           "write_shard_manifest"]

MANIFEST_NAME = "shard.json"
SUMMARY_NAME = "pseudo_summary.json"
FORMAT_VERSION = 1
TRAIN = "train"
_MANIFEST_KEYS = {"version", "shard", "num_shards", "sequences", "empty_sequences", "extra"}
_RECORD_KEYS = {"downsampled_by_2", "frames", "boxes", "gt_rows", "pseudo_rows", "ignore_rows", "sha256"}
_COUNT_KEYS = ("frames", "boxes", "gt_rows", "pseudo_rows", "ignore_rows")
_DATASET_ENTRIES = {TRAIN, "val", "test", SUMMARY_NAME}


# ------------------------------------------------------------------------------------------ manifests
def shard_sequence_dir(shard_dir: PathLike, seq: str) -> Path:
    """Where a shard job writes sequence ``seq``: ``{shard_dir}/train/{seq}``."""
    return Path(shard_dir) / TRAIN / seq


@dataclass(frozen=True)
class ShardManifest:
    """Content of ``shard.json``: ``sequences`` maps each written sequence to its record (``downsampled_by_2``,
    row counts, ``sha256`` of its ``labels`` and ``objframe_idx_2_repr_idx`` files)."""

    shard: int
    num_shards: int
    sequences: dict[str, dict[str, Any]]
    empty_sequences: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def all_sequences(self) -> set[str]:
        return set(self.sequences) | set(self.empty_sequences)

    def to_json(self) -> str:
        payload = {"version": FORMAT_VERSION, "shard": self.shard, "num_shards": self.num_shards,
                   "sequences": dict(sorted(self.sequences.items())),
                   "empty_sequences": sorted(self.empty_sequences), "extra": self.extra}
        return json.dumps(payload, indent=1, sort_keys=True) + "\n"


def _sequence_record(seq_dir: Path) -> dict[str, Any]:
    ds = detect_downsampled(seq_dir)
    if ds is None or not is_complete_sequence(seq_dir):
        raise FormatError(seq_dir, "not a complete pseudo sequence directory")
    _, o2r_rel, labels_rel = pseudo_sequence_files(ds)
    seq_labels = read_labels(seq_dir / labels_rel)
    counts = {"frames": seq_labels.num_frames, **label_counts(seq_labels.labels)}
    return {"downsampled_by_2": ds, **counts,
            "sha256": {"labels": sha256_bytes((seq_dir / labels_rel).read_bytes()),
                       "objframe_idx_2_repr_idx": sha256_bytes((seq_dir / o2r_rel).read_bytes())}}


def _check_shard_index(where: PathLike, shard: Any, num_shards: Any) -> None:
    for key, value in (("shard", shard), ("num_shards", num_shards)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise FormatError(where, f"{key} must be an integer, got {value!r}")
    if not (num_shards >= 1 and 0 <= shard < num_shards):
        raise FormatError(where, f"shard {shard} is not in [0, num_shards={num_shards})")


def write_shard_manifest(shard_dir: PathLike, shard: int, num_shards: int, sequences: Sequence[str],
                         empty_sequences: Sequence[str], extra: Mapping[str, Any] | None = None) -> ShardManifest:
    """Record shard ``shard`` of ``num_shards`` as complete: call it LAST, after every sequence is written.

    ``sequences`` are the names written under ``{shard_dir}/train``; ``empty_sequences`` those without any box
    (not written). ``extra`` (JSON-serialisable, e.g. checkpoint and settings) is stored as is. Each written
    sequence is read back to record its counts and file hashes. Written atomically as ``shard.json``.
    """
    shard_dir = Path(shard_dir)
    manifest_path = shard_dir / MANIFEST_NAME
    _check_shard_index(manifest_path, shard, num_shards)
    names, empty = list(sequences), list(empty_sequences)
    for label, group in (("sequences", names), ("empty_sequences", empty)):
        if len(set(group)) != len(group):
            raise ValueError(f"{manifest_path}: {label} lists a name twice")
        if not all(isinstance(n, str) and n and "/" not in n and not n.startswith(".") for n in group):
            raise ValueError(f"{manifest_path}: invalid sequence name in {label}")
    both = sorted(set(names) & set(empty))
    if both:
        raise ValueError(f"{manifest_path}: sequences {both[:5]} are listed as written and as empty")
    records = {}
    for name in names:
        seq_dir = shard_sequence_dir(shard_dir, name)
        if not is_complete_sequence(seq_dir):
            raise FormatError(seq_dir, "listed in the shard manifest but not a complete pseudo sequence")
        records[name] = _sequence_record(seq_dir)
    present = {p.name for p in (shard_dir / TRAIN).iterdir()
               if not p.name.startswith(".")} if (shard_dir / TRAIN).is_dir() else set()
    unlisted = sorted(present - set(names))
    if unlisted:
        raise ValueError(f"{shard_dir / TRAIN}: sequences {unlisted[:5]} are on disk but not in the manifest")
    manifest = ShardManifest(int(shard), int(num_shards), records, tuple(sorted(empty)), dict(extra or {}))
    write_text_atomic(manifest_path, manifest.to_json())
    return manifest


def read_shard_manifest(shard_dir: PathLike) -> ShardManifest:
    """Read and validate ``{shard_dir}/shard.json`` (raises :class:`FormatError` naming it)."""
    path = Path(shard_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FormatError(path, "shard is incomplete: its manifest is missing (the job did not finish)")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FormatError(path, f"not valid JSON ({err})") from err
    if not isinstance(payload, dict) or set(payload) != _MANIFEST_KEYS:
        got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise FormatError(path, f"expected keys {sorted(_MANIFEST_KEYS)}, got {got}")
    if payload["version"] != FORMAT_VERSION:
        raise FormatError(path, f"unsupported manifest version {payload['version']!r}")
    _check_shard_index(path, payload["shard"], payload["num_shards"])
    sequences, empty, extra = payload["sequences"], payload["empty_sequences"], payload["extra"]
    if not isinstance(sequences, dict) or not isinstance(empty, list) or not isinstance(extra, dict):
        raise FormatError(path, "sequences must be an object, empty_sequences a list, extra an object")
    for name, record in sequences.items():
        ok = (isinstance(record, dict) and set(record) == _RECORD_KEYS and isinstance(record["downsampled_by_2"], bool)
              and all(type(record[k]) is int and record[k] >= 0 for k in _COUNT_KEYS)
              and isinstance(record["sha256"], dict)
              and set(record["sha256"]) == {"labels", "objframe_idx_2_repr_idx"}
              and all(isinstance(v, str) and len(v) == 64 for v in record["sha256"].values()))
        if not ok or not name or name.startswith(".") or "/" in name:
            raise FormatError(path, f"invalid record for sequence {name!r}")
    if not all(isinstance(n, str) and n and not n.startswith(".") and "/" not in n for n in empty) \
            or len(set(empty)) != len(empty):
        raise FormatError(path, "empty_sequences must be unique sequence names")
    if set(empty) & set(sequences):
        raise FormatError(path, f"sequences {sorted(set(empty) & set(sequences))[:5]} listed as written and empty")
    return ShardManifest(payload["shard"], payload["num_shards"], sequences, tuple(empty), extra)


def _incomplete_reason(shard_dir: Path, manifest: ShardManifest) -> str | None:
    for name in sorted(manifest.sequences):
        if not is_complete_sequence(shard_sequence_dir(shard_dir, name)):
            return f"sequence {name} is listed but {shard_sequence_dir(shard_dir, name)} is missing or incomplete"
    return None


def is_shard_complete(shard_dir: PathLike) -> bool:
    """True iff ``shard.json`` exists, is valid, and every non-empty sequence it lists is complete on disk."""
    try:
        manifest = read_shard_manifest(shard_dir)
    except FormatError:
        return False
    return _incomplete_reason(Path(shard_dir), manifest) is None


# ----------------------------------------------------------------------------------------------- merge
def _read_shards(shard_dirs: Sequence[PathLike], shards: ShardList | int) -> list[tuple[Path, ShardManifest]]:
    num_shards = shards.num_shards if isinstance(shards, ShardList) else shards
    if isinstance(num_shards, bool) or not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
        raise ValueError(f"num_shards must be an integer >= 1, got {num_shards!r}")
    found: dict[int, tuple[Path, ShardManifest]] = {}
    for shard_dir in map(Path, shard_dirs):
        manifest = read_shard_manifest(shard_dir)
        reason = _incomplete_reason(shard_dir, manifest)
        if reason:
            raise FormatError(shard_dir, f"shard {manifest.shard} is incomplete: {reason}")
        if manifest.num_shards != num_shards:
            raise FormatError(shard_dir / MANIFEST_NAME, f"shard {manifest.shard} was written for num_shards="
                                                         f"{manifest.num_shards}, but the merge expects {num_shards}")
        if manifest.shard in found:
            raise ValueError(f"shard {manifest.shard} is given twice: {found[manifest.shard][0]} and {shard_dir}")
        if isinstance(shards, ShardList):
            _check_listed(shard_dir, manifest, shards)
        found[manifest.shard] = (shard_dir, manifest)
    missing = [k for k in range(num_shards) if k not in found]
    if missing:
        raise ValueError(f"shards {missing} of {num_shards} are missing (given: {sorted(found)})")
    owner: dict[str, int] = {}
    for k in range(num_shards):
        for name in sorted(found[k][1].all_sequences):
            if name in owner:
                raise ValueError(f"sequence {name} is in shard {owner[name]} and shard {k}: shards must be disjoint")
            owner[name] = k
    return [found[k] for k in range(num_shards)]


def _check_listed(shard_dir: Path, manifest: ShardManifest, shards: ShardList) -> None:
    """A shard holds exactly the sequences that the shard list assigns it."""
    listed = set(shards.sequences(manifest.shard))
    if manifest.all_sequences != listed:
        missing, extra = sorted(listed - manifest.all_sequences), sorted(manifest.all_sequences - listed)
        raise FormatError(shard_dir / MANIFEST_NAME, f"shard {manifest.shard} holds other sequences than shard list "
                          f"{shards.path or '(given)'} assigns it (not labelled: {missing[:5]}, not listed: "
                          f"{extra[:5]}): it was labelled from another shard list")


def _fingerprint(shards: list[tuple[Path, ShardManifest]]) -> tuple[str, list[str]]:
    digests = [sha256_bytes((d / MANIFEST_NAME).read_bytes()) for d, _ in shards]
    return hashlib.sha256(json.dumps(digests).encode()).hexdigest(), digests


def _check_merged(out_root: Path, source_root: Path, summary: dict[str, Any]) -> str | None:
    """Why the merged dataset at ``out_root`` does not match its summary (None: it does)."""
    try:
        return _check_merged_records(out_root, source_root, summary["per_sequence"])
    except (KeyError, TypeError, AttributeError) as err:
        return f"{out_root / SUMMARY_NAME} is malformed ({err!r})"


def _check_merged_records(out_root: Path, source_root: Path, per_sequence: dict[str, Any]) -> str | None:
    for name, record in per_sequence.items():
        seq_dir = out_root / TRAIN / name
        ev_rel, o2r_rel, labels_rel = pseudo_sequence_files(record["downsampled_by_2"])
        if not is_complete_sequence(seq_dir):
            return f"{seq_dir} is missing or incomplete"
        for key, rel in (("labels", labels_rel), ("objframe_idx_2_repr_idx", o2r_rel)):
            if sha256_bytes((seq_dir / rel).read_bytes()) != record["sha256"][key]:
                return f"{seq_dir / rel} differs from the shard's file"
        if not samefile(seq_dir / ev_rel, source_root / TRAIN / name / ev_rel):
            return f"{seq_dir / ev_rel} does not resolve to the source's event file"
    for split in ("val", "test"):
        if (source_root / split).is_dir() and not samefile(out_root / split, source_root / split):
            return f"{out_root / split} is not a link to {source_root / split}"
    return None


def _copy_verified(src: Path, dst: Path, digest: str) -> None:
    data = src.read_bytes()
    if sha256_bytes(data) != digest:
        raise FormatError(src, "file changed since its shard manifest was written (SHA-256 mismatch)")
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)


def merge_shards(shard_dirs: Sequence[PathLike], out_root: PathLike, source_root: PathLike, shards: ShardList | int,
                 *, require_all_sequences: bool = True, kept_gt_frames: Mapping[str, Sequence[int]] | None = None,
                 num_classes: int | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Merge the complete shards ``0..N-1`` into the pseudo dataset ``out_root`` (see module docstring).

    Args:
        shard_dirs: the shard directories (any order); each must hold a complete shard.
        out_root: the merged dataset root (``.../pseudo/dataset``).
        source_root: the preprocessed source dataset (RVT layout): event files are linked from its ``train``,
            ``val``/``test`` are linked to it.
        shards: the shard list the shards were labelled from (:func:`~leod_core.pseudo.shard_list.read_shard_list`:
            there are its N shards, and each holds exactly the sequences it assigns), or just N.
        require_all_sequences: every sequence of ``{source_root}/train`` must be in exactly one shard
            (written or empty), and no shard may hold a sequence the source lacks.
        kept_gt_frames: if given (``LabelSplit.labeled_frames``), every merged sequence is checked with
            :func:`verify_pseudo_sequence` (with ``num_classes``) while merging; an up-to-date existing
            merge is returned without re-verifying.
        overwrite: replace an existing different merged dataset.

    Returns the summary written to ``{out_root}/pseudo_summary.json``: counts of ``sequences`` (with boxes),
    ``empty_sequences`` (names), ``frames``, ``boxes``, ``gt_rows``, ``pseudo_rows``, ``ignore_rows``, the
    input fingerprint and per-sequence records.
    """
    out_root, source_root = Path(out_root), Path(source_root)
    complete = _read_shards(shard_dirs, shards)
    num_shards = len(complete)
    fingerprint, digests = _fingerprint(complete)
    per_sequence = {name: rec for _, m in complete for name, rec in m.sequences.items()}
    empty = sorted(name for _, m in complete for name in m.empty_sequences)
    if require_all_sequences:
        source_names = set(sequence_dirs_of(source_root / TRAIN))
        merged = set(per_sequence) | set(empty)
        if source_names != merged:
            raise ValueError(f"shards do not cover {source_root / TRAIN} exactly: missing from the shards "
                             f"{sorted(source_names - merged)[:5]}, "
                             f"not in the source {sorted(merged - source_names)[:5]}")

    summary_path = out_root / SUMMARY_NAME
    if os.path.lexists(out_root):
        if not out_root.is_dir() or out_root.is_symlink():
            raise FileExistsError(f"{out_root} exists and is not a directory: refusing to replace it")
        entries = {p.name for p in out_root.iterdir()}
        if summary_path.is_file():
            try:
                old = json.loads(summary_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                old = {}
            if isinstance(old, dict) and old.get("inputs_sha256") == fingerprint:
                reason = _check_merged(out_root, source_root, old)
                if reason is None:
                    log.info("%s is up to date with its %d shards: nothing to do", out_root, num_shards)
                    return old
                if not overwrite:
                    raise FormatError(out_root, f"merged dataset is damaged ({reason}); pass overwrite=True to "
                                                "rebuild it")
            elif not overwrite:
                raise FileExistsError(f"{out_root} holds a pseudo dataset merged from other shards; pass "
                                      "overwrite=True to replace it")
        elif entries and not overwrite:
            raise FileExistsError(f"{out_root} exists and is not a complete pseudo dataset; remove it or pass "
                                  "overwrite=True")
        if entries - _DATASET_ENTRIES:
            raise FileExistsError(f"{out_root} holds {sorted(entries - _DATASET_ENTRIES)[:5]}, not only a pseudo "
                                  "dataset: refusing to replace it")

    totals = {key: 0 for key in _COUNT_KEYS}
    with atomic_dir(out_root) as staging:
        (staging / TRAIN).mkdir()
        for shard_dir, manifest in complete:
            for name in sorted(manifest.sequences):
                record = manifest.sequences[name]
                ev_rel, o2r_rel, labels_rel = pseudo_sequence_files(record["downsampled_by_2"])
                src_seq, dst_seq = shard_sequence_dir(shard_dir, name), staging / TRAIN / name
                target = source_root / TRAIN / name / ev_rel
                if not target.is_file():
                    raise FormatError(target, f"source event file of sequence {name} is missing")
                if (src_seq / ev_rel).exists() and not samefile(src_seq / ev_rel, target):
                    raise FormatError(src_seq / ev_rel, f"shard {manifest.shard} was labelled from another "
                                                        f"source than {target}")
                _copy_verified(src_seq / o2r_rel, dst_seq / o2r_rel, record["sha256"]["objframe_idx_2_repr_idx"])
                _copy_verified(src_seq / labels_rel, dst_seq / labels_rel, record["sha256"]["labels"])
                link_path(dst_seq / ev_rel, target)
                if kept_gt_frames is not None:
                    if name not in kept_gt_frames:
                        raise ValueError(f"kept_gt_frames has no entry for sequence {name}")
                    verify_pseudo_sequence(dst_seq, source_root / TRAIN / name, kept_gt_frames[name],
                                           num_classes=num_classes)
                for key in _COUNT_KEYS:
                    totals[key] += record[key]
        link_eval_splits(staging, source_root)
        summary = {"version": FORMAT_VERSION, "num_shards": num_shards, "inputs_sha256": fingerprint,
                   "shard_manifests_sha256": digests, "source_root": str(source_root),
                   "sequences": len(per_sequence), "empty_sequences": empty, **totals,
                   "shards": [{"shard": m.shard, "sequences": len(m.sequences),
                               "empty_sequences": len(m.empty_sequences), "extra": m.extra} for _, m in complete],
                   "per_sequence": dict(sorted(per_sequence.items()))}
        write_text_atomic(staging / SUMMARY_NAME, json.dumps(summary, indent=1, sort_keys=True) + "\n")
    log.info("merged %d shards into %s: %d sequences (%d empty), %d frames, %d boxes", num_shards, out_root,
             summary["sequences"], len(empty), totals["frames"], totals["boxes"])
    return summary


def sequence_dirs_of(split_dir: PathLike) -> list[str]:
    """Names of the (non-hidden) sequence directories of a split directory."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise ValueError(f"split directory {split_dir} does not exist")
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
