"""The event representations of a recording, computed while it is read: what ``leod predict`` streams.

:class:`RecordingRepresentations` stands in for a preprocessed sequence's
:class:`~leod_core.data.sequence.SequenceReader` in the streaming engine. Its representations are the ones
``leod preprocess`` would write for the recording as an unlabeled sequence
(:func:`~leod_core.data.preprocess.plan_unlabeled_sequence` on the camera's preprocessing settings), so a model
sees the same frames at the same times as in training; they are built chunk by chunk from the event stream
(:func:`~leod_core.data.representation.iter_stacked_histograms`), so memory does not grow with the recording.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from leod_core.data import preprocess
from leod_core.data.formats import FormatError, PathLike, RawEvents
from leod_core.data.prefetch import iter_prefetched
from leod_core.data.preprocess import NoLabelsError, PreprocessConfig, plan_unlabeled_sequence
from leod_core.data.raw_discovery import open_sequence_events
from leod_core.data.representation import iter_stacked_histograms
from leod_core.data.sequence import chunk_spans

log = logging.getLogger(__name__)


class RecordingRepresentations:
    """Stacked histograms of one recording (any format :func:`~leod_core.data.recordings.open_recording` reads),
    streamed forward only.

    Opening reads the recording once for its time range (µs) and plans the representation end times
    (``timestamps_us``, int64 [T]) and the label-grid frames (``label_frame_reprs``, int64 [F], indices into
    them). Frames are uint8 [2 * nbins, H, W] at the sensor resolution, or at half of it (``frame_hw``) with
    ``cfg.downsampled_by_2``.

    Attributes:
        events_read: events decoded by the streams so far (for events/s figures).
        seconds_reading: time spent decoding and building frames so far (s).
    """

    def __init__(self, path: PathLike, cfg: PreprocessConfig):
        self.root = Path(path)
        self.cfg = cfg
        self.recording = open_sequence_events(self.root, (cfg.default_height, cfg.default_width))
        try:
            plan = plan_unlabeled_sequence(self.recording.time_range_us(), cfg, self.root)
        except NoLabelsError:
            raise FormatError(self.root, "no representation to predict on: the recording is empty, ends before "
                                         f"{cfg.align_t_us} µs, or its camera has no fixed label period") from None
        self.timestamps_us = plan.repr_timestamps_us
        self.label_frame_reprs = plan.objframe_idx_2_repr_idx
        self.repr_to_frame: dict[int, int] = {}     # no labels: nothing to keep or skip
        self.events_read = 0
        self.seconds_reading = 0.0

    @property
    def name(self) -> str:
        return self.root.name.split(".")[0].removesuffix("_td")

    @property
    def num_reprs(self) -> int:
        return len(self.timestamps_us)

    @property
    def channels(self) -> int:
        """Channels of a frame: 2 polarities x ``nbins`` time bins."""
        return 2 * self.cfg.nbins

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(height, width) of the frames (pixels of the read frame)."""
        height, width = self.recording.height, self.recording.width
        return (height // 2, width // 2) if self.cfg.downsampled_by_2 else (height, width)

    def read_timestamps_us(self) -> np.ndarray:
        return self.timestamps_us

    def stream_start(self, sequence_length: int, start_from_zero: bool = False) -> int:
        """0: a recording has no labeled frame to start ``L - 1`` representations before."""
        return 0

    def iter_chunks(self, start: int, stop: int, chunk: int, *, reverse: bool = False,
                    executor: Optional[Executor] = None, first_chunk: Optional[int] = None
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Representations ``[start, stop)`` in chunks of ``chunk`` (the interface of
        :meth:`SequenceReader.iter_chunks`), built from the event stream; with an ``executor`` the next chunk is
        built in its thread while the current one is consumed. ``reverse`` (a time-flipped stream) needs random
        access: preprocess the recording for that."""
        if reverse:
            raise ValueError(f"{self.root}: a recording streams forward only; preprocess it (leod preprocess) for "
                             "time-flipped views")
        if not 0 <= start <= stop <= self.num_reprs:
            raise IndexError(f"{self.root}: cannot stream [{start}, {stop}) ({self.num_reprs} representations)")
        spans = chunk_spans(start, stop, chunk, first_chunk=first_chunk)
        frames = iter_stacked_histograms(self._counted(self.recording.chunks(preprocess.READ_CHUNK_EVENTS)),
                                         self.timestamps_us[start:stop], self.cfg.repr_window_us,
                                         (self.recording.height, self.recording.width), self.cfg.nbins,
                                         self.cfg.count_cutoff, self.cfg.downsampled_by_2)

        def build(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            began = time.perf_counter()
            data = np.stack([next(frames) for _ in range(span[1] - span[0])])
            self.seconds_reading += time.perf_counter() - began
            return np.arange(*span, dtype=np.int64), data

        try:
            yield from iter_prefetched(spans, build, executor)
        finally:
            frames.close()

    def _counted(self, chunks: Iterator[RawEvents]) -> Iterator[RawEvents]:
        for events in chunks:
            self.events_read += len(events.t)
            yield events
