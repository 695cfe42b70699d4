"""Shared fixtures: a small synthetic dataset (the real generator, shrunk), preprocessed and split."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from leod_core.data.preprocess import PRESETS, preprocess_dataset
from leod_core.data.splits import make_split, write_split
from leod_core.data.synth import SynthConfig, generate_dataset

SMALL_SYNTH = dataclasses.replace(SynthConfig(), duration_s=3.0, num_train=3, num_val=1, num_test=2, seed=7)


@dataclasses.dataclass(frozen=True)
class SmallDataset:
    root: Path        # preprocessed RVT layout (train/val/test)
    split: Path       # WSOD 10 % split JSON for sequence length 5
    sequence_length: int = 5


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> SmallDataset:
    base = tmp_path_factory.mktemp("small_synth")
    generate_dataset(base / "raw", SMALL_SYNTH, workers=1, progress=False)
    preprocess_dataset(base / "raw", base / "data", PRESETS["synth"], progress=False)
    split = base / "wsod_0.1.json"
    write_split(split, make_split(base / "data" / "train", "wsod", 0.1, 5))
    return SmallDataset(root=base / "data", split=split)
