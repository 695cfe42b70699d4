"""Unlabeled recordings take part: 4 labeled + 8 unlabeled synthetic training recordings (4 without a
``_bbox.npy``, 4 with an empty one) are preprocessed, split, pseudo-labelled and trained on."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders import write_confident_checkpoint
from leod_core.cli import main as leod
from leod_core.data import loaders
from leod_core.data.formats import SequencePaths, read_labels, read_objframe_idx_2_repr_idx
from leod_core.data.preprocess import PRESETS
from leod_core.data.splits import read_split
from leod_core.pseudo.writer import is_complete_sequence
from leod_core.workflow.__main__ import main as workflow

NUM_LABELED, NUM_UNLABELED = 4, 8
SEQ_LEN = "5"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[str]]:
    """(preprocessed root, names of the unlabeled training sequences)."""
    base = tmp_path_factory.mktemp("unlabeled")
    assert leod(["--no-progress", "synth", "--out", str(base / "raw"), "--seed", "3", "--duration-s", "1.5",
                 "--num-train", str(NUM_LABELED + NUM_UNLABELED), "--num-val", "1", "--num-test", "1"]) == 0
    boxes_files = sorted((base / "raw/train").glob("*_bbox.npy"))
    unlabeled = boxes_files[NUM_LABELED:]
    for i, path in enumerate(unlabeled):
        if i % 2:
            path.unlink()                                   # no boxes file at all
        else:
            np.save(path, np.load(path)[:0])                # an empty one
    assert leod(["--no-progress", "preprocess", "--raw", str(base / "raw"), "--out", str(base / "data"),
                 "--preset", "synth"]) == 0
    return base / "data", [p.name.removesuffix("_bbox.npy") for p in unlabeled]


def test_preprocess_keeps_unlabeled_recordings_on_the_label_grid(dataset):
    root, unlabeled = dataset
    summary = json.loads((root / "preprocess_summary.json").read_text())
    assert sorted(summary["splits"]["train"]["unlabeled"]) == unlabeled
    assert len(summary["splits"]["train"]["written"]) == NUM_LABELED
    cfg = PRESETS["synth"]
    for name in unlabeled:
        paths = SequencePaths(root / "train" / name)
        labels = read_labels(paths.labels)
        frames_us = np.load(paths.label_timestamps)
        repr_ts = np.load(paths.repr_timestamps)
        assert len(labels.labels) == 0 and labels.num_frames == len(frames_us) > 1
        assert frames_us[0] % cfg.repr_step_us == 0 and frames_us[0] >= cfg.align_t_us
        assert np.all(np.diff(frames_us) == cfg.label_period_us)
        assert np.array_equal(repr_ts[read_objframe_idx_2_repr_idx(paths.objframe_idx_2_repr_idx)], frames_us)
    # a rerun skips them and still lists them as unlabeled
    assert leod(["--no-progress", "preprocess", "--raw", str(root.parent / "raw"), "--out", str(root),
                 "--preset", "synth"]) == 0
    rerun = json.loads((root / "preprocess_summary.json").read_text())["splits"]["train"]
    assert sorted(rerun["unlabeled"]) == unlabeled and len(rerun["skipped"]) == NUM_LABELED


@pytest.mark.parametrize("setting, ratio, offset, labeled_sequences", [
    ("wsod", "0.5", "0", NUM_LABELED), ("ssod", "1", "0", NUM_LABELED), ("full", "1", "0", NUM_LABELED),
    # the ratio applies within the labeled recordings: a third of the 4 keeps 1 (over all 12 names, LEOD's
    # step would be 3 and keep 4 names, 2 of them labeled)
    ("ssod", "0.34", "0", 1), ("ssod", "0.34", "3", 1)])
def test_split_marks_unlabeled_recordings(dataset, tmp_path, setting, ratio, offset, labeled_sequences):
    root, unlabeled = dataset
    out = tmp_path / "split.json"
    assert leod(["split", "--data", str(root), "--setting", setting, "--ratio", ratio, "--sequence-length", SEQ_LEN,
                 "--offset", offset, "--out", str(out)]) == 0
    split = read_split(out)
    assert split.num_sequences == NUM_LABELED + NUM_UNLABELED
    assert all(split.labeled_frames[name] == [] for name in unlabeled)
    assert split.num_labeled_sequences == labeled_sequences
    assert split.unlabeled_sequences == tuple(sorted(unlabeled))


def test_ssod_counts_the_labeled_recordings_only(dataset, tmp_path, caplog):
    """10 % of the 4 labeled recordings is none (over all 12 names it would be one)."""
    root, _ = dataset
    assert leod(["split", "--data", str(root), "--setting", "ssod", "--ratio", "0.1", "--sequence-length", SEQ_LEN,
                 "--out", str(tmp_path / "split.json")]) == 1
    assert "too small for 4 sequences" in caplog.text
