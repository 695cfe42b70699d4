"""Pseudo-label sequences on disk: layout, read-back, GT preservation, LEOD's ``verify_data``, atomicity."""
from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from builders import write_sequence
from leod_core.data.formats import (IGNORE_CLASS_ID, PSEUDO_BBOX_DTYPE, FormatError, SequenceLabels, SequencePaths,
                                    read_labels, read_objframe_idx_2_repr_idx, same_fields)
from leod_core.pseudo import writer
from leod_core.pseudo.writer import (gt_to_pseudo_rows, is_complete_sequence, labels_npz_bytes, link_eval_splits,
                                     link_path, verify_pseudo_sequence, write_pseudo_sequence)

HW = (32, 48)
NUM_REPRS = 12
LABELED = [1, 3, 5, 7, 9]     # source GT at these representations
KEPT = [0, 3]                 # objframe indices whose GT is kept (representations 1 and 7)
NUM_CLASSES = 2


def pseudo_rows(rng: np.random.Generator, count: int, ignore: int = 0) -> np.ndarray:
    rows = np.zeros(count, dtype=PSEUDO_BBOX_DTYPE)
    rows["w"] = rng.uniform(5, 20, count)
    rows["h"] = rng.uniform(5, 15, count)
    rows["x"] = rng.uniform(0, HW[1] - 21, count)
    rows["y"] = rng.uniform(0, HW[0] - 16, count)
    rows["class_id"] = rng.integers(0, NUM_CLASSES, count)
    rows["class_id"][:ignore] = IGNORE_CLASS_ID
    rows["class_confidence"] = rng.uniform(0, 1, count)
    rows["objectness"] = rng.uniform(0, 1, count)
    return rows


def make_pseudo(source_dir: Path, kept: list[int], seed: int = 0,
                pseudo_reprs: tuple[int, ...] = (0, 2, 3, 4, 6, 10)) -> tuple[SequenceLabels, np.ndarray]:
    """Labels as the labeller produces them: kept GT frames pass through, pseudo boxes elsewhere."""
    rng = np.random.default_rng(seed)
    src = SequencePaths(source_dir)
    gt = read_labels(src.labels)
    src_o2r = read_objframe_idx_2_repr_idx(src.objframe_idx_2_repr_idx)
    frames = {int(src_o2r[k]): gt_to_pseudo_rows(gt.frame(k)) for k in kept}
    for r in pseudo_reprs:
        if r not in frames:
            frames[r] = pseudo_rows(rng, 1 + r % 3, ignore=r % 2)
    order = sorted(frames)
    return SequenceLabels.from_frames([frames[r] for r in order]), np.asarray(order, dtype=np.int64)


@pytest.fixture
def source(tmp_path) -> Path:
    seq = tmp_path / "data" / "train" / "seq_a"
    write_sequence(seq, NUM_REPRS, LABELED, seed=1, hw=HW)
    return seq


@pytest.fixture
def written(tmp_path, source) -> Path:
    labels, o2r = make_pseudo(source, KEPT)
    out = tmp_path / "pseudo" / "train" / "seq_a"
    assert write_pseudo_sequence(out, source, labels, o2r, downsampled_by_2=False) == "written"
    return out


# ------------------------------------------------------------------------------------------ write/read
def test_written_sequence_reads_back(written, source):
    out = SequencePaths(written)
    labels, o2r = make_pseudo(source, KEPT)
    # formats readers
    got_o2r = read_objframe_idx_2_repr_idx(out.objframe_idx_2_repr_idx, NUM_REPRS)
    np.testing.assert_array_equal(got_o2r, o2r)
    got = read_labels(out.labels)
    assert got.labels.dtype == PSEUDO_BBOX_DTYPE and got.labels.dtype.itemsize == 40
    for name in PSEUDO_BBOX_DTYPE.names:
        np.testing.assert_array_equal(got.labels[name], labels.labels[name])
    np.testing.assert_array_equal(got.objframe_idx_2_label_idx, labels.objframe_idx_2_label_idx)
    # plain numpy / h5py
    with np.load(out.labels, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["labels", "objframe_idx_2_label_idx"]
        assert same_fields(npz["labels"].dtype, PSEUDO_BBOX_DTYPE)
        assert npz["objframe_idx_2_label_idx"].dtype == np.int64
    raw = np.load(out.objframe_idx_2_repr_idx)
    assert raw.dtype == np.int64 and np.all(np.diff(raw) > 0)
    ev = out.ev_repr_file(False)
    assert ev.is_symlink() and not os.path.isabs(os.readlink(ev))
    assert os.path.samefile(ev, SequencePaths(source).ev_repr_file(False))
    with h5py.File(ev, "r") as h5:
        assert h5["data"].shape == (NUM_REPRS, 20, *HW)
    # §9: no timestamps written; nothing else in the directory
    assert sorted(str(p.relative_to(written)) for p in written.rglob("*") if not p.is_dir()) == sorted(
        str(p) for p in writer.pseudo_sequence_files(False))
    assert is_complete_sequence(written)
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]


def test_gt_rows_preserved_and_verification_passes(written, source):
    gt = read_labels(SequencePaths(source).labels)
    got = read_labels(SequencePaths(written).labels)
    o2r = read_objframe_idx_2_repr_idx(SequencePaths(written).objframe_idx_2_repr_idx)
    for k in KEPT:
        rows = got.frame(int(np.searchsorted(o2r, LABELED[k])))
        src = gt.frame(k)
        assert np.all(rows["t"] == src["t"].astype(np.int64)) and np.all(rows["t"] > 0)
        for name in ("x", "y", "w", "h", "class_id", "class_confidence"):
            np.testing.assert_array_equal(rows[name], src[name])
        np.testing.assert_array_equal(rows["objectness"], src["class_confidence"])
    verify_pseudo_sequence(written, source, KEPT, num_classes=NUM_CLASSES)


def test_gt_to_pseudo_rows(source):
    gt = read_labels(SequencePaths(source).labels).labels
    rows = gt_to_pseudo_rows(gt)
    assert rows.dtype == PSEUDO_BBOX_DTYPE
    np.testing.assert_array_equal(rows["objectness"], gt["class_confidence"])
    bad = gt.copy()
    bad["t"][0] = 0
    with pytest.raises(ValueError, match="t > 0"):
        gt_to_pseudo_rows(bad)


def test_downsampled_links_ds2_file(tmp_path):
    src = tmp_path / "data" / "train" / "s"
    write_sequence(src, 6, [2, 4], seed=3, hw=HW, ds2=True)
    labels = SequenceLabels.from_frames([gt_to_pseudo_rows(read_labels(SequencePaths(src).labels).frame(0))])
    out = tmp_path / "p" / "train" / "s"
    write_pseudo_sequence(out, src, labels, np.array([2]), downsampled_by_2=True)
    assert SequencePaths(out).ev_repr_file(True).is_symlink()
    verify_pseudo_sequence(out, src, [0])


# ----------------------------------------------------------------------------------- existing / empty
def test_rewrite_identical_is_unchanged_and_different_needs_overwrite(written, source):
    labels, o2r = make_pseudo(source, KEPT)
    before = {p: p.stat().st_mtime_ns for p in written.rglob("*")}
    assert write_pseudo_sequence(written, source, labels, o2r, False) == "unchanged"
    assert {p: p.stat().st_mtime_ns for p in written.rglob("*")} == before
    other, other_o2r = make_pseudo(source, KEPT, seed=5)
    with pytest.raises(FileExistsError, match="different content"):
        write_pseudo_sequence(written, source, other, other_o2r, False)
    assert write_pseudo_sequence(written, source, other, other_o2r, False, overwrite=True) == "replaced"
    assert SequencePaths(written).labels.read_bytes() == labels_npz_bytes(other)
    assert not [p for p in written.parent.iterdir() if p.name.startswith(".")]


def test_refuses_to_replace_foreign_directory(tmp_path, source):
    out = tmp_path / "pseudo" / "train" / "seq_a"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    labels, o2r = make_pseudo(source, KEPT)
    with pytest.raises(FileExistsError, match="not a pseudo-label sequence"):
        write_pseudo_sequence(out, source, labels, o2r, False, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_empty_sequence_is_not_written(tmp_path, source):
    empty = SequenceLabels(np.zeros(0, PSEUDO_BBOX_DTYPE), np.zeros(0, np.int64))
    out = tmp_path / "pseudo" / "train" / "seq_a"
    with pytest.raises(ValueError, match="no box"):
        write_pseudo_sequence(out, source, empty, np.zeros(0, np.int64), False)
    assert not out.exists()


@pytest.mark.parametrize("problem", ["unsorted", "out_of_range", "count", "empty_frame", "score", "prophesee"])
def test_write_rejects_bad_input(tmp_path, source, problem):
    labels, o2r = make_pseudo(source, KEPT)
    rows, starts = labels.labels.copy(), labels.objframe_idx_2_label_idx.copy()
    if problem == "unsorted":
        o2r = o2r[::-1].copy()
    elif problem == "out_of_range":
        o2r[-1] = NUM_REPRS
    elif problem == "count":
        o2r = o2r[:-1]
    elif problem == "empty_frame":
        starts[1] = starts[2]
    elif problem == "score":
        rows["objectness"][0] = 1.5
    elif problem == "prophesee":
        rows = read_labels(SequencePaths(source).labels).labels
        starts = np.arange(len(o2r), dtype=np.int64)
    out = tmp_path / "pseudo" / "train" / "seq_a"
    with pytest.raises(FormatError):
        write_pseudo_sequence(out, source, SequenceLabels(rows, starts), o2r, False)
    assert not out.exists()


def test_killed_write_leaves_no_sequence(tmp_path, source, monkeypatch):
    labels, o2r = make_pseudo(source, KEPT)
    out = tmp_path / "pseudo" / "train" / "seq_a"

    def die(link, target):
        raise KeyboardInterrupt("killed")   # after the label files are written, before the rename

    monkeypatch.setattr(writer, "link_path", die)
    with pytest.raises(KeyboardInterrupt):
        write_pseudo_sequence(out, source, labels, o2r, False)
    assert not os.path.lexists(out)
    assert list(out.parent.iterdir()) == []   # temporary directory removed too
    # a temporary directory left by a SIGKILL never looks like a complete sequence
    monkeypatch.undo()
    write_pseudo_sequence(out, source, labels, o2r, False)
    leftover = out.parent / ".seq_b.tmp-dead"
    shutil.copytree(out, leftover, symlinks=True)
    (leftover / "labels_v2" / "labels.npz").unlink()
    assert not is_complete_sequence(leftover) and is_complete_sequence(out)


def test_labels_npz_is_byte_deterministic(source):
    labels, _ = make_pseudo(source, KEPT)
    a = labels_npz_bytes(labels)
    packed = SequenceLabels(labels.labels[list(PSEUDO_BBOX_DTYPE.names)].copy(), labels.objframe_idx_2_label_idx)
    assert labels_npz_bytes(packed) == a
    with zipfile.ZipFile(io.BytesIO(a)) as zf:
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in zf.infolist())


# --------------------------------------------------------------------------------------- verification
def _corrupt_labels(seq_dir: Path, edit) -> None:
    path = SequencePaths(seq_dir).labels
    with np.load(path) as npz:
        rows, starts = npz["labels"].copy(), npz["objframe_idx_2_label_idx"].copy()
    o2r_path = SequencePaths(seq_dir).objframe_idx_2_repr_idx
    o2r = np.load(o2r_path)
    rows, starts, o2r = edit(rows, starts, o2r)
    path.unlink()
    np.savez(path, labels=rows, objframe_idx_2_label_idx=starts)
    o2r_path.unlink()
    np.save(o2r_path, o2r)


def _frame_of(o2r, starts, rows, repr_idx):
    i = int(np.searchsorted(o2r, repr_idx))
    end = starts[i + 1] if i + 1 < len(starts) else len(rows)
    return slice(int(starts[i]), int(end))


def _unsorted(rows, starts, o2r):
    o2r = o2r.copy()
    o2r[[0, 1]] = o2r[[1, 0]]
    return rows, starts, o2r


def _past_end(rows, starts, o2r):
    o2r = o2r.copy()
    o2r[-1] = NUM_REPRS + 3
    return rows, starts, o2r


def _changed_gt(rows, starts, o2r):
    rows["x"][_frame_of(o2r, starts, rows, LABELED[KEPT[1]])] += 0.5
    return rows, starts, o2r


def _changed_gt_t(rows, starts, o2r):
    rows["t"][_frame_of(o2r, starts, rows, LABELED[KEPT[0]])] += 1
    return rows, starts, o2r


def _score(rows, starts, o2r):
    rows["class_confidence"][-1] = 1.5
    return rows, starts, o2r


def _class7(rows, starts, o2r):
    rows["class_id"][-1] = 7
    return rows, starts, o2r


def _missing_gt(rows, starts, o2r):
    s = _frame_of(o2r, starts, rows, LABELED[KEPT[1]])
    i = int(np.searchsorted(o2r, LABELED[KEPT[1]]))
    n = s.stop - s.start
    rows = np.delete(rows, np.arange(s.start, s.stop))
    starts = np.delete(starts, i)
    starts[i:] -= n
    return rows, starts, np.delete(o2r, i)


def _gt_like(rows, starts, o2r):
    rows["t"][_frame_of(o2r, starts, rows, 4)] = 250_000
    return rows, starts, o2r


CORRUPTIONS = {
    "unsorted": (_unsorted, "objframe_idx_2_repr_idx.npy", "not sorted"),
    "past_end": (_past_end, "objframe_idx_2_repr_idx.npy", "past the"),
    "changed_gt": (_changed_gt, "labels.npz", "changed: field x"),
    "changed_gt_t": (_changed_gt_t, "labels.npz", "changed: field t"),
    "score": (_score, "labels.npz", "class_confidence 1.5 outside"),
    "class7": (_class7, "labels.npz", "class id 7 outside"),
    "missing_gt": (_missing_gt, "objframe_idx_2_repr_idx.npy", "kept GT frame 3 .* is missing"),
    "gt_like": (_gt_like, "labels.npz", "representation 4 is not a kept GT frame"),
}


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_verify_detects_corruption(written, source, name):
    edit, file_name, message = CORRUPTIONS[name]
    _corrupt_labels(written, edit)
    with pytest.raises(FormatError, match=message) as info:
        verify_pseudo_sequence(written, source, KEPT, num_classes=NUM_CLASSES)
    assert info.value.path.name == file_name


def test_verify_checks_event_link(written, source, tmp_path):
    ev = SequencePaths(written).ev_repr_file(False)
    ev.unlink()
    other = tmp_path / "data" / "train" / "seq_other"
    write_sequence(other, NUM_REPRS, LABELED, seed=9, hw=HW)
    link_path(ev, SequencePaths(other).ev_repr_file(False))
    with pytest.raises(FormatError, match="does not resolve"):
        verify_pseudo_sequence(written, source, KEPT)


# ----------------------------------------------------------------------------------------------- links
def test_relative_links_survive_moving_the_tree(written, source, tmp_path):
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.move(str(tmp_path), str(moved))
    try:
        new_seq = moved / "pseudo" / "train" / "seq_a"
        verify_pseudo_sequence(new_seq, moved / "data" / "train" / "seq_a", KEPT, num_classes=NUM_CLASSES)
    finally:
        shutil.move(str(moved), str(tmp_path))


def test_link_through_symlinked_data_dir(tmp_path):
    real = tmp_path / "elsewhere" / "gen1"
    write_sequence(real / "train" / "s", 4, [1], seed=2, hw=HW)
    results = tmp_path / "results"
    (results / "data").mkdir(parents=True)
    (results / "data" / "gen1").symlink_to(real)
    link_dir = results / "gen1" / "wsod" / "x"
    link_dir.mkdir(parents=True)
    target = results / "data" / "gen1" / "train" / "s" / writer.event_file_relpath(False)
    link_path(link_dir / "ev.h5", target)
    text = os.readlink(link_dir / "ev.h5")
    assert text.startswith("../") and "data/gen1/train" in text   # traverses the data symlink, relative
    assert os.path.samefile(link_dir / "ev.h5", target)


def test_link_eval_splits(tmp_path):
    src = tmp_path / "data"
    for split in ("val", "test"):
        (src / split).mkdir(parents=True)
    out = tmp_path / "pseudo"
    assert link_eval_splits(out, src) == ["val", "test"]
    assert link_eval_splits(out, src) == ["val", "test"]     # idempotent
    assert os.path.samefile(out / "test", src / "test") and (out / "val").is_symlink()
    other = tmp_path / "other"
    (other / "val").mkdir(parents=True)
    (other / "test").mkdir()
    link_eval_splits(out, other)                              # a stale link is replaced
    assert os.path.samefile(out / "val", other / "val")
    shutil.rmtree(other)
    (out / "val").unlink()
    (out / "val").mkdir()
    with pytest.raises(FileExistsError, match="not a symlink"):
        link_eval_splits(out, src)
