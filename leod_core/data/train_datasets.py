"""The two training datasets of LEOD/RVT (plain ``torch.utils.data``; see :mod:`leod_core.data.loaders`).

* :class:`RandomAccessDataset` (LEOD ``dataset_rnd.py``): map-style; sample ``i`` = the ``L`` representations
  ending at a labeled frame; augmentation (time flip included) drawn per sample.
* :class:`StreamingDataset` (LEOD ``ConcatStreamingDataPipe`` over ``RandAugmentIterDataPipe``): iterable;
  yields whole batches whose ``B`` slots each stream a shuffled concatenation of all streams; augmentation
  drawn once per stream of a slot.

Randomness comes from a ``torch.Generator`` per process: seeded from ``seed`` in the main process and from
the DataLoader worker seed (itself derived from the loader's seeded generator) in a worker.
"""
from __future__ import annotations

import bisect
import itertools
import logging
import os
from dataclasses import replace
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from leod_core.data.augment import AugmentState, SamplerAugmentConfig, apply_augmentation, sample_augment_state
from leod_core.data.batch import Batch, Sample, collate_samples
from leod_core.data.sequence import RandomAccessSequence, SequenceReader, StreamSequence, guaranteed_label_ranges

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------- helpers
def _worker_id() -> int:
    info = get_worker_info()
    return 0 if info is None else info.id


class _ProcessRng:
    """The random source of a dataset in the current process.

    In a DataLoader worker: a generator seeded from the worker seed (which the DataLoader derives from its own
    seeded generator). In the main process: the loader's ``shared`` generator when given (so that reseeding
    the loader's generator before a pass fixes the whole pass, shuffling and augmentation alike), else a
    generator seeded from ``seed``. Generators are never pickled to spawned workers.
    """

    def __init__(self, seed: int, shared: torch.Generator | None = None):
        self.seed = seed
        self.shared = shared
        self._pid: int | None = None
        self._gen: torch.Generator | None = None

    def get(self) -> torch.Generator:
        info = get_worker_info()
        if info is None and self.shared is not None:
            return self.shared
        if self._pid != os.getpid() or self._gen is None:
            self._gen = torch.Generator().manual_seed(info.seed if info is not None else self.seed)
            self._pid = os.getpid()
        return self._gen

    def __getstate__(self):
        return {"seed": self.seed, "shared": None, "_pid": None, "_gen": None}


def _finish(sample: Sample, aug: SamplerAugmentConfig | None, state: AugmentState | None,
            gen: torch.Generator, ev_dtype: torch.dtype) -> Sample:
    if aug is not None and state is not None:
        ev, labels, skipped, state = apply_augmentation(sample.ev_repr, sample.labels, sample.skipped_labels,
                                                        state, aug, gen, dtype=ev_dtype)
        sample.ev_repr, sample.labels, sample.skipped_labels, sample.augmentation = ev, labels, skipped, state
    sample.ev_repr = sample.ev_repr.to(ev_dtype)
    return sample


# -------------------------------------------------------------------------------------- random access
class RandomAccessDataset(Dataset):
    """LEOD ``build_random_access_dataset``: the concatenation of every sequence's random-access samples.

    ``aug`` is the random sampler's augmentation (``None``: none). A drawn time flip is dropped for a sequence
    whose only kept frame is its last labeled frame (LEOD). ``generator``: the DataLoader's generator, used
    for the augmentation and the redraws when loading in the main process (see :class:`_ProcessRng`).
    """

    def __init__(self, readers: Sequence[SequenceReader], sequence_length: int, aug: SamplerAugmentConfig | None,
                 tflip_offset: int = -1, seed: int = 0, ev_dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None):
        seqs = [RandomAccessSequence(r, sequence_length, tflip_offset) for r in readers]
        self.sequences = [s for s in seqs if len(s) > 0]
        for s in seqs:
            if len(s) == 0:
                log.warning("sequence %s has no labeled frame with %d representations of history: not sampled",
                            s.reader.name, sequence_length)
        if not self.sequences:
            raise ValueError("no sequence has a usable labeled frame for random access")
        self.cumulative = list(itertools.accumulate(len(s) for s in self.sequences))
        self.aug = aug
        self.ev_dtype = ev_dtype
        self._rng = _ProcessRng(seed, generator)

    def __len__(self) -> int:
        return self.cumulative[-1]

    def locate(self, index: int) -> tuple[RandomAccessSequence, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} outside [0, {len(self)})")
        k = bisect.bisect_right(self.cumulative, index)
        return self.sequences[k], index - (self.cumulative[k - 1] if k else 0)

    def __getitem__(self, index: int) -> Sample:
        seq, local = self.locate(index)
        gen = self._rng.get()
        state = None
        if self.aug is not None:
            hw = seq.reader.frame_hw
            state = sample_augment_state(self.aug, hw, gen)
        time_flip = bool(state is not None and state.t_flip and seq.can_time_flip)
        if state is not None and state.t_flip != time_flip:
            state = replace(state, t_flip=time_flip)
        sample = seq.sample(local, time_flip, gen)
        return _finish(sample, self.aug, state, gen, self.ev_dtype)


def collate_random(samples: list[Sample]) -> Batch:
    """DataLoader ``collate_fn`` of the random-access loader (runs in the worker)."""
    return collate_samples(samples, worker_id=_worker_id(), stream=False)


# ------------------------------------------------------------------------------------------ streaming
def build_streams(readers: Sequence[SequenceReader], guarantee: Sequence[bool], sequence_length: int,
                  tflip_offset: int) -> list[StreamSequence]:
    """LEOD ``get_sequences``: one whole stream per sequence, or one per labeled range (``guarantee_labels``)."""
    streams = []
    for reader, guaranteed in zip(readers, guarantee):
        if guaranteed:
            streams += [StreamSequence(reader, sequence_length, tflip_offset, range_indices=r)
                        for r in guaranteed_label_ranges(reader.objframe_idx_2_repr_idx, sequence_length)]
        else:
            streams.append(StreamSequence(reader, sequence_length, tflip_offset))
    return streams


class StreamingDataset(IterableDataset):
    """LEOD ``ConcatStreamingDataPipe``: yields :class:`Batch` es of ``batch_size`` stream slots.

    In each process (DataLoader worker, or the main process), every slot gets its own random permutation of
    the streams and concatenates them; one batch takes the next sample of every slot. Iteration ends when the
    slots are exhausted (together, as each holds every stream once). The augmentation of a stream (time flip
    included) is drawn when a slot starts it. ``generator``: the DataLoader's generator, which drives a pass
    in the main process (see :class:`_ProcessRng`); workers seed theirs from the worker seed and a pass count.
    """

    def __init__(self, streams: Sequence[StreamSequence], batch_size: int, aug: SamplerAugmentConfig | None,
                 seed: int = 0, ev_dtype: torch.dtype = torch.float32, generator: torch.Generator | None = None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not streams:
            raise ValueError("no stream to iterate")
        self.streams = list(streams)
        self.batch_size = batch_size
        self.aug = aug
        self.seed = seed
        self.ev_dtype = ev_dtype
        self.generator = generator
        self._passes = 0

    def __getstate__(self):
        return {**self.__dict__, "generator": None}

    def _generator(self) -> torch.Generator:
        info = get_worker_info()
        if info is None and self.generator is not None:
            return self.generator
        # a new order on every pass of this process (persistent workers too), reproducible from the seed
        base = info.seed if info is not None else self.seed
        self._passes += 1
        return torch.Generator().manual_seed((base * 1_000_003 + self._passes) % (2 ** 63))

    def _slot(self, order: list[int], gen: torch.Generator) -> Iterator[Sample]:
        for k in order:
            stream = self.streams[k]
            state = sample_augment_state(self.aug, stream.reader.frame_hw, gen) if self.aug is not None else None
            time_flip = bool(state is not None and state.t_flip)
            for i in range(len(stream)):
                yield _finish(stream.sample(i, time_flip), self.aug, state, gen, self.ev_dtype)

    def __iter__(self) -> Iterator[Batch]:
        gen = self._generator()
        worker_id = _worker_id()
        slots = [self._slot(torch.randperm(len(self.streams), generator=gen).tolist(), gen)
                 for _ in range(self.batch_size)]
        while True:
            samples = []
            for slot in slots:
                sample = next(slot, None)
                if sample is None:
                    return
                samples.append(sample)
            yield collate_samples(samples, worker_id=worker_id, stream=True)


def identity_collate(batch: Batch) -> Batch:
    """``collate_fn`` of the stream loader: its dataset already yields batches."""
    return batch
