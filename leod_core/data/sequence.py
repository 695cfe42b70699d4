"""One preprocessed training sequence and LEOD's two ways of cutting it into samples.

* :class:`SequenceReader` (LEOD ``SequenceBase``): representations (HDF5 opened lazily, once per process,
  or streamed chunk by chunk with :meth:`SequenceReader.iter_chunks`, optionally reversed and read ahead in a
  background thread), labels as ``Tensor[N, 8]`` per labeled frame (clamped to the sensor frame, halved for
  ``_ds2`` data), and the split of labeled frames into *kept* (training labels) and *skipped* (withheld ground
  truth).
* :class:`RandomAccessSequence` (LEOD ``SequenceForRandomAccess``): the ``L`` representations ending at a
  labeled frame, with LEOD's time-flip indexing.
* :class:`StreamSequence` (LEOD ``SequenceForIter``): consecutive chunks of ``L`` representations.

Time flip (LEOD ``SequenceBase._load_range_labels`` / ``time_flip_data``): the representations
``[start, end)`` are paired with the labels of ``[start + tflip_offset, end + tflip_offset)``, then the
steps are reversed and every representation's channels are reversed (``x.flip(0)``: time bins reversed,
polarities swapped). Padding goes in front before the reversal, so it ends up at the end.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np
import torch
from torch import Tensor

from leod_core.data import label_tensors as lt
from leod_core.data.batch import Sample
from leod_core.data.prefetch import iter_prefetched
from leod_core.data.formats import (FormatError, PathLike, SequencePaths, open_event_repr, read_labels,
                                    read_objframe_idx_2_repr_idx, read_timestamps_us)

log = logging.getLogger(__name__)

MAX_REDRAWS = 1000
_H5_CACHE_SIZE = 16


class _H5Handles:
    """Read-only HDF5 handles of this process (LRU). Handles inherited through ``fork`` are never used."""

    def __init__(self, capacity: int = _H5_CACHE_SIZE):
        self.capacity = capacity
        self._pid: int | None = None
        self._files: OrderedDict[str, h5py.File] = OrderedDict()

    def get(self, path: Path) -> h5py.File:
        if self._pid != os.getpid():  # a fresh process (DataLoader worker): forget the parent's handles
            self._files = OrderedDict()
            self._pid = os.getpid()
        key = str(path)
        h5 = self._files.pop(key, None)
        if h5 is None:
            h5 = open_event_repr(path)
            while len(self._files) >= self.capacity:
                self._files.popitem(last=False)[1].close()
        self._files[key] = h5
        return h5


_HANDLES = _H5Handles()


def chunk_spans(start: int, stop: int, chunk: int, *, reverse: bool = False,
                first_chunk: int | None = None) -> list[tuple[int, int]]:
    """The ``[a, b)`` spans that stream ``[start, stop)`` in reading order: forward ``[start, start + first_chunk)``
    then ``chunk`` at a time; with ``reverse`` cut from the end, ``[stop - first_chunk, stop)`` first. The last span
    may be shorter. ``first_chunk`` defaults to ``chunk``; a small one lets a stream's first step wait for a short
    read while the next chunk is read ahead.
    """
    first = chunk if first_chunk is None else first_chunk
    if chunk < 1 or first < 1:
        raise ValueError(f"chunk sizes must be >= 1, got chunk {chunk}, first_chunk {first}")
    spans, done = [], 0
    while done < stop - start:
        size = min(first if not spans else chunk, stop - start - done)
        a, b = (stop - done - size, stop - done) if reverse else (start + done, start + done + size)
        spans.append((a, b))
        done += size
    return spans


class SequenceReader:
    """Event representations and labels of one sequence directory ``{root}/{split}/{seq}``.

    Args:
        root: the sequence directory.
        downsampled_by_2: read ``event_representations_ds2_nearest.h5`` and halve the boxes (LEOD gen4).
        kept_frames: objframe indices whose ground truth is kept for training (from the label split);
            ``None`` keeps every labeled frame. The other labeled frames become skipped labels.
        resolution_hw: sensor resolution the boxes are clamped to; default: the file's frame size, doubled
            when ``downsampled_by_2``.
        load_labels: read ``labels.npz`` (False: representations and the labeled-frame indices only, for
            inference; :meth:`frame_labels` and the methods built on it then raise).
    """

    def __init__(self, root: PathLike, *, downsampled_by_2: bool = False, kept_frames: Sequence[int] | None = None,
                 resolution_hw: tuple[int, int] | None = None, load_labels: bool = True):
        root = Path(root)
        paths = SequencePaths(root)
        self.root = root
        self.name = root.name
        self._paths = paths
        self.ev_repr_file = paths.ev_repr_file(downsampled_by_2)
        with open_event_repr(self.ev_repr_file) as h5:
            num_reprs, self.channels, height, width = h5["data"].shape
        self.num_reprs = int(num_reprs)
        self.frame_hw = (int(height), int(width))
        if resolution_hw is None:
            resolution_hw = (2 * height, 2 * width) if downsampled_by_2 else (height, width)
        self.resolution_hw = tuple(resolution_hw)
        self.objframe_idx_2_repr_idx = read_objframe_idx_2_repr_idx(paths.objframe_idx_2_repr_idx, self.num_reprs)
        self._rows: Tensor | None = None
        if load_labels:
            self._read_labels(paths.labels, downsampled_by_2)
        self.repr_to_frame = {int(r): i for i, r in enumerate(self.objframe_idx_2_repr_idx)}
        num_frames = self.num_frames
        if kept_frames is None:
            kept_frames = range(num_frames)
        kept = [int(i) for i in kept_frames]
        if any(i < 0 or i >= num_frames for i in kept) or any(b <= a for a, b in zip(kept, kept[1:])):
            raise ValueError(f"{root}: kept frames must be sorted unique objframe indices in [0, {num_frames}), "
                             f"got {kept}")
        self.kept_frames = tuple(kept)
        self._kept = frozenset(kept)
        #: LEOD's ``skip_label``: some ground truth is withheld.
        self.skip_label = len(kept) != num_frames

    def _read_labels(self, path: Path, downsampled_by_2: bool) -> None:
        seq_labels = read_labels(path)
        num_frames = len(self.objframe_idx_2_repr_idx)
        if seq_labels.num_frames != num_frames:
            raise FormatError(path, f"{seq_labels.num_frames} labeled frames, but objframe_idx_2_repr_idx has "
                                    f"{num_frames}")
        starts = seq_labels.objframe_idx_2_label_idx
        counts = np.diff(np.append(starts, len(seq_labels.labels)))
        # a 9th column carries the frame index through the row-wise clamping/scaling that drops flat boxes
        frame_of_row = torch.from_numpy(np.repeat(np.arange(num_frames), counts).astype(np.float32))
        rows = torch.cat([lt.from_structured(seq_labels.labels), frame_of_row[:, None]], dim=1)
        clamped = lt.clamp_to_frame(rows, self.resolution_hw)
        if len(clamped) < len(rows):
            log.warning("%s: %d of %d boxes are empty or lie entirely outside the %dx%d sensor frame: dropped",
                        path, len(rows) - len(clamped), len(rows), *self.resolution_hw)
        rows = clamped
        if downsampled_by_2:
            rows = lt.scale(rows, 0.5, self.resolution_hw)[0]
        frame_ids = rows[:, -1].long().numpy()
        self._rows = rows[:, :lt.NUM_FIELDS].contiguous()
        self._row_bounds = np.searchsorted(frame_ids, np.arange(num_frames + 1), side="left")

    @property
    def num_frames(self) -> int:
        return len(self.objframe_idx_2_repr_idx)

    def frame_labels(self, objframe_idx: int) -> Tensor:
        """``Tensor[N, 8]`` (a copy) of labeled frame ``objframe_idx``, in loaded-frame coordinates."""
        if self._rows is None:
            raise RuntimeError(f"{self.name}: opened with load_labels=False")
        return self._rows[self._row_bounds[objframe_idx]:self._row_bounds[objframe_idx + 1]].clone()

    def labels_in_range(self, start: int, stop: int, shift: int = 0) -> tuple[list[Tensor | None], list[Tensor | None]]:
        """(kept labels, skipped labels) of representations ``[start + shift, stop + shift)``; ``None`` where
        the representation has no labeled frame (or it is empty)."""
        labels, skipped = [], []
        for repr_idx in range(start + shift, stop + shift):
            frame = self.repr_to_frame.get(repr_idx)
            lab = None if frame is None else self.frame_labels(frame)
            if lab is not None and len(lab) == 0:
                lab = None
            kept = frame in self._kept
            labels.append(lab if kept else None)
            skipped.append(None if kept else lab)
        return labels, skipped

    def read_timestamps_us(self) -> np.ndarray:
        """int64 [T]: end time (µs) of every representation (``timestamps_us.npy``)."""
        ts = read_timestamps_us(self._paths.repr_timestamps)
        if len(ts) != self.num_reprs:
            raise FormatError(self._paths.repr_timestamps, f"{len(ts)} timestamps for {self.num_reprs} representations")
        return ts

    def stream_start(self, sequence_length: int, start_from_zero: bool = False) -> int:
        """First representation of a whole-sequence stream: ``max(first_labeled_repr - L + 1, 0)`` (RVT / LEOD),
        or 0 with ``start_from_zero``."""
        if start_from_zero:
            return 0
        return max(int(self.objframe_idx_2_repr_idx[0]) - sequence_length + 1, 0)

    def iter_chunks(self, start: int, stop: int, chunk: int, *, reverse: bool = False,
                    executor: Executor | None = None, first_chunk: int | None = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream representations ``[start, stop)`` in chunks of ``chunk``, with a file handle of its own (opened at
        the first ``next``, closed when the iterator ends or is closed).

        Forward chunks are ``[start, start + chunk), ...``; with ``reverse`` (LEOD's time flip) they are cut from the
        end, ``[stop - chunk, stop), ...``, their steps run backwards and every representation's channels are
        reversed (``x.flip(0)``: time bins reversed, polarities swapped). ``first_chunk`` (default ``chunk``)
        sizes the first chunk only (see :func:`chunk_spans`). With an ``executor`` the next chunk is read in its
        thread while the current one is consumed (h5py serialises file access; one read is in flight per
        iterator, so it holds two chunks).

        Yields:
            (int64 [n] representation indices in processing order, uint8 [n, C, H, W] representations in that
            order at the file's (read-frame) resolution), ``n <= max(chunk, first_chunk)``.
        """
        if not 0 <= start <= stop <= self.num_reprs:
            raise IndexError(f"{self.ev_repr_file}: cannot stream [{start}, {stop}) ({self.num_reprs} "
                             "representations)")
        spans = chunk_spans(start, stop, chunk, reverse=reverse, first_chunk=first_chunk)
        with open_event_repr(self.ev_repr_file) as h5:
            def load(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
                try:
                    data = h5["data"][a:b]
                except OSError as err:
                    raise FormatError(self.ev_repr_file, f"cannot read frames {a}:{b} ({err})") from err
                if reverse:
                    return np.arange(b - 1, a - 1, -1, dtype=np.int64), np.ascontiguousarray(data[::-1, ::-1])
                return np.arange(a, b, dtype=np.int64), data

            yield from iter_prefetched(spans, lambda span: load(*span), executor)

    def read_reprs(self, start: int, stop: int) -> Tensor:
        """uint8 ``Tensor[stop - start, C, H, W]`` of representations ``[start, stop)``."""
        self._check_range(start, stop)
        return torch.from_numpy(self._read_into(start, stop, self._empty_steps(stop - start)))

    def _check_range(self, start: int, stop: int) -> None:
        if not 0 <= start < stop <= self.num_reprs:
            raise IndexError(f"{self.ev_repr_file}: representations [{start}, {stop}) outside [0, {self.num_reprs})")

    def _empty_steps(self, count: int) -> np.ndarray:
        """Uninitialised uint8 ``[count, C, H, W]`` at the read-frame resolution."""
        return np.empty((count, self.channels, *self.frame_hw), dtype=np.uint8)

    def _read_into(self, start: int, stop: int, out: np.ndarray) -> np.ndarray:
        """Decompress representations ``[start, stop)`` (a valid range) straight into ``out`` (C-contiguous uint8
        ``[stop - start, C, H, W]``, e.g. the leading steps of a sample) and return it."""
        try:
            _HANDLES.get(self.ev_repr_file)["data"].read_direct(out, np.s_[start:stop])
        except OSError as err:
            raise FormatError(self.ev_repr_file, f"cannot read frames {start}:{stop} ({err})") from err
        return out

    def _read_steps(self, start: int, stop: int, length: int, time_flip: bool) -> np.ndarray:
        """uint8 ``[length, C, H, W]``: representations ``[start, stop)`` in steps ``0 .. stop - start - 1``
        (with ``time_flip``: in reverse order, channels reversed), zeros in the padding steps after them."""
        self._check_range(start, stop)
        count = stop - start
        steps = self._empty_steps(length)
        steps[count:] = 0
        if time_flip:
            steps[:count] = self._read_into(start, stop, self._empty_steps(count))[::-1, ::-1]
        else:
            self._read_into(start, stop, steps[:count])
        return steps

    def build_sample(self, start: int, stop: int, length: int, time_flip: bool, tflip_offset: int,
                     is_first_sample: bool) -> Sample:
        """The sample of representations ``[start, stop)`` padded to ``length`` (un-augmented, uint8).

        Time-flipped (LEOD pads in front, then reverses), the reversed representations come first and the
        padding still ends the sample.
        """
        pad = length - (stop - start)
        if pad < 0:
            raise ValueError(f"[{start}, {stop}) is longer than {length}")
        labels, skipped = self.labels_in_range(start, stop, tflip_offset if time_flip else 0)
        ev = torch.from_numpy(self._read_steps(start, stop, length, time_flip))
        idx = torch.arange(start, stop, dtype=torch.int64)
        if time_flip:
            idx, labels, skipped = idx.flip(0), labels[::-1], skipped[::-1]
        idx = torch.cat([idx, torch.full((pad,), -1, dtype=torch.int64)])
        labels, skipped = labels + [None] * pad, skipped + [None] * pad
        padded = torch.arange(length) >= length - pad
        return Sample(ev_repr=ev, labels=labels, skipped_labels=skipped, is_first_sample=is_first_sample,
                      is_padded_mask=padded, is_reversed=time_flip, sequence=self.name, repr_idx=idx)


def _randint(high: int, gen: torch.Generator | None) -> int:
    return int(torch.randint(0, high, (1,), generator=gen).item())


class RandomAccessSequence:
    """LEOD ``SequenceForRandomAccess``: sample ``index`` = the ``L`` representations ending at labeled frame
    ``index + start_idx_offset`` (forward), where ``start_idx_offset`` is the first labeled frame with
    ``repr_idx >= L - 1``.

    Time flip (LEOD's exact indexing): ``index`` is the objframe index itself (no offset); the window is
    ``[end - L, end)`` with ``end = min(T, repr_idx(index) - tflip_offset + L)``, so that after the reversal
    the labeled frame sits as late as possible; the real last labeled frame cannot be used (no
    representation after it). A window without a kept label is redrawn within the sequence (``_rand_another``).
    """

    def __init__(self, reader: SequenceReader, sequence_length: int, tflip_offset: int):
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be positive, got {sequence_length}")
        self.reader = reader
        self.seq_len = sequence_length
        self.tflip_offset = tflip_offset
        usable = np.flatnonzero(reader.objframe_idx_2_repr_idx - sequence_length + 1 >= 0)
        self.start_idx_offset = int(usable[0]) if usable.size else None
        has_kept = any(k >= (self.start_idx_offset or 0) for k in reader.kept_frames)
        self.length = reader.num_frames - self.start_idx_offset if self.start_idx_offset is not None and has_kept else 0
        kept = reader.kept_frames
        self.same_last_idx = bool(kept) and kept[-1] == reader.num_frames - 1

    def __len__(self) -> int:
        return self.length

    @property
    def can_time_flip(self) -> bool:
        """False when the only kept frame is the last labeled frame (LEOD's ``SequenceDataset`` check)."""
        return not (len(self.reader.kept_frames) == 1 and self.same_last_idx)

    def _rand_another(self, time_flip: bool, gen: torch.Generator | None) -> int:
        if not self.reader.skip_label:
            return _randint(self.length - 1 if time_flip else self.length, gen)
        kept = list(self.reader.kept_frames)
        if time_flip and self.same_last_idx:
            kept = kept[:-1]
        if not time_flip:
            kept = [k - self.start_idx_offset for k in kept if k >= self.start_idx_offset]
        return kept[_randint(len(kept), gen)]

    def window(self, index: int, time_flip: bool, gen: torch.Generator | None) -> tuple[int, int]:
        """``(start, end)`` of the sample for ``index``, after LEOD's redraws."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} outside [0, {self.length}) of sequence {self.reader.name}")
        o2r = self.reader.objframe_idx_2_repr_idx
        for _ in range(MAX_REDRAWS):
            if time_flip:
                if index == self.reader.num_frames - 1:  # no representation after the real last labeled frame
                    index = self._rand_another(time_flip, gen)
                    continue
                end = min(self.reader.num_reprs, int(o2r[index]) - self.tflip_offset + self.seq_len)
            else:
                end = int(o2r[index + self.start_idx_offset]) + 1
            start = end - self.seq_len
            if start < 0:
                raise RuntimeError(f"{self.reader.name}: window [{start}, {end}) starts before the sequence")
            labels, _ = self.reader.labels_in_range(start, end, self.tflip_offset if time_flip else 0)
            if any(lab is not None for lab in labels):
                return start, end
            index = self._rand_another(time_flip, gen)
        raise RuntimeError(f"{self.reader.name}: no window with a kept label after {MAX_REDRAWS} draws")

    def sample(self, index: int, time_flip: bool, gen: torch.Generator | None) -> Sample:
        start, end = self.window(index, time_flip, gen)
        return self.reader.build_sample(start, end, self.seq_len, time_flip, self.tflip_offset, is_first_sample=True)


def guaranteed_label_ranges(objframe_idx_2_repr_idx: np.ndarray, sequence_length: int) -> list[tuple[int, int]]:
    """LEOD ``_get_ev_repr_range_indices``: split where consecutive labeled reprs are more than ``L`` apart;
    each part streams ``[max(first - L + 1, 0), last + 1)``."""
    idx = np.asarray(objframe_idx_2_repr_idx)
    cuts = np.flatnonzero(np.diff(idx) > sequence_length)
    firsts = np.concatenate(([0], cuts + 1))
    lasts = np.concatenate((cuts, [len(idx) - 1]))
    return [(max(int(idx[a]) - sequence_length + 1, 0), int(idx[b]) + 1) for a, b in zip(firsts, lasts)]


class StreamSequence:
    """LEOD ``SequenceForIter``: representations ``[start, stop)`` cut into chunks of ``L``.

    By default ``start = max(first_labeled_repr - L + 1, 0)`` and ``stop = T``. Forward chunks start at
    ``start, start + L, ...``; the last one is padded at its end. Time-flipped chunks are cut from the end
    (``[stop - L, stop), [stop - 2L, stop - L), ...``) and streamed in that order, each reversed; the short
    remainder comes last, padded at its end. ``is_first_sample`` is True for chunk 0.
    """

    def __init__(self, reader: SequenceReader, sequence_length: int, tflip_offset: int,
                 range_indices: tuple[int, int] | None = None, start_from_zero: bool = False):
        self.reader = reader
        self.seq_len = sequence_length
        self.tflip_offset = tflip_offset
        min_start = reader.stream_start(sequence_length, start_from_zero)
        start, stop = (min_start, reader.num_reprs) if range_indices is None else range_indices
        if not 0 <= min_start <= start < stop <= reader.num_reprs:
            raise ValueError(f"{reader.name}: bad stream range [{start}, {stop}) (min start {min_start}, "
                             f"{reader.num_reprs} representations)")
        self.range = (start, stop)
        self.start_indices = list(range(start, stop, sequence_length))
        self.stop_indices = self.start_indices[1:] + [stop]
        flip_starts = list(range(stop - 1, start - 1, -sequence_length))
        flip_stops = flip_starts[1:] + [start - 1]
        self.time_flip_start_indices = [i + 1 for i in flip_stops]
        self.time_flip_stop_indices = [i + 1 for i in flip_starts]

    def __len__(self) -> int:
        return len(self.start_indices)

    def sample(self, index: int, time_flip: bool) -> Sample:
        if time_flip:
            start, stop = self.time_flip_start_indices[index], self.time_flip_stop_indices[index]
        else:
            start, stop = self.start_indices[index], self.stop_indices[index]
        return self.reader.build_sample(start, stop, self.seq_len, time_flip, self.tflip_offset,
                                        is_first_sample=index == 0)
