"""Synthetic event camera: moving textured cars and pedestrians, written in RVT's raw layout.

A scene is a static low-contrast background with sprites (class 0 car-like, class 1 pedestrian-like)
moving along smooth trajectories, entering and leaving the view and occluding each other by depth.
Log-intensity frames are rendered every ``time_step_us``; a pixel emits one event each time its
log-intensity moves by its contrast threshold away from its reference (timestamps interpolated within the
step), plus uniform noise events and hot pixels. Boxes of visible objects are labelled at 4 Hz.
Each sequence has its own RNG derived from (seed, split, index), so sequences are independent.

The parts: :mod:`~leod_core.data.synth_config` (settings), :mod:`~leod_core.data.synth_scene` (background,
sprites, motion), :mod:`~leod_core.data.synth_events` (rendering, events, noise); this module labels the visible
boxes, assembles a sequence and writes the dataset.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, SPLITS, RawEvents, raw_paths, write_raw_boxes
from leod_core.data.raw_discovery import events_file_for_writing
from leod_core.data.recordings import write_recording
from leod_core.data.synth_config import (DEFAULT_EVENT_FORMAT, DEFAULT_LAYOUT, EVENT_FORMATS, LAYOUTS, SPLITS_LAYOUT,
                                        SynthConfig)
from leod_core.data.synth_events import _noise_events, _simulate, _splat
from leod_core.data.synth_scene import CAR, PEDESTRIAN, _SHAPE_ORIGIN, _background, _scene, _Scene
from leod_core.data.synth_scene import _sprite  # noqa: F401  (tests draw single sprites through this module)

__all__ = ["CAR", "DEFAULT_EVENT_FORMAT", "DEFAULT_LAYOUT", "EVENT_FORMATS", "LAYOUTS", "PEDESTRIAN", "SUMMARY_FILE",
           "SynthConfig", "generate_dataset", "generate_sequence", "sequence_dir", "sequence_name"]

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
_COVERED = 0.5  # alpha at which a pixel counts as showing the object (labels, occlusion)


def sequence_name(split: str, index: int) -> str:
    return f"synth_{split}_{index:03d}"


def _rng(config: SynthConfig, split: str, index: int) -> np.random.Generator:
    """The RNG of one sequence, independent of every other (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(SPLITS.index(split), index)))


def _visible_boxes(config: SynthConfig, scene: _Scene, k: int) -> list[tuple[int, float, float, float, float]]:
    """(object, x, y, w, h) of objects visible at frame ``k``: box clipped to the view and to visible pixels."""
    occupied = np.zeros((config.height, config.width), bool)
    boxes = []
    for j in scene.order[::-1]:  # front to back
        if np.isnan(scene.ox[k, j]):
            continue
        coverage = np.zeros((config.height, config.width))
        sprite = scene.alpha[j, scene.frame[k, j]]
        _splat(sprite, sprite, scene.ox[k, j], scene.oy[k, j], coverage)
        covered = coverage >= _COVERED
        visible = covered & ~occupied
        occupied |= covered
        if visible.sum() < max(config.min_visible_px, config.min_visible_fraction * (sprite >= _COVERED).sum()):
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        left, top = scene.ox[k, j] + _SHAPE_ORIGIN, scene.oy[k, j] + _SHAPE_ORIGIN
        x1, y1 = max(left, cols[0] - 0.5, 0.0), max(top, rows[0] - 0.5, 0.0)
        x2 = min(left + scene.size[j, 0], cols[-1] + 0.5, config.width - 1.0)
        y2 = min(top + scene.size[j, 1], rows[-1] + 0.5, config.height - 1.0)
        if x2 > x1 and y2 > y1:
            boxes.append((int(j), x1, y1, x2 - x1, y2 - y1))
    return sorted(boxes)


def _labels(config: SynthConfig, scene: _Scene) -> np.ndarray:
    """Boxes (PROPHESEE_BBOX_DTYPE, sorted by t then track) every label_period_us from label_period_us on."""
    rows = [(t, x, y, w, h, scene.class_id[j], j, 1.0)
            for t in range(config.label_period_us, config.duration_us, config.label_period_us)
            for j, x, y, w, h in _visible_boxes(config, scene, t // config.time_step_us)]
    boxes = np.zeros(len(rows), dtype=PROPHESEE_BBOX_DTYPE)  # zeroed: the dtype has 4 padding bytes
    for name, column in zip(PROPHESEE_BBOX_DTYPE.names, zip(*rows)):
        boxes[name] = column
    return boxes


def generate_sequence(config: SynthConfig, split: str, index: int) -> tuple[RawEvents, np.ndarray]:
    """Simulate sequence ``index`` of ``split``: events (sorted by t) and boxes (PROPHESEE_BBOX_DTYPE). No I/O."""
    rng = _rng(config, split, index)
    background = _background(config, rng)
    threshold = np.maximum(config.contrast_threshold + config.threshold_sigma * rng.normal(size=background.shape),
                           config.threshold_min)
    scene = _scene(config, rng)
    events = np.concatenate([_simulate(background, scene.prem, scene.alpha, scene.frame, scene.ox, scene.oy,
                                       scene.order, threshold, config.time_step_us),
                             _noise_events(config, rng)])
    events = events[np.argsort(events[:, 0], kind="stable")]
    raw = RawEvents(x=events[:, 1].astype(np.uint16), y=events[:, 2].astype(np.uint16),
                    p=events[:, 3].astype(np.int8), t=events[:, 0].copy(), height=config.height, width=config.width)
    return raw, _labels(config, scene)


def sequence_dir(out_dir: Path, split: str, layout: str) -> Path:
    """The folder a sequence of ``split`` is written to in ``layout`` (one of :data:`LAYOUTS`)."""
    return out_dir / split if layout == SPLITS_LAYOUT else out_dir


def _write_sequence(out_dir: Path, config: SynthConfig, fmt: str, layout: str, split: str,
                    index: int) -> tuple[str, int, int, int, bool]:
    """Generate and write one sequence (events in format ``fmt``, boxes unless it is one of the config's unlabeled
    sequences); return (split, events, boxes written, bytes written, labeled)."""
    events, boxes = generate_sequence(config, split, index)
    name = sequence_name(split, index)
    folder = sequence_dir(out_dir, split, layout)
    events_path = events_file_for_writing(folder, name, fmt)
    write_recording(events_path, events, fmt)
    if index in config.unlabeled_indices(split):
        return split, len(events.t), 0, events_path.stat().st_size, False
    boxes_path = raw_paths(folder, name)[1]
    write_raw_boxes(boxes_path, boxes)
    return split, len(events.t), len(boxes), events_path.stat().st_size + boxes_path.stat().st_size, True


def generate_dataset(out_dir: Path, config: SynthConfig, workers: int = 1, progress: bool = True,
                     fmt: str = DEFAULT_EVENT_FORMAT, layout: str = DEFAULT_LAYOUT) -> dict:
    """Write every split's sequences under ``out_dir``, then ``out_dir/summary.json``.

    ``fmt`` (one of :data:`EVENT_FORMATS`) is the events' file format: ``h5`` writes RVT's ``{seq}_td.dat.h5``,
    ``dat`` a Prophesee ``{seq}_td.dat``, ``evt2`` / ``evt3`` a ``{seq}_td.raw``; boxes are always
    ``{seq}_bbox.npy``, and the config's unlabeled train sequences (:meth:`SynthConfig.unlabeled_indices`) have
    none. ``layout`` (one of :data:`LAYOUTS`): ``splits`` is RVT's raw layout (``train/ val/ test/``), ``flat``
    puts every sequence directly in ``out_dir`` (names ``synth_{split}_{index}`` stay unique).

    Returns (and writes) ``{"splits": {split: {"sequences", "unlabeled", "events", "boxes", "bytes"}},
    "total_bytes": int, "config": {...}}``; the summary file is written last, so it marks a complete dataset.
    """
    if fmt not in EVENT_FORMATS:
        raise ValueError(f"unknown event file format {fmt!r}, expected one of {EVENT_FORMATS}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}, expected one of {LAYOUTS}")
    out_dir = Path(out_dir)
    jobs = [(split, i) for split in SPLITS for i in range(config.num_sequences(split))]
    summary = {split: {"sequences": 0, "unlabeled": 0, "events": 0, "boxes": 0, "bytes": 0} for split in SPLITS}
    write = partial(_write_sequence, out_dir, config, fmt, layout)
    splits, indices = [s for s, _ in jobs], [i for _, i in jobs]
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.map(write, splits, indices) if pool else map(write, splits, indices)
        for split, n_events, n_boxes, n_bytes, labeled in tqdm(results, total=len(jobs), disable=not progress,
                                                               desc="synth", unit="seq"):
            stats = summary[split]
            stats["sequences"] += 1
            stats["unlabeled"] += not labeled
            stats["events"] += n_events
            stats["boxes"] += n_boxes
            stats["bytes"] += n_bytes
    total = sum(s["bytes"] for s in summary.values())
    for split, s in summary.items():
        log.info("synth %s: %d sequences (%d without boxes), %d events, %d boxes, %.1f MB", split, s["sequences"],
                 s["unlabeled"], s["events"], s["boxes"], s["bytes"] / 1e6)
    log.info("synth: wrote %d sequences (%dx%d, %.1f s each, %s layout) to %s, %.1f MB in total", len(jobs),
             config.height, config.width, config.duration_s, layout, out_dir, total / 1e6)
    result = {"splits": summary, "total_bytes": total, "config": dataclasses.asdict(config)}
    write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(result, indent=2, sort_keys=True))
    return result
