"""The sequence index (leod_core.data.sequence_index): what it records equals what the tree holds, and a split or
shard list made from it equals one made from the tree."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from builders import write_sequence
from leod_core.data.formats import FormatError, SequencePaths, open_event_repr, read_objframe_idx_2_repr_idx
from leod_core.data.sequence_index import build_sequence_index, read_sequence_index, write_sequence_index
from leod_core.data.splits import make_split, split_from_index, write_split
from leod_core.pseudo.shard_list import split_sequence_lengths, write_shard_list

#: name -> (representations, labeled representation indices, boxes per labeled frame; 0: an unlabeled recording)
SEQUENCES = {"a_long": (40, [9, 14, 19, 24, 29, 34], 2), "b_short": (12, [4, 8], 1),
             "c_unlabeled": (30, [9, 19, 29], 0), "d_mid": (25, [0, 5, 10, 15, 20], 3)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("indexed")
    for seed, (name, (num_reprs, labeled, boxes)) in enumerate(SEQUENCES.items()):
        write_sequence(root / "train" / name, num_reprs, labeled, seed, hw=(16, 24), boxes_per_frame=boxes)
    write_sequence(root / "train" / "e_ds2", 18, [6, 12], 9, hw=(8, 12), ds2=True)
    return root


def test_index_records_what_the_tree_holds(data_dir):
    index = build_sequence_index(data_dir / "train")
    assert index.names == sorted(SEQUENCES) + ["e_ds2"]
    assert index.unlabeled == {"c_unlabeled"}
    for name in SEQUENCES:
        paths = SequencePaths(data_dir / "train" / name)
        with open_event_repr(paths.ev_repr_file(False)) as h5:
            assert index.sequences[name].num_reprs == h5["data"].shape[0]
        assert index.sequences[name].num_reprs_ds2 is None
        np.testing.assert_array_equal(index.sequences[name].objframe_idx_2_repr_idx,
                                      read_objframe_idx_2_repr_idx(paths.objframe_idx_2_repr_idx))
    entry = index.sequences["e_ds2"]
    assert (entry.num_reprs, entry.num_reprs_ds2) == (None, 18)


def test_lengths_name_the_sequences_without_the_file_read(data_dir):
    index = build_sequence_index(data_dir / "train")
    with pytest.raises(ValueError, match=r"\['e_ds2'\] have no full-resolution event representations"):
        index.lengths(downsampled_by_2=False)
    with pytest.raises(ValueError, match=r"\['a_long', 'b_short', 'c_unlabeled', 'd_mid'\] have no down-sampled"):
        index.lengths(downsampled_by_2=True)


def test_hidden_directories_are_not_sequences(data_dir, tmp_path):
    tree = tmp_path / "data"
    shutil.copytree(data_dir, tree)
    shutil.copytree(tree / "train" / "a_long", tree / "train" / ".a_long.partial")
    assert ".a_long.partial" not in build_sequence_index(tree / "train").sequences


def test_written_index_reads_back_equal(data_dir, tmp_path):
    written = write_sequence_index(data_dir / "train", tmp_path / "index.json")
    read = read_sequence_index(tmp_path / "index.json")
    assert read.split == "train" and read.names == written.names and read.unlabeled == written.unlabeled
    for name in written.names:
        assert read.sequences[name].length(False) == written.sequences[name].length(False)
        assert read.sequences[name].length(True) == written.sequences[name].length(True)
        np.testing.assert_array_equal(read.sequences[name].objframe_idx_2_repr_idx,
                                      written.sequences[name].objframe_idx_2_repr_idx)


@pytest.mark.parametrize("setting,ratio,offset", [("wsod", 0.5, 1), ("ssod", 0.5, 0), ("ssod", 0.34, 1),
                                                  ("full", 1.0, 0)])
def test_split_from_the_index_equals_the_split_from_the_tree(data_dir, tmp_path, setting, ratio, offset):
    write_sequence_index(data_dir / "train", tmp_path / "index.json")
    from_index = split_from_index(read_sequence_index(tmp_path / "index.json"), setting, ratio, 5, offset)
    from_tree = make_split(data_dir / "train", setting, ratio, 5, offset)
    assert from_index == from_tree
    assert from_index.unlabeled_sequences == ("c_unlabeled",)


def test_shard_list_from_the_index_equals_the_shard_list_from_the_tree(data_dir, tmp_path):
    tree = tmp_path / "data"
    shutil.copytree(data_dir, tree)
    shutil.rmtree(tree / "train" / "e_ds2")
    split = tmp_path / "split.json"
    write_split(split, make_split(tree / "train", "full", 1.0, 5))
    index = tmp_path / "index.json"
    write_sequence_index(tree / "train", index)
    assert split_sequence_lengths(tree, split, False, index) == {name: n for name, (n, _, _) in SEQUENCES.items()}
    from_index = write_shard_list(tree, split, 2, False, tmp_path / "a.json", index)
    from_tree = write_shard_list(tree, split, 2, False, tmp_path / "b.json")
    assert from_index == from_tree


def test_an_index_without_a_sequence_of_the_split_is_refused(data_dir, tmp_path):
    split = tmp_path / "split.json"
    write_split(split, make_split(data_dir / "train", "full", 1.0, 5))
    index = tmp_path / "index.json"
    payload = json.loads(build_sequence_index(data_dir / "train").to_json())
    del payload["sequences"]["d_mid"], payload["sequences"]["e_ds2"]
    index.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"sequences \['d_mid', 'e_ds2'\] are not in .*index\.json"):
        split_sequence_lengths(data_dir, split, False, index)


@pytest.mark.parametrize("name", ["", ".hidden", "a/b"])
def test_an_index_with_a_bad_sequence_name_is_refused(data_dir, tmp_path, name):
    payload = json.loads(build_sequence_index(data_dir / "train").to_json())
    payload["sequences"][name] = payload["sequences"]["a_long"]
    (tmp_path / "index.json").write_text(json.dumps(payload))
    with pytest.raises(FormatError, match="is not a sequence directory name"):
        read_sequence_index(tmp_path / "index.json")
