"""LEOD/RVT training loaders: random access, streaming, and mixed sampling (``modules/data/genx.py``).

The datasets live in :mod:`leod_core.data.train_datasets` (re-exported here), the sample/batch contract in
:mod:`leod_core.data.batch`, the per-sequence logic in :mod:`leod_core.data.sequence`.

* :class:`RandomAccessDataset` (LEOD ``dataset_rnd.py``): map-style; sample ``i`` = ``L`` representations
  ending at a labeled frame, augmentation drawn per sample; batched by a shuffling ``DataLoader`` with
  ``drop_last=True``.
* :class:`StreamingDataset` (LEOD ``dataset_streaming.py`` + ``ConcatStreamingDataPipe``): iterable; every
  DataLoader worker builds whole batches of ``B`` slots, each slot streaming its own shuffled concatenation
  of *all* sequences (so every slot visits every sequence exactly once per pass, and all slots end together);
  augmentation is drawn once per sequence of a slot. Batches carry the worker id: the training loop keys the
  RNN states by it (column ``b`` = slot ``b`` of that worker), see :mod:`leod_core.data.batch`.
* :class:`MixedLoader`: one stream batch and one random batch per step, concatenated stream first
  (``merge_mixed_batches``), with LEOD's batch-size and worker split (:func:`mixed_split`).

Label semantics (:func:`select_sequences`): with a WSOD split, every sequence streams whole and only the
split's frames are training labels, the others are ``skipped_labels``; with an SSOD or full split, the
sequences with ``[]`` are left out of training and the others keep all labels; without a split (a
pseudo-label dataset of self-training) every labeled frame is used, pseudo rows (``t == 0``) and ignore
boxes (class 1024) included. Without WSOD sub-sampling, streams are split at gaps of more than ``L``
representations between labeled frames (LEOD's ``guarantee_labels``).

HDF5 files are opened lazily in the process that reads them (never shared across ``fork``); importing this
module imports ``hdf5plugin`` (via :mod:`leod_core.data.formats`), as workers need it for Blosc.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader

from leod_core.data.augment import AugmentConfig
from leod_core.data.batch import Batch, merge_mixed_batches
from leod_core.data.cameras import DEFAULT_CAMERA, get_camera
from leod_core.data.formats import PathLike
from leod_core.data.sequence import SequenceReader
from leod_core.data.splits import LabelSplit, read_split
from leod_core.data.train_datasets import (RandomAccessDataset, StreamingDataset, build_streams, collate_random,
                                           identity_collate)

log = logging.getLogger(__name__)

__all__ = ["SAMPLINGS", "MixedLoader", "RandomAccessDataset", "StreamingDataset", "TrainSequence", "build_streams",
           "build_train_loader", "mixed_split", "select_sequences"]

SAMPLINGS = ("random", "stream", "mixed")
TRAIN_DIR = "train"
#: The camera whose resolution handling and time-flip shift are the loader's defaults (LEOD's Gen1).
_DEFAULT = get_camera(DEFAULT_CAMERA)


# ------------------------------------------------------------------------------------------ selection
@dataclass(frozen=True)
class TrainSequence:
    """A training sequence directory, its kept labeled frames (``None``: all) and its streaming mode."""

    path: Path
    kept_frames: tuple[int, ...] | None
    guarantee_labels: bool


def select_sequences(data_dir: PathLike, split: LabelSplit | None) -> list[TrainSequence]:
    """Training sequences of ``{data_dir}/train`` under ``split`` (see the module docstring)."""
    train_dir = Path(data_dir) / TRAIN_DIR
    if not train_dir.is_dir():
        raise ValueError(f"training directory {train_dir} does not exist")
    dirs = sorted(p for p in train_dir.iterdir() if p.is_dir())
    if not dirs:
        raise ValueError(f"training directory {train_dir} has no sequence directories")
    if split is None:
        return [TrainSequence(d, None, True) for d in dirs]
    names = {d.name for d in dirs}
    missing = sorted(set(split.labeled_frames) - names)
    extra = sorted(names - set(split.labeled_frames))
    if missing or extra:
        raise ValueError(f"label split and {train_dir} disagree: sequences missing on disk {missing[:5]}, "
                         f"absent from the split {extra[:5]}")
    wsod = split.setting == "wsod"
    out = [TrainSequence(d, tuple(split.labeled_frames[d.name]), guarantee_labels=not wsod)
           for d in dirs if split.labeled_frames[d.name]]
    if not out:
        raise ValueError(f"label split keeps no labeled sequence in {train_dir}")
    unlabeled = [d.name for d in dirs if not split.labeled_frames[d.name]]
    if wsod and unlabeled:     # (SSOD leaves whole sequences unlabeled by design)
        log.warning("%d of %d WSOD sequences keep no labeled frame and are left out of training: %s",
                    len(unlabeled), len(dirs), ", ".join(unlabeled))
    return out


def _as_split(split: LabelSplit | PathLike | None) -> LabelSplit | None:
    if split is None or isinstance(split, LabelSplit):
        return split
    return read_split(split)


# ---------------------------------------------------------------------------------------------- mixed
def mixed_split(batch_size: int, num_workers: int, w_stream: float, w_random: float) -> tuple[int, int, int, int]:
    """LEOD ``set_mixed_sampling_mode_variables_for_train``: ``(bs_stream, bs_random, workers_stream,
    workers_random)``.

    ``bs_rnd = min(round(B * w_r / (w_s + w_r)), B - 1)``; ``workers_rnd = min(ceil(nw * bs_rnd / B), nw - 1)``.
    LEOD requires ``num_workers >= 2``; here ``num_workers == 0`` (everything in the main process) is allowed.
    """
    if batch_size < 2:
        raise ValueError(f"mixed sampling needs batch_size >= 2, got {batch_size}")
    if w_stream <= 0 or w_random <= 0:
        raise ValueError(f"mixed sampling needs positive weights, got w_stream={w_stream}, w_random={w_random}")
    if num_workers == 1 or num_workers < 0:
        raise ValueError(f"mixed sampling needs num_workers == 0 or >= 2, got {num_workers}")
    bs_rnd = min(round(batch_size * w_random / (w_stream + w_random)), batch_size - 1)
    if bs_rnd < 1:
        raise ValueError(f"w_random={w_random}, w_stream={w_stream} leave no random sample in a batch of {batch_size}")
    bs_str = batch_size - bs_rnd
    workers_rnd = min(math.ceil(num_workers * bs_rnd / batch_size), num_workers - 1) if num_workers else 0
    return bs_str, bs_rnd, num_workers - workers_rnd, workers_rnd


class MixedLoader:
    """Iterates a stream and a random-access loader in lockstep and yields merged batches (stream first).

    One pass ends when both loaders have been exhausted at least once; the one that ends first restarts
    (PyTorch Lightning's ``max_size_cycle`` for a dict of train loaders, which LEOD uses).
    """

    def __init__(self, stream_loader: DataLoader, random_loader: DataLoader):
        if len(random_loader) == 0:
            raise ValueError("the random-access loader yields no batch (fewer samples than its batch size)")
        self.stream_loader = stream_loader
        self.random_loader = random_loader

    def __iter__(self) -> Iterator[Batch]:
        loaders = (self.stream_loader, self.random_loader)
        iters = [iter(x) for x in loaders]
        done = [False, False]
        while True:
            batches = []
            for k in range(2):
                batch = next(iters[k], None)
                if batch is None:
                    done[k] = True
                    if all(done):
                        return
                    iters[k] = iter(loaders[k])
                    batch = next(iters[k], None)
                    if batch is None:
                        raise RuntimeError("a loader yields no batch")
                batches.append(batch)
            yield merge_mixed_batches(batches[0], batches[1])


# -------------------------------------------------------------------------------------------- factory
def _loader_kwargs(num_workers: int, generator: torch.Generator, persistent_workers: bool, pin_memory: bool) -> dict:
    kwargs = dict(num_workers=num_workers, generator=generator, pin_memory=pin_memory)
    if num_workers > 0:
        kwargs["persistent_workers"] = persistent_workers
    return kwargs


def build_train_loader(data_dir: PathLike, split: LabelSplit | PathLike | None, sampling: str, batch_size: int,
                       sequence_length: int, num_workers: int = 0, aug_config: AugmentConfig | None = AugmentConfig(),
                       w_stream: float = 1.0, w_random: float = 1.0,
                       downsampled_by_2: bool = _DEFAULT.downsampled_by_2, tflip_offset: int = _DEFAULT.tflip_offset,
                       seed: int = 0, *, resolution_hw: tuple[int, int] | None = None,
                       ev_dtype: torch.dtype = torch.float32, persistent_workers: bool = False,
                       pin_memory: bool = False
                       ) -> DataLoader | MixedLoader:
    """The training loader of ``{data_dir}/train`` (an iterable of :class:`Batch`).

    Args:
        data_dir: preprocessed dataset root (``train/<seq>/...``).
        split: label split (object or JSON path); ``None`` uses every labeled frame (pseudo-label datasets).
        sampling: ``'random'``, ``'stream'`` or ``'mixed'``.
        batch_size: total ``B`` (split into stream + random for ``'mixed'``).
        sequence_length: ``L`` (the camera's ``sequence_length``; LEOD: 21 gen1, 5 gen4, 10 gen4 label-efficient).
        num_workers: total DataLoader workers (split for ``'mixed'``).
        aug_config: augmentation; ``None`` for none. Default: LEOD's label-efficient probabilities.
        w_stream, w_random: mixed-sampling weights.
        downsampled_by_2: read the ``_ds2_nearest`` representations, halve the boxes (the camera's
            ``downsampled_by_2``: gen4).
        tflip_offset: label shift of time-flipped samples (the camera's ``tflip_offset``: gen1 -1, gen4 -2).
        seed: seeds each DataLoader's ``generator``, which drives the shuffling and the augmentation (in the
            main process directly, in workers through the worker seeds): reseeding ``loader.generator`` (both
            loaders' for ``'mixed'``) before a pass makes that pass reproducible.
        resolution_hw: sensor resolution the boxes are clamped to (default: from the HDF5 frame size).
        ev_dtype: dtype of ``ev_repr`` (float32; uint8 is exact and 4x lighter to move between processes).
        persistent_workers: keep DataLoader workers alive across passes.
        pin_memory: pin batches (LEOD pins them for GPU training).
    """
    if sampling not in SAMPLINGS:
        raise ValueError(f"unknown sampling {sampling!r}, expected one of {SAMPLINGS}")
    if sequence_length < 1 or batch_size < 1 or num_workers < 0:
        raise ValueError("sequence_length and batch_size must be positive and num_workers non-negative")
    selected = select_sequences(data_dir, _as_split(split))
    readers = [SequenceReader(s.path, downsampled_by_2=downsampled_by_2, kept_frames=s.kept_frames,
                              resolution_hw=resolution_hw) for s in selected]
    rnd_aug = aug_config.random if aug_config is not None else None
    str_aug = aug_config.stream if aug_config is not None else None

    def random_loader(bs: int, workers: int) -> DataLoader:
        gen = torch.Generator().manual_seed(seed)
        dataset = RandomAccessDataset(readers, sequence_length, rnd_aug, tflip_offset, seed, ev_dtype, gen)
        return DataLoader(dataset, batch_size=bs, shuffle=True, drop_last=True, collate_fn=collate_random,
                          **_loader_kwargs(workers, gen, persistent_workers, pin_memory))

    def stream_loader(bs: int, workers: int) -> DataLoader:
        gen = torch.Generator().manual_seed(seed + 1)
        streams = build_streams(readers, [s.guarantee_labels for s in selected], sequence_length, tflip_offset)
        dataset = StreamingDataset(streams, bs, str_aug, seed + 1, ev_dtype, gen)
        return DataLoader(dataset, batch_size=None, collate_fn=identity_collate,
                          **_loader_kwargs(workers, gen, persistent_workers, pin_memory))

    if sampling == "random":
        return random_loader(batch_size, num_workers)
    if sampling == "stream":
        return stream_loader(batch_size, num_workers)
    bs_str, bs_rnd, workers_str, workers_rnd = mixed_split(batch_size, num_workers, w_stream, w_random)
    log.info("mixed sampling: stream %d samples / %d workers, random %d samples / %d workers",
             bs_str, workers_str, bs_rnd, workers_rnd)
    return MixedLoader(stream_loader(bs_str, workers_str), random_loader(bs_rnd, workers_rnd))
