"""Shard assignment and the shard list, shard manifests, and merging shards into one pseudo dataset."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from builders import write_sequence
from leod_core.data.formats import (PSEUDO_BBOX_DTYPE, FormatError, SequenceLabels, SequencePaths, read_labels,
                                    read_objframe_idx_2_repr_idx)
from leod_core.pseudo.shard_list import ShardList, make_shard_list, read_shard_list, shard_sequences
from leod_core.pseudo.shards import (assign_shards, is_shard_complete, merge_shards, read_shard_manifest,
                                     sequence_lengths, shard_sequence_dir, write_shard_manifest)
from leod_core.pseudo.writer import gt_to_pseudo_rows, pseudo_sequence_files, write_pseudo_sequence

HW = (32, 48)
LENGTHS = {"s0": 14, "s1": 6, "s2": 10, "s3": 8, "s4": 12, "s5": 6, "s6": 9}
EMPTY = {"s5"}              # no box at all: recorded as empty, not written
KEPT = {name: [0] for name in LENGTHS}


# ---------------------------------------------------------------------------------------- assignment
def test_assign_shards_balanced_deterministic_complete():
    rng = np.random.default_rng(0)
    lengths = {f"seq{i:03d}": int(n) for i, n in enumerate(rng.integers(1, 500, 57))}
    for num in (1, 2, 3, 7, 16):
        shards = assign_shards(lengths, num)
        assert len(shards) == num
        names = [n for s in shards for n in s]
        assert sorted(names) == sorted(lengths) and len(names) == len(set(names))
        assert all(s == sorted(s) for s in shards)
        loads = [sum(lengths[n] for n in s) for s in shards]
        assert max(loads) - min(loads) <= max(lengths.values())
        assert assign_shards(dict(reversed(list(lengths.items()))), num) == shards   # order-independent


def test_assign_shards_lpt_example_and_edge_cases():
    assert assign_shards({"a": 5, "b": 4, "c": 3, "d": 3, "e": 3}, 2) == [["a", "d"], ["b", "c", "e"]]
    assert assign_shards({"a": 1, "b": 2}, 4) == [["b"], ["a"], [], []]     # more shards than sequences
    assert assign_shards({}, 2) == [[], []]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="num_shards"):
            assign_shards({"a": 1}, bad)
    with pytest.raises(ValueError, match="length"):
        assign_shards({"a": -1}, 1)


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture
def source(tmp_path) -> Path:
    root = tmp_path / "data"
    for i, (name, n) in enumerate(LENGTHS.items()):
        write_sequence(root / "train" / name, n, [1, 3, 5], seed=i, hw=HW)
    write_sequence(root / "val" / "v0", 4, [1], seed=50, hw=HW)
    write_sequence(root / "test" / "t0", 4, [1], seed=51, hw=HW)
    return root


def pseudo_labels(source: Path, name: str) -> tuple[SequenceLabels, np.ndarray]:
    """Deterministic labels for sequence ``name``: kept GT at frame 0, pseudo rows at every even repr."""
    src = SequencePaths(source / "train" / name)
    gt, src_o2r = read_labels(src.labels), read_objframe_idx_2_repr_idx(src.objframe_idx_2_repr_idx)
    rng = np.random.default_rng(int(name[1:]))
    frames = {int(src_o2r[0]): gt_to_pseudo_rows(gt.frame(0))}
    for r in range(0, LENGTHS[name], 2):
        if r not in frames:
            rows = np.zeros(2, PSEUDO_BBOX_DTYPE)
            rows["x"], rows["y"], rows["w"], rows["h"] = 1.0 + r, 2.0, 10.0, 8.0
            rows["class_id"] = [rng.integers(0, 2), 1024]
            rows["class_confidence"] = rng.uniform(0, 1, 2)
            rows["objectness"] = rng.uniform(0, 1, 2)
            frames[r] = rows
    order = sorted(frames)
    return SequenceLabels.from_frames([frames[r] for r in order]), np.array(order, dtype=np.int64)


def run_shard(shard_dir: Path, source: Path, names: list[str], shard: int, num_shards: int,
              manifest: bool = True) -> None:
    """What a pseudo-label job does: write every non-empty sequence, then the manifest."""
    written, empty = [], []
    for name in names:
        if name in EMPTY:
            empty.append(name)
            continue
        labels, o2r = pseudo_labels(source, name)
        write_pseudo_sequence(shard_sequence_dir(shard_dir, name), source / "train" / name, labels, o2r, False)
        written.append(name)
    if manifest:
        write_shard_manifest(shard_dir, shard, num_shards, written, empty, {"checkpoint": "round0/model.ckpt"})


def run_all(tmp: Path, source: Path, num_shards: int) -> list[Path]:
    dirs = []
    for k, names in enumerate(assign_shards(sequence_lengths(source), num_shards)):
        d = tmp / f"shards{num_shards}" / str(k)
        run_shard(d, source, names, k, num_shards)
        dirs.append(d)
    return dirs


def label_files(root: Path) -> dict[str, bytes]:
    out = {}
    for seq in sorted((root / "train").iterdir()):
        for rel in pseudo_sequence_files(False)[1:]:
            out[f"{seq.name}/{rel}"] = (seq / rel).read_bytes()
    return out


# ------------------------------------------------------------------------------------------- manifests
def test_sequence_lengths(source):
    assert sequence_lengths(source) == LENGTHS
    assert sequence_lengths(source, "val") == {"v0": 4}
    with pytest.raises(ValueError, match="does not exist"):
        sequence_lengths(source, "nope")


def test_manifest_roundtrip_and_completeness(tmp_path, source):
    d = tmp_path / "shard0"
    run_shard(d, source, ["s1", "s5"], 0, 2, manifest=False)
    assert not is_shard_complete(d)                                   # no manifest yet
    with pytest.raises(FormatError, match="manifest is missing"):
        read_shard_manifest(d)
    write_shard_manifest(d, 0, 2, ["s1"], ["s5"], {"note": 1})
    m = read_shard_manifest(d)
    assert (m.shard, m.num_shards, m.empty_sequences, m.extra) == (0, 2, ("s5",), {"note": 1})
    rec = m.sequences["s1"]
    labels = read_labels(shard_sequence_dir(d, "s1") / "labels_v2" / "labels.npz")
    assert rec["boxes"] == len(labels.labels) == rec["gt_rows"] + rec["pseudo_rows"] + rec["ignore_rows"]
    assert rec["frames"] == labels.num_frames and rec["ignore_rows"] > 0 and rec["gt_rows"] > 0
    assert is_shard_complete(d)
    os.rename(shard_sequence_dir(d, "s1"), d / "moved")
    assert not is_shard_complete(d)


def test_manifest_rejects_inconsistent_input(tmp_path, source):
    d = tmp_path / "shard0"
    run_shard(d, source, ["s1", "s2"], 0, 1, manifest=False)
    with pytest.raises(FormatError, match="not a complete pseudo sequence"):
        write_shard_manifest(d, 0, 1, ["s1", "s2", "s3"], [])
    with pytest.raises(ValueError, match="not in the manifest"):
        write_shard_manifest(d, 0, 1, ["s1"], [])
    with pytest.raises(ValueError, match="written and as empty"):
        write_shard_manifest(d, 0, 1, ["s1", "s2"], ["s2"])
    with pytest.raises(FormatError, match="not in"):
        write_shard_manifest(d, 1, 1, ["s1", "s2"], [])
    assert not (d / "shard.json").exists()
    write_shard_manifest(d, 0, 1, ["s1", "s2"], [])
    (d / "shard.json").write_text(json.dumps({"shard": 0}))
    with pytest.raises(FormatError, match="expected keys"):
        read_shard_manifest(d)


# ------------------------------------------------------------------------------------------------ merge
def test_sharded_merge_equals_single_shard(tmp_path, source):
    three, one = run_all(tmp_path, source, 3), run_all(tmp_path, source, 1)
    s3 = merge_shards(three[::-1], tmp_path / "merged3", source, 3)
    s1 = merge_shards(one, tmp_path / "merged1", source, 1)
    files3, files1 = label_files(tmp_path / "merged3"), label_files(tmp_path / "merged1")
    assert files3 == files1 and len(files3) == 2 * (len(LENGTHS) - len(EMPTY))
    for key in ("sequences", "empty_sequences", "frames", "boxes", "gt_rows", "pseudo_rows", "ignore_rows"):
        assert s3[key] == s1[key]
    assert s3["empty_sequences"] == ["s5"] and s3["sequences"] == len(LENGTHS) - 1
    assert s3["boxes"] == s3["gt_rows"] + s3["pseudo_rows"] + s3["ignore_rows"] > 0
    on_disk = json.loads((tmp_path / "merged3" / "pseudo_summary.json").read_text())
    assert on_disk["frames"] == s3["frames"] and on_disk["shards"][0]["extra"] == {"checkpoint": "round0/model.ckpt"}
    root = tmp_path / "merged3"
    assert sorted(p.name for p in (root / "train").iterdir()) == sorted(set(LENGTHS) - EMPTY)
    for split in ("val", "test"):
        assert (root / split).is_symlink() and os.path.samefile(root / split, source / split)
    for name in sorted(set(LENGTHS) - EMPTY):
        ev = SequencePaths(root / "train" / name).ev_repr_file(False)
        assert ev.is_symlink() and os.path.samefile(ev, SequencePaths(source / "train" / name).ev_repr_file(False))
    # shards were copied, not moved
    assert all(is_shard_complete(d) for d in three)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_merge_verifies_with_split(tmp_path, source):
    dirs = run_all(tmp_path, source, 2)
    merge_shards(dirs, tmp_path / "merged", source, 2, kept_gt_frames=KEPT, num_classes=2)
    with pytest.raises(FormatError, match="kept GT frame 1"):
        merge_shards(dirs, tmp_path / "merged_bad", source, 2, kept_gt_frames={n: [0, 1] for n in LENGTHS})
    assert not (tmp_path / "merged_bad").exists()


def test_merge_is_idempotent_and_protects_existing(tmp_path, source):
    dirs = run_all(tmp_path, source, 2)
    out = tmp_path / "merged"
    first = merge_shards(dirs, out, source, 2)
    stamp = {p: p.lstat().st_mtime_ns for p in out.rglob("*")}
    assert merge_shards(dirs, out, source, 2) == first
    assert {p: p.lstat().st_mtime_ns for p in out.rglob("*")} == stamp       # nothing rewritten
    # other inputs: refused without overwrite, swapped in with it
    other = run_all(tmp_path / "again", source, 3)
    with pytest.raises(FileExistsError, match="other shards"):
        merge_shards(other, out, source, 3)
    assert merge_shards(other, out, source, 3, overwrite=True)["num_shards"] == 3
    # a damaged merged dataset is detected
    labels = SequencePaths(out / "train" / "s0").labels
    labels.write_bytes(labels.read_bytes()[:-8])
    with pytest.raises(FormatError, match="damaged"):
        merge_shards(other, out, source, 3)
    merge_shards(other, out, source, 3, overwrite=True)
    # a directory holding foreign data is never replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError):
            merge_shards(other, foreign, source, 3, overwrite=overwrite)
    assert (foreign / "thesis.tex").read_text() == "keep me"
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    merge_shards(other, empty_dir, source, 3)
    assert (empty_dir / "pseudo_summary.json").is_file()


def test_merge_fails_on_missing_shard(tmp_path, source):
    dirs = run_all(tmp_path, source, 3)
    with pytest.raises(ValueError, match=r"shards \[1\] of 3 are missing"):
        merge_shards([dirs[0], dirs[2]], tmp_path / "m", source, 3)
    assert not (tmp_path / "m").exists()


def test_merge_fails_on_incomplete_shard(tmp_path, source):
    dirs = run_all(tmp_path, source, 3)
    (dirs[1] / "shard.json").unlink()
    with pytest.raises(FormatError, match="manifest is missing") as info:
        merge_shards(dirs, tmp_path / "m", source, 3)
    assert info.value.path.parent == dirs[1]
    dirs = run_all(tmp_path / "b", source, 3)
    name = read_shard_manifest(dirs[2]).sequences.keys().__iter__().__next__()
    (shard_sequence_dir(dirs[2], name) / "labels_v2" / "labels.npz").unlink()
    with pytest.raises(FormatError, match=f"shard 2 is incomplete: sequence {name}"):
        merge_shards(dirs, tmp_path / "m", source, 3)
    assert not (tmp_path / "m").exists()


def test_merge_fails_on_changed_shard_file(tmp_path, source):
    dirs = run_all(tmp_path, source, 2)
    name = sorted(read_shard_manifest(dirs[0]).sequences)[0]
    path = shard_sequence_dir(dirs[0], name) / "labels_v2" / "labels.npz"
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="SHA-256"):
        merge_shards(dirs, tmp_path / "m", source, 2)
    assert not (tmp_path / "m").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_merge_fails_on_mismatched_num_shards(tmp_path, source):
    dirs = run_all(tmp_path, source, 3)
    with pytest.raises(FormatError, match="num_shards=3, but the merge expects 2"):
        merge_shards(dirs[:2], tmp_path / "m", source, 2)
    mixed = run_all(tmp_path, source, 2)
    with pytest.raises(FormatError, match="num_shards="):
        merge_shards([mixed[0], dirs[1]], tmp_path / "m", source, 2)


def test_merge_fails_on_overlapping_sequences(tmp_path, source):
    names = sorted(LENGTHS)
    a, b = tmp_path / "0", tmp_path / "1"
    run_shard(a, source, names[:4], 0, 2)
    run_shard(b, source, names[3:], 1, 2)
    with pytest.raises(ValueError, match=f"sequence {names[3]} is in shard 0 and shard 1"):
        merge_shards([a, b], tmp_path / "m", source, 2)
    with pytest.raises(ValueError, match="given twice"):
        merge_shards([a, a], tmp_path / "m", source, 2)


def test_merge_requires_every_source_sequence(tmp_path, source):
    names = sorted(LENGTHS)
    a = tmp_path / "0"
    run_shard(a, source, names[:-1], 0, 1)
    with pytest.raises(ValueError, match=rf"missing from the shards \['{names[-1]}'\]"):
        merge_shards([a], tmp_path / "m", source, 1)
    summary = merge_shards([a], tmp_path / "m", source, 1, require_all_sequences=False)
    assert summary["sequences"] == len(names) - 1 - len(EMPTY & set(names[:-1]))


# ------------------------------------------------------------------------------------------- shard list
def write_listing(path: Path, listing: ShardList | dict) -> Path:
    path.write_text(json.dumps(listing.to_dict() if isinstance(listing, ShardList) else listing))
    return path


def test_the_shard_list_is_the_assignment_capped_at_the_sequences(tmp_path, source):
    lengths = sequence_lengths(source)
    listing = make_shard_list(lengths, 3)
    assert [list(names) for names in listing.shards] == assign_shards(lengths, 3)
    path = write_listing(tmp_path / "list.json", listing)
    assert read_shard_list(path) == listing and read_shard_list(path).path == str(path)
    assert [shard_sequences(path, k) for k in range(3)] == assign_shards(lengths, 3)
    with pytest.raises(ValueError, match=r"shard 3 is not in \[0, 3\) of shard list"):
        shard_sequences(path, 3)
    capped = make_shard_list(lengths, 20)
    assert (capped.num_shards, capped.requested_shards, capped.num_sequences) == (len(LENGTHS), 20, len(LENGTHS))
    assert all(capped.shards)
    with pytest.raises(ValueError, match="num_shards must be an integer >= 1"):
        make_shard_list(lengths, 0)


@pytest.mark.parametrize("payload, message", [
    ({"num_shards": 1, "shards": [["a"]]}, "not a shard list"),
    ({"version": 2, "num_shards": 1, "shards": [["a"]]}, "not a shard list of version 1"),
    ({"version": 1, "num_shards": 2, "shards": [["a"]]}, "needs num_shards >= 1 and that many shards"),
    ({"version": 1, "num_shards": 2, "shards": [["a"], ["a"]]}, "disjoint"),
    ({"version": 1, "num_shards": 1, "shards": [["../a"]]}, "lists of sequence names"),
    ({"version": 1, "num_shards": 1, "num_sequences": 2, "shards": [["a"]]}, "num_sequences 2 but 1"),
])
def test_a_malformed_shard_list_is_rejected_naming_the_file(tmp_path, payload, message):
    path = write_listing(tmp_path / "list.json", payload)
    with pytest.raises(FormatError, match=message) as err:
        read_shard_list(path)
    assert str(path) in str(err.value)


def test_merge_checks_every_shard_against_the_shard_list(tmp_path, source):
    dirs = run_all(tmp_path, source, 3)
    listing = read_shard_list(write_listing(tmp_path / "list.json", make_shard_list(sequence_lengths(source), 3)))
    assert merge_shards(dirs, tmp_path / "merged", source, listing)["num_shards"] == 3
    swapped = ShardList((listing.shards[1], listing.shards[0], listing.shards[2]), 3, "other.json")
    with pytest.raises(FormatError, match="shard 0 holds other sequences than shard list other.json assigns it"):
        merge_shards(dirs, tmp_path / "other", source, swapped)
    with pytest.raises(FormatError, match="num_shards=3, but the merge expects 2"):
        merge_shards(dirs[:2], tmp_path / "two", source, make_shard_list(sequence_lengths(source), 2))
