"""A fake RVT preprocessed tree for planning the paper's workflow at its real scale, and a mock of the GPU commands.

The tree has the real layout (``docs/layout.md``) and, per sequence, index files of the real length (the
representation and label timestamps and ``objframe_idx_2_repr_idx`` that RVT's preprocessing lays out for a
recording of that duration, computed with :mod:`leod_core.data.preprocess`'s own functions and the camera's
preset) but tiny payloads: ``labels.npz`` holds one box per label frame, and the event-representation HDF5 is a
chunked dataset of the real shape ``[T, 20, H, W]`` with no chunk written (a few kB: only its shape is read).

What the planning reads, and so what must be faithful (everything else is never opened by a dry run or by the
cheap rules): the ``sequence_index`` rule reads, once per dataset, every train sequence's
``objframe_idx_2_repr_idx.npy`` and ``labels.npz`` (the number of label frames, and whether a sequence has boxes)
and its HDF5 shape (``data.shape[0]``, the number of representations: the shards are balanced by it); ``leod
split`` and the ``shard_list`` checkpoint read that index; ``link_preprocessed`` only checks that ``train/ val/ test/`` are non-empty. Val and test sequences are
written the same way but only counted.

:func:`write_mock_bin` writes ``leod`` and ``python`` wrappers for a no-op *execution* of the workflow: the GPU
and data-heavy commands (train, pseudo-label, merge-shards, label-quality, evaluate, tables) write their declared
outputs and nothing else; ``leod split`` and every ``python -m leod_core.workflow`` command (write-config,
sequence-index, shard-list, gate, link-data) run for real, except ``prepare-resume`` (the resume stamp of a training or shard
directory, which hashes the job's inputs: it only makes the directory).
"""
from __future__ import annotations

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import yaml

from leod_core.data.formats import (EV_REPR_CHANNELS, PROPHESEE_BBOX_DTYPE, SequenceLabels, SequencePaths,
                                    write_labels, write_npy)
from leod_core.data.preprocess import PRESETS, repr_timestamps, unlabeled_label_frames

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetShape:
    """Sequence counts per split, sequence duration (s, drawn uniformly in ``duration_s``), the stored frame
    size (H, W) and whether the representations are stored down-sampled by 2 (``..._ds2_nearest.h5``)."""

    camera: str
    counts: dict[str, int]
    duration_s: tuple[float, float]
    frame_hw: tuple[int, int]
    downsampled_by_2: bool

    def scaled(self, fraction: float, minimum: int = 1, min_train: int = 60) -> "DatasetShape":
        """The same dataset with ``fraction`` of the sequences of each split (at least ``minimum``; train at
        least ``min_train``: SSOD at 1 % needs 50+ sequences to keep one, and 60 to have split offsets 0..2)."""
        counts = {split: max(min_train if split == "train" else minimum, round(n * fraction))
                  for split, n in self.counts.items()}
        return DatasetShape(self.camera, counts, self.duration_s, self.frame_hw, self.downsampled_by_2)

    def with_counts(self, counts: dict[str, int], duration_s: tuple[float, float] | None = None) -> "DatasetShape":
        return DatasetShape(self.camera, dict(counts), duration_s or self.duration_s, self.frame_hw,
                            self.downsampled_by_2)


#: RVT's preprocessed Gen1: 1458 / 429 / 470 sequences of (about) 60 s, 240x304, labels every 250 ms (4 Hz, the
#: rate RVT's and LEOD's Gen1 preprocessing keeps), two representations per label period.
GEN1 = DatasetShape("gen1", {"train": 1458, "val": 429, "test": 470}, (55.0, 60.0), (240, 304), False)
#: RVT's preprocessed 1Mpx ("gen4"): the recordings cut in 60 s chunks. The per-split counts are an ESTIMATE
#: (no source in this repository states them): about 14.7 h of recordings split about 76 / 12 / 12 % as the
#: 1Mpx dataset's train / val / test. Stored at 360x640 (down-sampled by 2); labels derived at 30 Hz give a 100 ms
#: label period, two representations per period.
GEN4 = DatasetShape("gen4", {"train": 670, "val": 135, "test": 135}, (55.0, 60.0), (360, 640), True)
PAPER_DATASETS = {"gen1": GEN1, "gen4": GEN4}


def sequence_plan(camera: str, duration_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(label frame times, representation end times, objframe_idx_2_repr_idx), int64, of a recording of
    ``duration_s`` labeled on the camera's label grid, laid out as RVT's preprocessing does."""
    cfg = PRESETS[camera]
    frames_us = unlabeled_label_frames((0, int(duration_s * 1e6)), cfg)
    reprs = repr_timestamps(frames_us, [cfg.reprs_per_label_period] * (len(frames_us) - 1), cfg.repr_step_us)
    frame_2_repr = np.searchsorted(reprs, frames_us).astype(np.int64)
    assert np.array_equal(reprs[frame_2_repr], frames_us)
    return frames_us, reprs, frame_2_repr


def write_fake_sequence(seq_dir: Path, shape: DatasetShape, duration_s: float) -> int:
    """One fake preprocessed sequence; returns its number of representations."""
    frames_us, reprs_us, frame_2_repr = sequence_plan(shape.camera, duration_s)
    paths = SequencePaths(seq_dir)
    paths.ev_repr_dir.mkdir(parents=True)
    (seq_dir / "labels_v2").mkdir()
    with h5py.File(paths.ev_repr_file(shape.downsampled_by_2), "w") as h5:
        frame = (EV_REPR_CHANNELS, *shape.frame_hw)
        h5.create_dataset("data", shape=(len(reprs_us), *frame), maxshape=(None, *frame), dtype=np.uint8,
                          chunks=(1, *frame))   # no chunk written: the real shape in a few kB
    write_npy(paths.repr_timestamps, reprs_us)
    write_npy(paths.objframe_idx_2_repr_idx, frame_2_repr)
    write_npy(paths.label_timestamps, frames_us)
    boxes = np.zeros(len(frames_us), dtype=PROPHESEE_BBOX_DTYPE)   # one small box per label frame
    boxes["t"], boxes["x"], boxes["y"], boxes["w"], boxes["h"] = frames_us, 10, 10, 40, 30
    boxes["class_confidence"] = 1.0
    write_labels(paths.labels, SequenceLabels(boxes, np.arange(len(frames_us), dtype=np.int64)))
    return len(reprs_us)


def write_fake_tree(root: Path, shape: DatasetShape, seed: int = 0) -> dict[str, Any]:
    """``{root}/{train,val,test}/{seq}`` with ``shape``'s counts; returns a summary (sequences, representations,
    label frames per split)."""
    rng = np.random.default_rng(seed)
    summary: dict[str, Any] = {}
    for split in SPLITS:
        reprs = 0
        for k in range(shape.counts[split]):
            name = f"{shape.camera}_{split}_{k:05d}_td"
            reprs += write_fake_sequence(root / split / name, shape, float(rng.uniform(*shape.duration_s)))
        summary[split] = {"sequences": shape.counts[split], "representations": reprs}
    return summary


def overlay_config(trees: dict[str, Path], threads: int = 1, **extra: Any) -> dict[str, Any]:
    """A config merged over paper.yaml: each dataset read from its fake tree (``preprocessed: {path}``) and, for
    a no-op execution, one thread per job (so that the mock jobs run side by side; it changes no plan)."""
    config: dict[str, Any] = {"datasets": {name: {"preprocessed": {"path": str(path)}} for name, path in
                                           trees.items()},
                              "threads": {"train": threads, "pseudo_label": threads, "evaluate": threads}}
    config.update(extra)
    return config


def write_overlay(path: Path, trees: dict[str, Path], **extra: Any) -> Path:
    path.write_text(yaml.safe_dump(overlay_config(trees, **extra)))
    return path


_MOCK_LEOD = r'''#!/bin/bash
# Mock of `leod` for a no-op execution of the workflow (tests/workflow/fake_tree.py): split runs for real, the
# GPU and data-heavy commands write their declared outputs only.
set -e
cmd=""; out=""; plots=""; write=""; datasets=()
for a in "$@"; do [[ "$a" != -* ]] && { cmd="$a"; break; }; done   # global options before it are flags
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --out) out="${args[i+1]}" ;;
    --plots) plots="${args[i+1]}" ;;
    --write) write="${args[i+1]}" ;;
    --datasets) j=$((i+1)); while [ $j -lt ${#args[@]} ] && [[ "${args[j]}" != --* ]]; do
                  datasets+=("${args[j]}"); j=$((j+1)); done ;;
  esac
done
case "$cmd" in
  split) exec @REAL_LEOD@ "$@" ;;
  train) mkdir -p "$out"; echo mock > "$out/model.ckpt" ;;
  pseudo-label) mkdir -p "$out"; echo '{"mock": true}' > "$out/shard.json" ;;
  merge-shards) mkdir -p "$out"; echo '{"mock": true}' > "$out/pseudo_summary.json" ;;
  label-quality) mkdir -p "$(dirname "$out")"
    echo '{"precision": {"0.5": @PRECISION@}, "recall": {"0.5": 0.5}, "per_class": {}, "num_frames": 1}' > "$out" ;;
  evaluate) mkdir -p "$(dirname "$out")"; echo '{"mock": true}' > "$out" ;;
  tables) mkdir -p "$out"
    if [ "$write" = ablation ]; then
      for d in "${datasets[@]}"; do echo mock > "$out/${d}_ablation.md"; echo mock > "$out/${d}_ablation.csv"; done
    else
      mkdir -p "$plots"
      for d in $(ls results); do
        case "$d" in data|raw|tables|plots|videos|downloads|weights|benchmarks) ;;
          *) echo mock > "$out/$d.md"; echo mock > "$out/$d.csv" ;; esac
      done
    fi ;;
  *) echo "mock leod: no mock for '$cmd'" >&2; exit 1 ;;
esac
'''

_MOCK_PYTHON = r'''#!/bin/bash
# Mock of `python` for a no-op execution: `-m leod_core.workflow prepare-resume` only makes the directory; every
# other call runs the real interpreter.
if [ "$1" = -m ] && [ "$2" = leod_core.workflow ] && [ "$3" = prepare-resume ]; then
  while [ $# -gt 0 ]; do [ "$1" = --dir ] && mkdir -p "$2"; shift; done
  exit 0
fi
exec @REAL_PYTHON@ "$@"
'''


def write_mock_bin(directory: Path, gate_precision: float = 0.9) -> Path:
    """``directory/leod`` and ``directory/python`` (see the module docstring); put ``directory`` first on PATH.
    ``gate_precision``: the pseudo labels' precision every mock ``label-quality`` reports (0.9 passes paper.yaml's
    0.85 gate, so every round is trained: the largest plan)."""
    directory.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent
    for name, text in (("leod", _MOCK_LEOD), ("python", _MOCK_PYTHON)):
        path = directory / name
        path.write_text(text.replace("@REAL_LEOD@", str(bin_dir / "leod"))
                        .replace("@REAL_PYTHON@", sys.executable).replace("@PRECISION@", repr(float(gate_precision))))
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def mock_env(mock_bin: Path) -> dict[str, str]:
    """The environment of a snakemake run whose jobs find the mocks first."""
    env = dict(os.environ)
    env["PATH"] = f"{mock_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
