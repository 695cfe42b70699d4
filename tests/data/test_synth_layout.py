"""``leod synth --layout flat`` (every recording in one folder) and ``--unlabeled-fraction`` (train recordings
without a ``_bbox.npy``): what the README's "Bring your own event camera" walkthrough makes."""
from __future__ import annotations

import dataclasses
import json

import pytest

from leod_core.cli import main as leod
from leod_core.data.formats import SPLITS, raw_paths
from leod_core.data.raw_discovery import events_file_for_writing
from leod_core.data.synth import SUMMARY_FILE, SynthConfig, generate_dataset, sequence_name

TINY = SynthConfig(height=32, width=48, duration_s=1.0, num_train=4, num_val=1, num_test=1)


def test_unlabeled_train_sequences_are_spread_evenly_and_only_in_train():
    config = dataclasses.replace(TINY, num_train=6, num_val=2, unlabeled_fraction=0.5)
    assert config.unlabeled_indices("train") == {1, 3, 5}
    assert config.unlabeled_indices("val") == config.unlabeled_indices("test") == frozenset()
    assert dataclasses.replace(config, num_train=10, unlabeled_fraction=0.3).unlabeled_indices("train") == {1, 5, 8}
    assert dataclasses.replace(config, unlabeled_fraction=1.0).unlabeled_indices("train") == set(range(6))
    assert TINY.unlabeled_indices("train") == frozenset()
    with pytest.raises(ValueError, match=r"unlabeled_fraction must be in \[0, 1\], got 1.5"):
        dataclasses.replace(TINY, unlabeled_fraction=1.5)


def test_flat_layout_writes_every_split_into_one_folder_with_the_same_events(tmp_path):
    config = dataclasses.replace(TINY, unlabeled_fraction=0.5)
    splits = generate_dataset(tmp_path / "splits", config, progress=False, fmt="evt3")
    flat = generate_dataset(tmp_path / "flat", config, progress=False, fmt="evt3", layout="flat")
    assert flat == splits
    assert flat["splits"]["train"]["unlabeled"] == 2 and flat["splits"]["val"]["unlabeled"] == 0
    written = sorted(path.name for path in (tmp_path / "flat").iterdir())
    expected = [SUMMARY_FILE]
    for split in SPLITS:
        for index in range(config.num_sequences(split)):
            name = sequence_name(split, index)
            events = events_file_for_writing(tmp_path / "flat", name, "evt3")
            assert events.read_bytes() == events_file_for_writing(tmp_path / "splits" / split, name, "evt3").read_bytes()
            labeled = index not in config.unlabeled_indices(split)
            assert raw_paths(tmp_path / "splits" / split, name)[1].is_file() == labeled
            expected += [events.name] + ([raw_paths("", name)[1].name] if labeled else [])
    assert written == sorted(expected)
    assert not any(path.is_dir() for path in (tmp_path / "flat").iterdir())


def test_an_unknown_layout_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown layout 'nested', expected one of \('splits', 'flat'\)"):
        generate_dataset(tmp_path, TINY, progress=False, layout="nested")
    assert not tmp_path.joinpath(SUMMARY_FILE).exists()


def test_the_cli_writes_the_walkthroughs_folder(tmp_path):
    out = tmp_path / "my_recordings"
    assert leod(["--no-progress", "synth", "--out", str(out), "--format", "evt3", "--layout", "flat",
                 "--unlabeled-fraction", "0.5", "--num-train", "4", "--num-val", "1", "--num-test", "1",
                 "--duration-s", "1", "--height", "32", "--width", "48"]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["config"]["unlabeled_fraction"] == 0.5 and summary["splits"]["train"]["unlabeled"] == 2
    assert sorted(path.name for path in out.glob("synth_train_*")) == [
        "synth_train_000_bbox.npy", "synth_train_000_td.raw", "synth_train_001_td.raw",
        "synth_train_002_bbox.npy", "synth_train_002_td.raw", "synth_train_003_td.raw"]
    assert leod(["--no-progress", "synth", "--out", str(tmp_path / "bad"), "--unlabeled-fraction", "-0.1"]) != 0
