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


@pytest.mark.parametrize("setting, ratio", [("wsod", "0.5"), ("ssod", "1"), ("full", "1")])
def test_split_marks_unlabeled_recordings(dataset, tmp_path, setting, ratio):
    root, unlabeled = dataset
    out = tmp_path / "split.json"
    assert leod(["split", "--data", str(root), "--setting", setting, "--ratio", ratio, "--sequence-length", SEQ_LEN,
                 "--out", str(out)]) == 0
    split = read_split(out)
    assert split.num_sequences == NUM_LABELED + NUM_UNLABELED
    assert all(split.labeled_frames[name] == [] for name in unlabeled)
    assert split.num_labeled_sequences == NUM_LABELED


@pytest.mark.slow
def test_pseudo_labels_and_self_training_cover_unlabeled_recordings(dataset, tmp_path, monkeypatch):
    root, unlabeled = dataset
    split = tmp_path / "split.json"
    assert leod(["split", "--data", str(root), "--setting", "wsod", "--ratio", "0.5", "--sequence-length", SEQ_LEN,
                 "--out", str(split)]) == 0
    ckpt = write_confident_checkpoint(tmp_path / "model.ckpt")
    shard_list = tmp_path / "shard_list_1.json"
    assert workflow(["shard-list", "--data", str(root), "--split", str(split), "--num-shards", "1",
                     "--out", str(shard_list)]) == 0
    assert leod(["--no-progress", "pseudo-label", "--checkpoint", str(ckpt), "--data", str(root), "--split",
                 str(split), "--out", str(tmp_path / "shards/0"), "--shard", "0", "--shard-list", str(shard_list),
                 "--camera", "synth", "--sequence-length", SEQ_LEN, "--batch-size", "2"]) == 0
    pseudo = tmp_path / "pseudo"
    assert leod(["merge-shards", "--shards", str(tmp_path / "shards/0"), "--shard-list", str(shard_list),
                 "--data", str(root), "--out", str(pseudo)]) == 0
    names = sorted(p.name for p in (root / "train").iterdir())
    assert len(names) == NUM_LABELED + NUM_UNLABELED
    assert all(is_complete_sequence(pseudo / "train" / name) for name in names)
    for name in unlabeled:   # every frame of an unlabeled recording was predicted (no GT row, t == 0)
        labels = read_labels(SequencePaths(pseudo / "train" / name).labels)
        assert len(labels.labels) > 0 and np.all(labels.labels["t"] == 0)

    quality = tmp_path / "quality.json"
    assert leod(["label-quality", "--pseudo-data", str(pseudo), "--data", str(root), "--split", str(split),
                 "--out", str(quality), "--camera", "synth"]) == 0
    assert json.loads(quality.read_text())["num_sequences"] <= NUM_LABELED    # unlabeled frames have no GT

    selected = []

    def spy(data_dir, split_):
        out = select(data_dir, split_)
        selected.extend(out)
        return out

    select = loaders.select_sequences
    monkeypatch.setattr(loaders, "select_sequences", spy)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model:\n  size: tiny\n  overrides: {embed_dim: 16, dim_head: 16}\n"
                   f"data: {{sequence_length: {SEQ_LEN}, batch_size: 2, sampling: mixed}}\n")
    assert leod(["--no-progress", "train", "--config", str(cfg), "--steps", "2", "--accelerator", "cpu",
                 "--pseudo-data", str(pseudo), "--out", str(tmp_path / "round1")]) == 0
    assert sorted(s.path.name for s in selected) == names
    assert (tmp_path / "round1/model.ckpt").is_file()
