"""`leod pseudo-label` shards, `leod merge-shards` and `leod label-quality` end to end on synthetic data."""
from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from builders import CONFIDENT_LOGIT, write_confident_checkpoint
from leod_core.cli import main
from leod_core.data.splits import make_split, write_split
from leod_core.models.checkpoint import save_model_checkpoint
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.pseudo.shard_list import write_shard_list
from leod_core.pseudo.shards import read_shard_manifest
from leod_core.pseudo.writer import is_complete_sequence



@pytest.fixture(scope="module")
def confident_checkpoint(tmp_path_factory):
    return write_confident_checkpoint(tmp_path_factory.mktemp("confident") / "model.ckpt")


def shard_list(dataset, directory, num_shards):
    """The shard list of ``num_shards`` shards beside the shard directories (as the workflow's checkpoint writes it)."""
    path = Path(directory) / f"shard_list_{num_shards}.json"
    write_shard_list(dataset.root, dataset.split, num_shards, False, path)
    return path


def pseudo_label(ckpt, dataset, out, shard, num_shards):
    # Batch 1: each sequence's arithmetic is then independent of which sequences share its batch. With B > 1
    # the batched CPU kernels differ in the last bits (measured up to 4e-6 px) between batch compositions.
    return main(["--no-progress", "pseudo-label", "--checkpoint", str(ckpt), "--data", str(dataset.root),
                 "--split", str(dataset.split), "--out", str(out), "--shard", str(shard), "--shard-list",
                 str(shard_list(dataset, Path(out).parent, num_shards)), "--camera", "synth", "--sequence-length",
                 "5", "--batch-size", "1"])


def merge(dataset, shards, out):
    return main(["merge-shards", "--shards", *map(str, shards), "--shard-list",
                 str(shard_list(dataset, Path(shards[0]).parent, len(shards))), "--data", str(dataset.root),
                 "--out", str(out)])


def label_files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted((root / "train").rglob("*"))
            if p.is_file() and not p.is_symlink()}


def test_sharded_equals_single_and_quality(small_dataset, confident_checkpoint, tmp_path):
    assert pseudo_label(confident_checkpoint, small_dataset, tmp_path / "one/0", 0, 1) == 0
    assert merge(small_dataset, [tmp_path / "one/0"], tmp_path / "one/dataset") == 0
    for k in range(3):
        assert pseudo_label(confident_checkpoint, small_dataset, tmp_path / f"three/{k}", k, 3) == 0
    assert merge(small_dataset, [tmp_path / f"three/{k}" for k in range(3)], tmp_path / "three/dataset") == 0
    single, sharded = label_files(tmp_path / "one/dataset"), label_files(tmp_path / "three/dataset")
    assert single and single.keys() == sharded.keys()
    assert all(single[k] == sharded[k] for k in single)
    summary = json.loads((tmp_path / "one/dataset/pseudo_summary.json").read_text())
    assert summary["pseudo_rows"] > 0 and summary["gt_rows"] > 0
    out = tmp_path / "quality.json"
    assert main(["label-quality", "--pseudo-data", str(tmp_path / "one/dataset"), "--data", str(small_dataset.root),
                 "--split", str(small_dataset.split), "--out", str(out), "--camera", "synth"]) == 0
    quality = json.loads(out.read_text())
    assert set(quality["precision"]) == {"0.25", "0.5", "0.75"} and quality["num_frames"] > 0


def test_killed_shard_reruns_only_missing_sequences(small_dataset, confident_checkpoint, tmp_path):
    shard = tmp_path / "shard0"
    assert pseudo_label(confident_checkpoint, small_dataset, shard, 0, 1) == 0
    written = sorted(read_shard_manifest(shard).sequences)
    assert len(written) >= 2
    mtimes = {n: (shard / "train" / n / "labels_v2/labels.npz").stat().st_mtime_ns for n in written}
    (shard / "shard.json").unlink()                      # the job died before finishing ...
    shutil.rmtree(shard / "train" / written[0])          # ... and before writing this sequence
    assert pseudo_label(confident_checkpoint, small_dataset, shard, 0, 1) == 0
    assert sorted(read_shard_manifest(shard).sequences) == written
    for name in written[1:]:
        assert (shard / "train" / name / "labels_v2/labels.npz").stat().st_mtime_ns == mtimes[name]


def test_merge_names_a_missing_shard(small_dataset, confident_checkpoint, tmp_path, caplog):
    assert pseudo_label(confident_checkpoint, small_dataset, tmp_path / "s0", 0, 2) == 0
    assert merge(small_dataset, [tmp_path / "s0", tmp_path / "s1"], tmp_path / "dataset") == 1
    assert "s1" in caplog.text
    assert not (tmp_path / "dataset").exists()


def test_shard_index_out_of_range(small_dataset, confident_checkpoint, tmp_path, caplog):
    assert pseudo_label(confident_checkpoint, small_dataset, tmp_path / "s", 2, 2) == 1
    assert "shard 2 is not in [0, 2)" in caplog.text


@pytest.mark.parametrize("command", [["pseudo-label", "--checkpoint", "model.ckpt", "--split", "split.json"],
                                     ["merge-shards", "--shards", "0", "1"]])
def test_the_old_num_shards_option_names_its_replacement(tmp_path, caplog, command):
    args = [*command, "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--shard-list", "list.json"]
    assert main([*args, "--num-shards", "2"]) == 1
    assert "--num-shards was replaced by --shard-list FILE" in caplog.text
    assert not (tmp_path / "out").exists()


def test_a_full_disk_midway_through_a_shard_is_reported_and_the_rerun_resumes(small_dataset, confident_checkpoint,
                                                                               tmp_path, caplog, monkeypatch):
    """The disk fills up while the second sequence's labels are written: the job fails naming the file, the first
    sequence stays complete, nothing else looks complete, and once there is space the rerun writes only the rest
    and ends with what an undisturbed job writes."""
    assert pseudo_label(confident_checkpoint, small_dataset, tmp_path / "undisturbed", 0, 1) == 0
    files_per_sequence = 2                              # objframe_idx_2_repr_idx.npy and labels.npz
    real_write_bytes, writes = Path.write_bytes, []

    def fills_up(path: Path, data: bytes) -> int:
        if len(writes) == files_per_sequence + 1:
            real_write_bytes(path, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        writes.append(path)
        return real_write_bytes(path, data)

    shard = tmp_path / "full"
    monkeypatch.setattr(Path, "write_bytes", fills_up)
    assert pseudo_label(confident_checkpoint, small_dataset, shard, 0, 1) == 1
    monkeypatch.undo()
    assert "No space left on device" in caplog.text and "labels.npz" in caplog.text
    assert not (shard / "shard.json").exists()
    entries = sorted((shard / "train").iterdir())
    assert len(entries) == 1 and is_complete_sequence(entries[0])     # no half-written or hidden leftovers

    caplog.clear()
    caplog.set_level(logging.INFO)
    assert pseudo_label(confident_checkpoint, small_dataset, shard, 0, 1) == 0
    assert re.search(r"\d+ sequences, 1 already written", caplog.text)
    assert label_files(shard) == label_files(tmp_path / "undisturbed")


def test_sequences_without_any_box_are_logged_once_with_their_count(small_dataset, tmp_path, caplog):
    """SSOD 1/3: two of the three sequences keep no GT, and a model that is sure of nothing predicts no box there."""
    config = RVTConfig.tiny(2, (64, 96), embed_dim=16, dim_head=16)
    model = build_detector(config)
    with torch.no_grad():
        for pred in model.yolox_head.obj_preds:
            pred.bias.fill_(-CONFIDENT_LOGIT * 10)
    save_model_checkpoint(tmp_path / "silent.ckpt", model, config)
    split = make_split(small_dataset.root / "train", "ssod", 1 / 3, 5)
    write_split(tmp_path / "ssod.json", split)
    unlabeled = sorted(name for name, frames in split.labeled_frames.items() if not frames)
    assert len(unlabeled) == 2

    dataset = dataclasses.replace(small_dataset, split=tmp_path / "ssod.json")
    with caplog.at_level(logging.INFO):
        assert pseudo_label(tmp_path / "silent.ckpt", dataset, tmp_path / "shard", 0, 1) == 0
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.message.startswith("2 of 3 sequences have no box") and warning.message.endswith(", ".join(unlabeled))
    manifest = read_shard_manifest(tmp_path / "shard")
    assert sorted(manifest.empty_sequences) == unlabeled
    stats = manifest.extra["stats"]
    assert stats["frames_without_box"] == stats["predicted_frames"] > 0
    (empty_frames,) = [r.message for r in caplog.records if "predicted frames have no box" in r.message]
    assert empty_frames.startswith(f"{stats['predicted_frames']} of {stats['predicted_frames']} predicted frames")
