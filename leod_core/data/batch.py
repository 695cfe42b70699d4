"""The sample / batch contract of the training loaders (LEOD's ``LoaderDataDictGenX`` and its collation).

Shapes: ``L`` time steps (the dataset ``sequence_length``), ``B`` samples, ``C = 20`` stacked-histogram
channels, ``H x W`` the loaded resolution (the sensor's, or half of it for ``downsampled_by_2``; inputs are
*not* padded here, the model pads them). Labels are ``Tensor[N, 8]`` rows
``[t, x, y, w, h, class_id, class_confidence, objectness]`` (see :mod:`leod_core.data.label_tensors`) in
the coordinates of the loaded ``H x W`` frame, or ``None`` where a step has no (kept) label.

RNN states (LEOD's ``RNNStates``, ``modules/utils/detection.py``): keep one state of batch size ``B`` per
``Batch.worker_id``. Column ``b`` of consecutive batches with the same ``worker_id`` continues the same
stream slot; reset column ``b`` where ``is_first_sample[b]`` and always for the random-access columns
(they all have ``is_first_sample`` True). A mixed batch carries the stream loader's ``worker_id``
(LEOD's ``merge_mixed_batches``), its first ``num_stream`` columns are stream slots.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from leod_core.data.augment import AugmentState

LabelSeq = list  # list[Tensor[N, 8] | None], one entry per time step
#: Dtypes :func:`stack_columns` copies with numpy.
_NUMPY_DTYPES = frozenset({torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
                           torch.float16, torch.float32, torch.float64})


@dataclass
class Sample:
    """``L`` consecutive event representations of one sequence with their labels.

    Attributes:
        ev_repr: ``Tensor[L, 20, H, W]`` (float32 unless the loader was asked for uint8); padded steps are 0.
        labels: length ``L``; ``Tensor[N, 8]`` of the labels kept for training at that step, else ``None``.
        skipped_labels: length ``L``; ground truth that exists but the label split withholds (only for
            evaluating pseudo labels, never for the loss), else ``None``.
        is_first_sample: the first chunk of a sequence (reset the RNN); always True for random access.
        is_padded_mask: ``Tensor[L]`` bool, True at padding steps (end of a sequence's last chunk).
        is_reversed: the sample runs backwards in time (time-flip augmentation).
        sequence: sequence directory name.
        repr_idx: ``Tensor[L]`` int64, representation index of each step in the sequence (-1 for padding).
        augmentation: the spatial/temporal augmentation that was applied (None: no augmentation).
    """

    ev_repr: Tensor
    labels: LabelSeq
    skipped_labels: LabelSeq
    is_first_sample: bool
    is_padded_mask: Tensor
    is_reversed: bool
    sequence: str
    repr_idx: Tensor
    augmentation: AugmentState | None = None

    @property
    def length(self) -> int:
        return self.ev_repr.shape[0]


@dataclass
class Batch:
    """``B`` samples collated time-major (what the recurrent training loop consumes).

    Attributes:
        ev_repr: ``Tensor[L, B, 20, H, W]``.
        labels: ``labels[t][b]`` is ``Tensor[N, 8]`` or ``None`` (LEOD's list of ``SparselyBatchedObjectLabels``).
        skipped_labels: same layout, withheld ground truth.
        is_first_sample: ``Tensor[B]`` bool (reset the RNN state of these columns before step 0).
        is_padded_mask: ``Tensor[L, B]`` bool.
        is_reversed: ``Tensor[B]`` bool.
        sequences: ``B`` sequence names.
        repr_idx: ``Tensor[L, B]`` int64 (-1 for padding).
        worker_id: DataLoader worker that produced the (stream part of the) batch: the RNN-state key.
        num_stream: number of leading columns that are stream slots (the rest are random-access samples).
        augmentation: per column, the applied augmentation (or None).
    """

    ev_repr: Tensor
    labels: list[LabelSeq]
    skipped_labels: list[LabelSeq]
    is_first_sample: Tensor
    is_padded_mask: Tensor
    is_reversed: Tensor
    sequences: list[str]
    repr_idx: Tensor
    worker_id: int
    num_stream: int
    augmentation: list[AugmentState | None] = field(default_factory=list)

    @property
    def sequence_length(self) -> int:
        return self.ev_repr.shape[0]

    @property
    def batch_size(self) -> int:
        return self.ev_repr.shape[1]

    def _map_tensors(self, fn) -> "Batch":
        def labels(seq: list[LabelSeq]) -> list[LabelSeq]:
            return [[None if lab is None else fn(lab) for lab in step] for step in seq]
        return Batch(ev_repr=fn(self.ev_repr), labels=labels(self.labels), skipped_labels=labels(self.skipped_labels),
                     is_first_sample=fn(self.is_first_sample), is_padded_mask=fn(self.is_padded_mask),
                     is_reversed=fn(self.is_reversed), sequences=list(self.sequences), repr_idx=fn(self.repr_idx),
                     worker_id=self.worker_id, num_stream=self.num_stream, augmentation=list(self.augmentation))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """A copy with every tensor (labels included) on ``device``."""
        return self._map_tensors(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "Batch":
        """A copy in pinned memory (called by ``DataLoader(pin_memory=True)``)."""
        return self._map_tensors(lambda t: t.pin_memory())


def stack_columns(tensors: list[Tensor]) -> Tensor:
    """``torch.stack(tensors, dim=1)`` of ``B`` equal-shape tensors ``[L, ...]``: ``Tensor[L, B, ...]``.

    CPU tensors of a numpy dtype are copied by numpy into one pre-allocated batch (a plain single-threaded copy:
    no intra-op thread pool, which costs more than the copy itself when the cores are busy); others use torch.
    """
    first = tensors[0]
    if first.device.type != "cpu" or first.dtype not in _NUMPY_DTYPES or any(
            t.shape != first.shape or t.dtype != first.dtype or t.device != first.device for t in tensors):
        return torch.stack(tensors, dim=1)
    out = torch.empty((first.shape[0], len(tensors), *first.shape[1:]), dtype=first.dtype)
    columns = out.numpy()
    for b, tensor in enumerate(tensors):
        columns[:, b] = tensor.detach().numpy()
    return out


def collate_samples(samples: list[Sample], worker_id: int, stream: bool) -> Batch:
    """Collate ``B`` samples of equal length into a time-major :class:`Batch`."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    length = samples[0].length
    if any(s.length != length for s in samples):
        raise ValueError(f"samples have different lengths {[s.length for s in samples]}")
    return Batch(
        ev_repr=stack_columns([s.ev_repr for s in samples]),
        labels=[[s.labels[t] for s in samples] for t in range(length)],
        skipped_labels=[[s.skipped_labels[t] for s in samples] for t in range(length)],
        is_first_sample=torch.tensor([s.is_first_sample for s in samples], dtype=torch.bool),
        is_padded_mask=torch.stack([s.is_padded_mask for s in samples], dim=1),
        is_reversed=torch.tensor([s.is_reversed for s in samples], dtype=torch.bool),
        sequences=[s.sequence for s in samples],
        repr_idx=torch.stack([s.repr_idx for s in samples], dim=1),
        worker_id=worker_id,
        num_stream=len(samples) if stream else 0,
        augmentation=[s.augmentation for s in samples],
    )


def merge_mixed_batches(stream: Batch, random: Batch) -> Batch:
    """Concatenate a stream batch and a random-access batch along ``B``, stream columns first.

    LEOD's ``merge_mixed_batches``: the result keeps the stream batch's ``worker_id`` (the random columns are
    reset at every step anyway).
    """
    if stream.sequence_length != random.sequence_length:
        raise ValueError(f"stream and random batches have lengths {stream.sequence_length} and "
                         f"{random.sequence_length}")
    return Batch(
        ev_repr=torch.cat([stream.ev_repr, random.ev_repr], dim=1),
        labels=[a + b for a, b in zip(stream.labels, random.labels)],
        skipped_labels=[a + b for a, b in zip(stream.skipped_labels, random.skipped_labels)],
        is_first_sample=torch.cat([stream.is_first_sample, random.is_first_sample]),
        is_padded_mask=torch.cat([stream.is_padded_mask, random.is_padded_mask], dim=1),
        is_reversed=torch.cat([stream.is_reversed, random.is_reversed]),
        sequences=stream.sequences + random.sequences,
        repr_idx=torch.cat([stream.repr_idx, random.repr_idx], dim=1),
        worker_id=stream.worker_id,
        num_stream=stream.batch_size,
        augmentation=stream.augmentation + random.augmentation,
    )
