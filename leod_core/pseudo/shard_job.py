"""One pseudo-labelling job: shard ``k`` of the training sequences (what ``leod pseudo-label`` runs).

The shard list (:mod:`leod_core.pseudo.shard_list`, the workflow's ``shard_list.json``) says which sequences the
shard holds. Sequences already complete in the shard directory are not recomputed, so a killed job reruns only
what it had not finished; ``shard.json`` is written last.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from leod_core.data.formats import SequenceLabels
from leod_core.data.splits import read_split
from leod_core.models.checkpoint import load_model_checkpoint
from leod_core.pseudo.labeler import pseudo_label_sequences
from leod_core.pseudo.shard_list import ShardList, make_shard_list, shard_sequences, split_sequence_lengths
from leod_core.pseudo.shards import (ShardManifest, is_shard_complete, read_shard_manifest, shard_sequence_dir,
                                     write_shard_manifest)
from leod_core.pseudo.tracker import TrackerConfig
from leod_core.pseudo.tta import TTAConfig
from leod_core.pseudo.writer import is_complete_sequence, write_pseudo_sequence

__all__ = ["pseudo_label_shard", "shard_sequences"]

log = logging.getLogger(__name__)


def pseudo_label_shard(checkpoint: Path, data_dir: Path, split_path: Path, shard_dir: Path, shard: int,
                       shards: ShardList | int, tta_cfg: TTAConfig, tracker_cfg: TrackerConfig, device: str = "cpu",
                       progress: bool = True) -> ShardManifest:
    """Pseudo-label shard ``shard`` into ``shard_dir`` (``train/<seq>`` + ``shard.json``): the sequences that the
    shard list ``shards`` (:func:`~leod_core.pseudo.shard_list.read_shard_list`) assigns it. An integer N instead
    makes the list of N shards here, as the workflow's shard list job does (a library call without a list)."""
    shard_dir = Path(shard_dir)
    if is_shard_complete(shard_dir):
        log.info("%s is complete; nothing to do", shard_dir)
        return read_shard_manifest(shard_dir)
    if not isinstance(shards, ShardList):
        shards = make_shard_list(split_sequence_lengths(Path(data_dir), Path(split_path), tta_cfg.downsampled_by_2),
                                 shards)
    names, num_shards = shards.sequences(shard), shards.num_shards
    split = read_split(split_path)
    unknown = sorted(set(names) - set(split.labeled_frames))
    if unknown:
        raise ValueError(f"shard list {shards.path or '(given)'} assigns shard {shard} sequences {unknown[:5]} that "
                         f"split {split_path} does not have: it was made for another split")
    todo = [n for n in names if not is_complete_sequence(shard_sequence_dir(shard_dir, n))]
    log.info("shard %d/%d: %d sequences, %d already written", shard, num_shards, len(names), len(names) - len(todo))
    empty: list[str] = []

    def write(name: str, source_seq_dir: Path, labels: SequenceLabels, objframe_idx_2_repr_idx: np.ndarray) -> None:
        if len(objframe_idx_2_repr_idx) == 0:
            empty.append(name)
            return
        write_pseudo_sequence(shard_sequence_dir(shard_dir, name), source_seq_dir, labels, objframe_idx_2_repr_idx,
                              tta_cfg.downsampled_by_2)

    model, _ = load_model_checkpoint(Path(checkpoint))
    model = model.to(device).eval()
    stats = pseudo_label_sequences(model, Path(data_dir) / "train", split, todo, None, tta_cfg,
                                   tracker_cfg, device, write, progress) if todo else {}
    written = [n for n in names if n not in set(empty)]
    if empty:
        log.warning("%d of %d sequences have no box (no GT kept, no prediction left after filtering): recorded as "
                    "empty in shard.json, not written: %s", len(empty), len(todo), ", ".join(empty))
    log.info("shard %d/%d done: %s", shard, num_shards, ", ".join(f"{k} {v:g}" for k, v in stats.items()))
    return write_shard_manifest(shard_dir, shard, num_shards, written, empty,
                                extra={"checkpoint": str(checkpoint), "stats": stats})
