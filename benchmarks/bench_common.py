"""Helpers shared by the benchmark scripts: the provenance of a table row (device, torch, commit, command, load),
median timing, and synthetic preprocessed sequences written with the project's own HDF5/label writers.

Not a benchmark itself (``python benchmarks/bench_*.py`` are); imported by them from the same directory.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from leod_core.data.formats import (EV_REPR_CHANNELS, PROPHESEE_BBOX_DTYPE, EventReprWriter, SequenceLabels,
                                    SequencePaths, write_labels, write_npy)

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Frame shapes (H, W) of the read representations: Gen1, and 1Mpx (Gen4) after RVT's down-sampling by 2.
FRAME_SHAPES = {"gen1": (240, 304), "1mpx-ds2": (360, 640)}


# ------------------------------------------------------------------------------------------ provenance
def commit() -> str:
    """``git rev-parse --short HEAD``, with ``+`` when the work tree has uncommitted changes."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=REPO_ROOT).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                           text=True, cwd=REPO_ROOT).stdout.strip()
    return head + ("+" if dirty else "")


def device_name(device: torch.device) -> str:
    """``CPU x86_64, 2 cores, 2 threads`` or the CUDA device's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"


def load_average() -> str:
    """The 1-minute load average (``/proc/loadavg``), ``n/a`` where there is none."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def command_line(script: str) -> str:
    """The command that produced a row: ``python benchmarks/<script> <args>``."""
    return " ".join([f"python benchmarks/{script}", *sys.argv[1:]])


#: The columns every benchmark row starts with (see :func:`provenance` and :func:`load_average`).
PROVENANCE_COLUMNS = ("benchmark", "device", "torch", "commit", "command", "load")


def print_markdown_table(columns: Sequence[str], rows: Sequence[str]) -> None:
    """Print a Markdown table: the header ``PROVENANCE_COLUMNS + columns``, its rule, and the ready-made ``rows``."""
    header = (*PROVENANCE_COLUMNS, *columns)
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    print("\n".join(rows))


def provenance(device: torch.device, script: str) -> str:
    """Markdown cells ``device | torch | commit | `command` ``."""
    return f"{device_name(device)} | {torch.__version__} | {commit()} | `{command_line(script)}`"


# ------------------------------------------------------------------------------------------ timing
def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (a no-op on CPU), so that wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of ``fn()`` (device work included)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved_medians(fns: Sequence[Callable[[], object]], repeats: int, device: torch.device
                        ) -> tuple[list[float], list[list[float]]]:
    """Run ``fns`` in turn ``repeats`` times (A B A B ...), so that load changes hit all alike.

    Returns:
        (median seconds per function, all timings per function).
    """
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            times[k].append(timed(fn, device))
    return [statistics.median(t) for t in times], times


# ------------------------------------------------------------------------------------------ synthetic data
@dataclass(frozen=True)
class SyntheticSequenceConfig:
    """Shape and content of a synthetic preprocessed sequence (RVT layout, written by the project's writers).

    Attributes:
        num_reprs: representations (50 ms each).
        frame_hw: (H, W) of the stored representations (Gen1 240x304; 1Mpx down-sampled 360x640).
        downsampled_by_2: store them as ``event_representations_ds2_nearest.h5`` with boxes in 2x sensor pixels.
        density: fraction of histogram cells holding events (real Gen1 windows are sparse: a few %).
        label_every: a GT frame every this many representations (Gen1's 4 Hz labels = every 5th 50 ms window).
        boxes_per_label: GT boxes per labeled frame.
        write_chunk: representations generated and appended at a time (bounds the memory used).
    """

    num_reprs: int = 60
    frame_hw: tuple[int, int] = FRAME_SHAPES["gen1"]
    downsampled_by_2: bool = False
    density: float = 0.05
    label_every: int = 5
    boxes_per_label: int = 2
    write_chunk: int = 16


def _histograms(rng: np.random.Generator, count: int, frame_hw: tuple[int, int], density: float) -> np.ndarray:
    """uint8 [count, 20, H, W]: a ``density`` fraction of cells with 1..10 events, the rest 0."""
    shape = (count, EV_REPR_CHANNELS, *frame_hw)
    values = rng.integers(1, 11, size=shape, dtype=np.uint8)
    return np.where(rng.random(shape, dtype=np.float32) < density, values, np.uint8(0))


def _gt_boxes(rng: np.random.Generator, count: int, sensor_hw: tuple[int, int], t_us: int) -> np.ndarray:
    """``count`` Prophesee boxes (classes alternating) of 10-30 % of the sensor size, inside it."""
    height, width = sensor_hw
    boxes = np.zeros(count, dtype=PROPHESEE_BBOX_DTYPE)
    boxes["t"] = t_us
    boxes["w"] = rng.uniform(0.1, 0.3, count) * width
    boxes["h"] = rng.uniform(0.1, 0.3, count) * height
    boxes["x"] = rng.uniform(0, 1, count) * (width - 1 - boxes["w"])
    boxes["y"] = rng.uniform(0, 1, count) * (height - 1 - boxes["h"])
    boxes["class_id"] = np.arange(count) % 2
    boxes["class_confidence"] = 1.0
    return boxes


def write_synthetic_sequence(root: Path, cfg: SyntheticSequenceConfig, seed: int) -> None:
    """A preprocessed sequence directory ``root`` (event representations, labels, index files)."""
    rng = np.random.default_rng(seed)
    paths = SequencePaths(root)
    paths.ev_repr_dir.mkdir(parents=True)
    period_us = 50_000
    times_us = period_us * (1 + np.arange(cfg.num_reprs, dtype=np.int64))
    with EventReprWriter(paths.ev_repr_file(cfg.downsampled_by_2), EV_REPR_CHANNELS, *cfg.frame_hw) as writer:
        for start in range(0, cfg.num_reprs, cfg.write_chunk):
            count = min(cfg.write_chunk, cfg.num_reprs - start)
            writer.append(_histograms(rng, count, cfg.frame_hw, cfg.density))
    scale = 2 if cfg.downsampled_by_2 else 1
    sensor_hw = (cfg.frame_hw[0] * scale, cfg.frame_hw[1] * scale)
    labeled = np.arange(cfg.label_every - 1, cfg.num_reprs, cfg.label_every, dtype=np.int64)
    frames = [_gt_boxes(rng, cfg.boxes_per_label, sensor_hw, int(times_us[r])) for r in labeled]
    write_labels(paths.labels, SequenceLabels.from_frames(frames))
    write_npy(paths.label_timestamps, times_us[labeled])
    write_npy(paths.objframe_idx_2_repr_idx, labeled)
    write_npy(paths.repr_timestamps, times_us)


def write_synthetic_split(split_dir: Path, num_sequences: int, cfg: SyntheticSequenceConfig) -> list[str]:
    """``num_sequences`` sequences ``seq_000 ..`` under ``split_dir``; returns their names."""
    names = [f"seq_{k:03d}" for k in range(num_sequences)]
    for k, name in enumerate(names):
        write_synthetic_sequence(split_dir / name, cfg, seed=k)
    return names
