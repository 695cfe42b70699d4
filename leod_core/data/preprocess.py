"""Raw events + Prophesee boxes → RVT's preprocessed layout, exactly as RVT's ``preprocess_dataset.py``.

Per sequence: filter the boxes (per split), choose the label frames (the first label at or after
``align_t_us``, then every label a whole number of label periods later, ±``label_jitter_us``), build the
representation end timestamps (every ``repr_step_us`` back from the first label frame, then
``reprs_per_label_period`` per label period between label frames), and write one stacked histogram of the
``repr_window_us`` before each end timestamp. See ``docs/layout.md`` (Preprocessing).

Unlabeled recordings: a ``train`` sequence whose ``{seq}_bbox.npy`` is absent (discovered from its event file,
:func:`find_raw_sequences`) or empty, or whose boxes are all filtered out, is kept as an *unlabeled sequence*
(status :data:`UNLABELED`) so that pseudo-labelling labels it. Its label frames lie on the camera's label grid
(:func:`unlabeled_label_frames`): every multiple of the label period (µs of the recording's clock) at or
after both ``align_t_us`` and the first event, up to the last event (µs); each frame holds zero boxes, and the
representations are chosen and written exactly as for a labeled sequence with those label frames. Labeled
sequences are processed exactly as before (RVT). ``val`` and ``test`` need ground truth for evaluation, so an
unlabeled sequence there is dropped as RVT does (status :data:`NO_LABELS`, logged); so is an unlabeled ``train``
sequence whose events end before the first grid frame. Where the preset derives the label period from the label
rate (``label_period_us`` None, RVT's 1Mpx rule), the grid uses ``unlabeled_label_period_us``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from leod_core.data import formats
from leod_core.data.atomic import atomic_dir, write_text_atomic
from leod_core.data.cameras import (DEFAULT_CAMERA, BoxFilterConfig, Camera, CameraView, check_field_types,
                                    get_camera)
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, SPLITS, FormatError, SequenceLabels, SequencePaths
from leod_core.data.raw_discovery import find_events_file, open_sequence_events, sequences_with_events
from leod_core.data.recordings import DEFAULT_CHUNK_EVENTS, Recording
from leod_core.data.representation import iter_stacked_histograms

log = logging.getLogger(__name__)

_BBOX_SUFFIX = "_bbox.npy"
#: Events read per chunk while streaming an event file into representations (memory: about 33 bytes per event).
READ_CHUNK_EVENTS = DEFAULT_CHUNK_EVENTS
#: The one split whose sequences without labels are kept as unlabeled sequences (see the module docstring).
UNLABELED_SPLIT = "train"
#: The camera whose settings are :class:`PreprocessConfig`'s defaults.
_DEFAULT = get_camera(DEFAULT_CAMERA)


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing settings; defaults are RVT's for Gen1 (stacked histogram, dt 50 ms, 10 bins). The camera's
    fields come from the camera registry (:func:`preset_for_camera`)."""

    default_height: int = _DEFAULT.sensor_height   # sensor size (px) when the raw file stores none
    default_width: int = _DEFAULT.sensor_width
    gen4_style_names: bool = _DEFAULT.raw_td_h5_names   # raw events named {seq}_td.h5 instead of {seq}_td.dat.h5
    label_period_us: int | None = _DEFAULT.label_period_us   # None derives it from the label rate (RVT's 1Mpx rule)
    unlabeled_label_period_us: int | None = _DEFAULT.unlabeled_label_period_us   # grid without labels; None: the above
    align_t_us: int = 100_000             # labels before this time are dropped
    label_jitter_us: int = 2_000
    repr_step_us: int = 50_000            # spacing of representations before the first label frame
    reprs_per_label_period: int = 2       # RVT's ts_step_frame_ms // ts_step_ev_repr_ms = 100 // 50
    repr_window_us: int = 50_000          # each representation covers [end - window, end] (µs)
    nbins: int = 10
    count_cutoff: int = 10
    downsampled_by_2: bool = _DEFAULT.downsampled_by_2   # write event_representations_ds2_nearest.h5 at half size
    box_filter: BoxFilterConfig = _DEFAULT.label_filter

    def __post_init__(self) -> None:
        check_field_types(self)


def preset_for_camera(camera: Camera) -> PreprocessConfig:
    """RVT's preprocessing of a registered camera: its sensor size, raw file names, label period, downsampling
    and label filter over the Gen1 representation settings."""
    return PreprocessConfig(default_height=camera.sensor_height, default_width=camera.sensor_width,
                            gen4_style_names=camera.raw_td_h5_names, label_period_us=camera.label_period_us,
                            unlabeled_label_period_us=camera.unlabeled_label_period_us,
                            downsampled_by_2=camera.downsampled_by_2, box_filter=camera.label_filter)


#: Preprocessing preset by camera name (``leod preprocess --preset``): a read-only view of the camera registry.
PRESETS = CameraView(preset_for_camera)


class NoLabelsError(Exception):
    """No label frame is left after filtering; RVT drops such a sequence (``train`` keeps it unlabeled)."""


def filter_boxes(boxes: np.ndarray, split: str, height: int, width: int, cfg: BoxFilterConfig) -> np.ndarray:
    """Apply RVT's filters (class, crop to the field of view, size, huge boxes on train), in RVT's order.

    Cropping clips box corners to [0, W-1] × [0, H-1] in float32 and drops boxes left with zero size.
    """
    boxes = boxes.copy()
    if cfg.max_class_id is not None:
        boxes = boxes[boxes["class_id"] <= cfg.max_class_id]
    x0, y0 = np.clip(boxes["x"], 0, width - 1), np.clip(boxes["y"], 0, height - 1)
    x1 = np.clip(boxes["x"] + boxes["w"], 0, width - 1)
    y1 = np.clip(boxes["y"] + boxes["h"], 0, height - 1)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = x0, y0, x1 - x0, y1 - y0
    boxes = boxes[(boxes["w"] > 0) & (boxes["h"] > 0)]
    w, h = boxes["w"], boxes["h"]
    if cfg.apply_prophesee_filter:
        keep = (w ** 2 + h ** 2 >= cfg.min_box_diag ** 2) & (w >= cfg.min_box_side) & (h >= cfg.min_box_side)
    else:
        keep = (w >= cfg.conservative_min_side) & (h >= cfg.conservative_min_side)
    boxes = boxes[keep]
    if split == "train" and cfg.apply_huge_box_filter:
        boxes = boxes[boxes["w"] <= math.floor(cfg.huge_box_max_width_frac * width + 1e-9)]
    return boxes


def derive_label_period_us(unique_ts_us: np.ndarray, path: Path) -> int:
    """Gen4 rule: labels at 30 or 60 Hz; the base period is 3 (30 Hz) or 6 (60 Hz) label intervals."""
    median_diff = float(np.median(np.diff(unique_ts_us)))
    hz = int(np.rint(1e6 / median_diff))
    if hz not in (30, 60):
        raise FormatError(path, f"label rate is {hz} Hz; deriving the label period needs 30 or 60 Hz")
    return int((6 if hz == 60 else 3) * median_diff)


def select_label_frames(unique_ts_us: np.ndarray, period_us: int, cfg: PreprocessConfig) -> tuple[np.ndarray, list[int]]:
    """Label frame times (int64 [F]) and the number of representations between consecutive ones."""
    first = int(np.searchsorted(unique_ts_us, cfg.align_t_us, side="left"))
    if first == len(unique_ts_us):
        raise NoLabelsError
    frames, reprs_between = [int(unique_ts_us[first])], []
    for ts in unique_ts_us[first + 1:]:
        diff = int(ts) - frames[-1]
        periods = round(diff / period_us)
        if periods > 0 and abs(diff - periods * period_us) <= cfg.label_jitter_us:
            frames.append(int(ts))
            reprs_between.append(periods * cfg.reprs_per_label_period)
    return np.asarray(frames, dtype=np.int64), reprs_between


def repr_timestamps(frames_us: np.ndarray, reprs_between: list[int], step_us: int) -> np.ndarray:
    """Representation end times (int64 [T]): ``step_us`` apart up to the first frame (time 0 and the
    earliest step excluded, as RVT), then ``linspace`` between consecutive label frames."""
    before_first = list(range(int(frames_us[0]), 0, -step_us))[::-1][1:-1]
    ts = list(before_first)
    for i, (num, start, end) in enumerate(zip(reprs_between, frames_us[:-1], frames_us[1:])):
        edges = np.linspace(start, end, num + 1).astype(np.int64).tolist()
        ts.extend(edges if i == len(reprs_between) - 1 else edges[:-1])
    if len(frames_us) == 1:
        ts.append(int(frames_us[0]))
    return np.asarray(ts, dtype=np.int64)


@dataclass(frozen=True)
class SequencePlan:
    """What preprocessing writes for one sequence, before the event representations are computed."""

    labels: SequenceLabels
    label_timestamps_us: np.ndarray      # int64 [F]
    repr_timestamps_us: np.ndarray       # int64 [T]
    objframe_idx_2_repr_idx: np.ndarray  # int64 [F]


def plan_sequence(boxes: np.ndarray, split: str, height: int, width: int, cfg: PreprocessConfig,
                  path: Path) -> SequencePlan:
    """Filter boxes and compute label frames, representation timestamps and the frame → repr index map."""
    boxes = filter_boxes(boxes, split, height, width, cfg.box_filter)
    if len(boxes) == 0:
        raise NoLabelsError
    unique_ts = np.unique(boxes["t"].astype(np.int64))
    period = cfg.label_period_us or derive_label_period_us(unique_ts, path)
    frames_us, reprs_between = select_label_frames(unique_ts, period, cfg)
    box_t = boxes["t"].astype(np.int64)
    starts = np.searchsorted(box_t, frames_us, side="left")
    ends = np.searchsorted(box_t, frames_us, side="right")
    labels = SequenceLabels.from_frames([boxes[s:e] for s, e in zip(starts, ends)])
    return _plan_from_frames(labels, frames_us, reprs_between, cfg, path)


def unlabeled_label_frames(time_range_us: tuple[int, int] | None, cfg: PreprocessConfig) -> np.ndarray:
    """Label frame times (int64 [F], µs) of an unlabeled sequence whose events span ``time_range_us`` (first,
    last; None without events): every multiple of ``label_period_us`` (else ``unlabeled_label_period_us``) at or
    after ``align_t_us`` and the first event, up to the last event (where a camera labels at multiples of its
    period, as ``leod synth`` does, these are the times its labels would have). Raises :class:`NoLabelsError`
    without either period, without events or when no frame fits."""
    period = cfg.label_period_us or cfg.unlabeled_label_period_us
    if period is None or time_range_us is None:
        raise NoLabelsError
    first = -(-max(cfg.align_t_us, time_range_us[0]) // period) * period
    frames = np.arange(first, time_range_us[1] + 1, period, dtype=np.int64)
    if len(frames) == 0:
        raise NoLabelsError
    return frames


def plan_unlabeled_sequence(time_range_us: tuple[int, int] | None, cfg: PreprocessConfig, path: Path
                            ) -> SequencePlan:
    """Plan of an unlabeled sequence: :func:`unlabeled_label_frames`, each with zero boxes, and the
    representations a labeled sequence with those frames gets (``reprs_per_label_period`` per period)."""
    frames_us = unlabeled_label_frames(time_range_us, cfg)
    labels = SequenceLabels(np.zeros(0, dtype=PROPHESEE_BBOX_DTYPE), np.zeros(len(frames_us), dtype=np.int64))
    reprs_between = [cfg.reprs_per_label_period] * (len(frames_us) - 1)
    return _plan_from_frames(labels, frames_us, reprs_between, cfg, path)


def _plan_from_frames(labels: SequenceLabels, frames_us: np.ndarray, reprs_between: list[int],
                      cfg: PreprocessConfig, path: Path) -> SequencePlan:
    """The representation timestamps of label frames ``frames_us`` (µs) and the frame → repr index map."""
    repr_ts = repr_timestamps(frames_us, reprs_between, cfg.repr_step_us)
    frame_2_repr = np.searchsorted(repr_ts, frames_us, side="left").astype(np.int64)
    if not np.array_equal(repr_ts[frame_2_repr], frames_us):
        raise FormatError(path, "label frames do not coincide with representation timestamps")
    return SequencePlan(labels, frames_us, repr_ts, frame_2_repr)


def write_event_representations(events: Recording, repr_ts: np.ndarray, out_file: Path,
                                cfg: PreprocessConfig) -> None:
    """Write one stacked histogram per end timestamp in ``repr_ts`` (the events in ``[end - window, end]``),
    streaming ``events`` chunk by chunk (:func:`~leod_core.data.representation.iter_stacked_histograms`)."""
    out_hw = (events.height // 2, events.width // 2) if cfg.downsampled_by_2 else (events.height, events.width)
    frames = iter_stacked_histograms(events.chunks(READ_CHUNK_EVENTS), repr_ts, cfg.repr_window_us, (events.height, events.width),
                                     cfg.nbins, cfg.count_cutoff, cfg.downsampled_by_2)
    with formats.EventReprWriter(out_file, 2 * cfg.nbins, *out_hw) as writer:
        for frame in frames:
            writer.append(frame[None])


NO_LABELS = "no-labels"     # preprocess_sequence's status for a sequence without labels that is not written
UNLABELED = "unlabeled"     # ... for an unlabeled sequence in the output (written now or complete before)


def _plan_or_none(boxes: np.ndarray | None, events: Recording, split: str, cfg: PreprocessConfig,
                  boxes_file: Path, events_file: Path) -> tuple[SequencePlan, str] | None:
    """The plan and status of a labeled (``written``) or unlabeled (:data:`UNLABELED`) sequence; None when it
    is not written (see the module docstring)."""
    try:
        if boxes is not None:
            return plan_sequence(boxes, split, events.height, events.width, cfg, boxes_file), "written"
    except NoLabelsError:
        pass
    if split != UNLABELED_SPLIT:
        return None
    try:
        return plan_unlabeled_sequence(events.time_range_us(), cfg, events_file), UNLABELED
    except NoLabelsError:
        return None


def preprocess_sequence(events_file: Path, boxes_file: Path, out_dir: Path, split: str,
                        cfg: PreprocessConfig) -> str:
    """Preprocess one raw sequence (``events_file``: RVT's h5 or a camera recording) into ``out_dir``
    (``{root}/{split}/{seq}``); returns a status word (``written``, ``skipped``, :data:`UNLABELED`,
    :data:`NO_LABELS`). ``boxes_file`` may be absent: an unlabeled sequence (see the module docstring).

    The sequence is written into a hidden sibling directory that becomes ``out_dir`` when complete (the event
    representations, streamed from ``events_file`` chunk by chunk, last); on an error it is removed, with any
    directory above it this call created. Complete sequences are skipped (reported :data:`UNLABELED` when their
    labels hold no box).
    """
    paths = SequencePaths(out_dir)
    h5_file = paths.ev_repr_file(cfg.downsampled_by_2)
    if h5_file.is_file() and paths.labels.is_file():
        return UNLABELED if len(formats.read_labels(paths.labels).labels) == 0 else "skipped"
    boxes = formats.read_raw_boxes(boxes_file) if boxes_file.is_file() else None
    events = open_sequence_events(events_file, (cfg.default_height, cfg.default_width))
    planned = _plan_or_none(boxes, events, split, cfg, boxes_file, events_file)
    if planned is None:
        log.debug("%s: no labels left after filtering; sequence not written", boxes_file)
        return NO_LABELS
    plan, status = planned
    new_dirs = [d for d in Path(out_dir).parents if not d.exists()]
    try:
        with atomic_dir(out_dir) as staging:
            _write_sequence(SequencePaths(staging), plan, events, cfg)
    except BaseException:
        for directory in new_dirs:          # innermost first; only directories this call created, if empty
            _remove_if_empty(directory)
        raise
    return status


def _write_sequence(paths: SequencePaths, plan: SequencePlan, events: Recording, cfg: PreprocessConfig) -> None:
    """Write a planned sequence into ``paths``, the event representations (read from ``events``) last."""
    formats.write_labels(paths.labels, plan.labels)
    formats.write_npy(paths.label_timestamps, plan.label_timestamps_us)
    formats.write_npy(paths.objframe_idx_2_repr_idx, plan.objframe_idx_2_repr_idx)
    formats.write_npy(paths.repr_timestamps, plan.repr_timestamps_us)
    write_event_representations(events, plan.repr_timestamps_us, paths.ev_repr_file(cfg.downsampled_by_2), cfg)


def _remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError as err:       # another sequence's worker has written into it
        log.debug("kept %s: %s", directory, err)


def find_raw_sequences(raw_dir: Path, cfg: PreprocessConfig) -> list[tuple[str, str, Path, Path]]:
    """(split, seq, events file, boxes file) for every ``{split}/{seq}_bbox.npy`` under ``raw_dir`` and, in
    :data:`UNLABELED_SPLIT`, every event file without one (its boxes file absent: an unlabeled sequence); the
    events file is RVT's h5 or a camera recording (:func:`~leod_core.data.raw_discovery.find_events_file`)."""
    found = []
    for split in SPLITS:
        split_dir = raw_dir / split
        if not split_dir.is_dir():
            raise FormatError(split_dir, "raw split directory is missing")
        names = {boxes_file.name[: -len(_BBOX_SUFFIX)] for boxes_file in split_dir.glob(f"*{_BBOX_SUFFIX}")}
        if split == UNLABELED_SPLIT:
            names |= sequences_with_events(split_dir, cfg.gen4_style_names)
        for seq in sorted(names, key=lambda name: name + _BBOX_SUFFIX):   # the order of the boxes files
            events_file = find_events_file(split_dir, seq, cfg.gen4_style_names)
            found.append((split, seq, events_file, split_dir / f"{seq}{_BBOX_SUFFIX}"))
    if not found:
        raise FormatError(raw_dir, f"no raw sequences (*{_BBOX_SUFFIX}) found")
    return found


def preprocess_dataset(raw_dir: Path, out_dir: Path, cfg: PreprocessConfig, workers: int = 1,
                       progress: bool = True) -> dict:
    """Preprocess every raw sequence of ``raw_dir`` into ``out_dir`` (parallel over sequences).

    Writes ``out_dir/preprocess_summary.json`` last (the sequences per split and status, unlabeled sequences
    under :data:`UNLABELED`; the config).
    """
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    jobs = find_raw_sequences(raw_dir, cfg)
    args = [(ev, bx, out_dir / split / seq, split, cfg) for split, seq, ev, bx in jobs]
    log.info("preprocessing %d sequences from %s into %s with %d worker(s)", len(jobs), raw_dir, out_dir, workers)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            statuses = list(tqdm(pool.map(preprocess_sequence, *zip(*args)), total=len(args),
                                 desc="preprocess", unit="seq", disable=not progress))
    else:
        statuses = [preprocess_sequence(*a) for a in tqdm(args, desc="preprocess", unit="seq", disable=not progress)]
    summary: dict = {"splits": {}, "config": dataclasses.asdict(cfg)}
    for (split, seq, _, _), status in zip(jobs, statuses):
        summary["splits"].setdefault(split, {}).setdefault(status, []).append(seq)
    write_text_atomic(out_dir / "preprocess_summary.json", json.dumps(summary, indent=2, sort_keys=True))
    for split, by_status in summary["splits"].items():
        log.info("%s: %s", split, ", ".join(f"{len(v)} {k}" for k, v in sorted(by_status.items())))
    dropped = [str(bx) for (_, _, _, bx), status in zip(jobs, statuses) if status == NO_LABELS]
    if dropped:
        log.warning("%d of %d sequences have no labels left after filtering and were not written: %s",
                    len(dropped), len(jobs), ", ".join(dropped))
    return summary
