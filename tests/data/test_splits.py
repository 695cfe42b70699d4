"""Tests of leod_core.data.splits: LEOD's WSOD / SSOD label sub-sampling and the split JSON files."""
from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest

from leod_core.cli import main as leod
from leod_core.data.formats import FormatError, SequencePaths, write_npy
from leod_core.data.splits import (
    SETTINGS, LabelSplit, make_split, num_offsets, parse_ratio, read_split, ssod_kept_sequences, ssod_step,
    wsod_labeled_frames, wsod_stride, write_split,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "splits"
SEQ_LEN = 21
#: repr index 2*i + 4 for 250 frames: the first frame with 21 reprs of history is i = 8 (repr 20).
LONG_REPRS = np.arange(250, dtype=np.int64) * 2 + 4
#: 5 frames, reprs 0..4: never 21 reprs of history (LEOD keeps the unshifted frames).
SHORT_REPRS = np.arange(5, dtype=np.int64)
#: 25 frames, repr == i: offset 20, so shifted indices past 24 are dropped.
EDGE_REPRS = np.arange(25, dtype=np.int64)


# ------------------------------------------------------------------------------------------ parse_ratio
@pytest.mark.parametrize("value, expected", [(0.01, 0.01), ("0.01", 0.01), ("1", 1.0), (1, 1.0), (0.5, 0.5)])
def test_parse_ratio_accepts(value, expected):
    assert parse_ratio(value) == expected


@pytest.mark.parametrize("value, message", [
    (0, r"ratio 0 is not in \(0, 1\]"),
    (1.5, r"ratio 1.5 is not in \(0, 1\]"),
    ("1.5", r"ratio '1.5' is not in \(0, 1\]"),
    (-0.1, r"ratio -0.1 is not in \(0, 1\]"),
    ("nan", r"ratio 'nan' is not in \(0, 1\]"),
    ("inf", r"ratio 'inf' is not in \(0, 1\]"),
    ("abc", r"ratio 'abc' is not a number"),
    (None, r"ratio None is not a number"),
    (True, r"ratio True is not a number"),
])
def test_parse_ratio_rejects(value, message):
    with pytest.raises(ValueError, match=message):
        parse_ratio(value)


# ------------------------------------------------------------------------------------------------- WSOD
@pytest.mark.parametrize("ratio, stride", [(0.01, 100), (0.02, 50), (0.05, 20), (0.1, 10), ("0.05", 20)])
def test_wsod_published_strides(ratio, stride):
    assert wsod_stride(ratio) == stride
    reprs = np.arange(1000, dtype=np.int64) + SEQ_LEN  # every frame usable: no offset
    assert wsod_labeled_frames(reprs, parse_ratio(ratio), SEQ_LEN) == list(range(0, 1000, stride))


def test_wsod_stride_uses_bankers_rounding():
    assert wsod_stride(0.4) == 2  # round(2.5) == 2, as LEOD's Python round
    assert wsod_stride(0.3) == 3
    assert wsod_stride(1.0) == 1


def test_wsod_shifts_by_first_frame_with_enough_history():
    assert wsod_labeled_frames(LONG_REPRS, 0.01, SEQ_LEN) == [8, 108, 208]
    assert wsod_labeled_frames(LONG_REPRS, 0.02, SEQ_LEN) == [8, 58, 108, 158, 208]
    assert wsod_labeled_frames(LONG_REPRS, 0.1, SEQ_LEN) == list(range(8, 250, 10))


def test_wsod_history_boundary_is_inclusive():
    # repr 20 - 21 + 1 == 0 is enough history: offset 1.
    reprs = np.array([10, 20, 30, 40], dtype=np.int64)
    assert wsod_labeled_frames(reprs, 0.5, SEQ_LEN) == [1, 3]


def test_wsod_drops_indices_shifted_past_the_end():
    # kept [0, 10, 20] + offset 20 -> [20, 30, 40]; only 20 < 25 remains.
    assert wsod_labeled_frames(EDGE_REPRS, 0.1, SEQ_LEN) == [20]


def test_wsod_sequence_without_enough_history_keeps_its_unshifted_frames():
    # LEOD: start_idx_offset is None, so all_objframe_idx[::skip] (then pickled) is not shifted.
    assert wsod_labeled_frames(SHORT_REPRS, 0.01, SEQ_LEN) == [0]
    assert wsod_labeled_frames(SHORT_REPRS, 0.5, SEQ_LEN) == [0, 2, 4]
    assert wsod_labeled_frames(SHORT_REPRS, 0.01, SEQ_LEN, offset=3) == [3]


def test_wsod_offsets_select_disjoint_shifted_frames():
    splits = [wsod_labeled_frames(LONG_REPRS, 0.02, SEQ_LEN, offset) for offset in range(3)]
    assert splits[0] == [8, 58, 108, 158, 208]
    assert splits[1] == [9, 59, 109, 159, 209] and splits[2] == [10, 60, 110, 160, 210]
    assert len(set().union(*splits)) == sum(len(frames) for frames in splits)     # pairwise disjoint


def test_wsod_offset_past_the_end_keeps_the_last_frame_before_the_shift():
    # LEOD's _subsample_labels keeps the last labeled frame when the slice is empty; the shift may drop it.
    assert wsod_labeled_frames(np.array([30, 40], dtype=np.int64), 0.1, SEQ_LEN, offset=5) == [1]
    assert wsod_labeled_frames(EDGE_REPRS, 0.01, SEQ_LEN, offset=30) == []


@pytest.mark.parametrize("offset, ratio, message", [
    (100, 0.01, r"split offset 100 is not in 0..99"), (-1, 0.1, "split offset -1 is not in 0..9"),
    (1, 1.0, "split offset 1 is not in 0..0"), (1.0, 0.1, "split offset 1.0 is not in"),
    (True, 0.1, "split offset True is not in"),
])
def test_wsod_offset_must_be_below_the_stride(offset, ratio, message):
    with pytest.raises(ValueError, match=message):
        wsod_labeled_frames(LONG_REPRS, ratio, SEQ_LEN, offset)


def test_wsod_ratio_one_keeps_every_frame_without_offset():
    assert wsod_labeled_frames(LONG_REPRS, 1.0, SEQ_LEN) == list(range(250))
    assert wsod_labeled_frames(SHORT_REPRS, 1.0, SEQ_LEN) == list(range(5))


# ------------------------------------------------------------------------------------------------- SSOD
@pytest.mark.parametrize("num_sequences, ratio, num_kept, step", [
    (1458, 0.01, 15, 97), (1458, 0.02, 29, 50), (1458, 0.05, 73, 19), (1458, 0.1, 146, 9),
    (681, 0.01, 7, 97), (681, 0.02, 14, 48), (681, 0.05, 34, 20), (681, 0.1, 68, 10),
])
def test_ssod_published_counts(num_sequences, ratio, num_kept, step):
    names = [f"seq_{i:05d}" for i in range(num_sequences)]
    shuffled = random.Random(0).sample(names, len(names))
    assert ssod_step(num_sequences, ratio) == (num_kept, step)
    kept = ssod_kept_sequences(shuffled, ratio)
    assert kept == names[::step][:num_kept]
    assert len(kept) == num_kept


@pytest.mark.parametrize("num_sequences, ratio", [(1458, 0.01), (681, 0.02), (100, 0.1), (10, 0.34)])
def test_ssod_offsets_keep_disjoint_sequences_of_the_same_count(num_sequences, ratio):
    names = [f"seq_{i:05d}" for i in range(num_sequences)]
    num_kept, step = ssod_step(num_sequences, ratio)
    kept = [ssod_kept_sequences(names, ratio, offset) for offset in (0, 1, 2, step - 1)]
    assert kept[0] == ssod_kept_sequences(names, ratio)
    for offset, names_kept in zip((0, 1, 2, step - 1), kept):
        assert names_kept == names[offset::step][:num_kept] and len(names_kept) == num_kept
    assert len(set().union(*kept)) == len({0, 1, 2, step - 1}) * num_kept    # distinct offsets: disjoint
    with pytest.raises(ValueError, match=f"split offset {step} is not in 0..{step - 1}"):
        ssod_kept_sequences(names, ratio, step)


def test_ssod_ratio_one_keeps_all():
    assert ssod_kept_sequences(["b", "a", "c"], 1.0) == ["a", "b", "c"]


def test_ssod_ratio_too_small_for_the_sequences():
    with pytest.raises(ValueError, match="too small for 40 sequences"):
        ssod_kept_sequences([f"s{i}" for i in range(40)], 0.01)


# ------------------------------------------------------------------------------------------- make_split
@pytest.fixture
def train_dir(tmp_path):
    """A preprocessed ``train/`` tree holding only ``objframe_idx_2_repr_idx.npy`` files (and a stray file)."""
    root = tmp_path / "train"
    for name, reprs in (("c_edge", EDGE_REPRS), ("a_long", LONG_REPRS), ("b_short", SHORT_REPRS)):
        write_npy(SequencePaths(root / name).objframe_idx_2_repr_idx, reprs)
    (root / "notes.txt").write_text("not a sequence")
    return root


def test_make_split_wsod(train_dir, caplog):
    with caplog.at_level(logging.INFO, logger="leod_core.data.splits"):
        split = make_split(train_dir, "wsod", 0.01, SEQ_LEN)
    assert split.labeled_frames == {"a_long": [8, 108, 208], "b_short": [0], "c_edge": [20]}
    assert (split.num_sequences, split.num_labeled_sequences, split.num_labeled_frames) == (3, 3, 5)
    assert split.summary()["stride"] == 100 and split.offset == 0
    assert any("b_short" in r.message and "unshifted" in r.message and r.levelno == logging.WARNING
               for r in caplog.records)
    assert any("num_labeled_frames 5" in r.message and r.levelno == logging.INFO for r in caplog.records)


def test_make_split_wsod_offsets(train_dir, caplog):
    split = make_split(train_dir, "wsod", 0.1, SEQ_LEN, offset=2)
    assert split.offset == 2 and split.summary()["offset"] == 2
    assert split.labeled_frames == {"a_long": list(range(10, 250, 10)), "b_short": [2], "c_edge": [22]}
    with caplog.at_level(logging.WARNING, logger="leod_core.data.splits"):
        split = make_split(train_dir, "wsod", 0.1, SEQ_LEN, offset=9)
    assert split.labeled_frames["c_edge"] == [] and split.labeled_frames["b_short"] == [4]
    assert any("c_edge keeps no label" in r.message for r in caplog.records)
    with pytest.raises(ValueError, match=r"split offset 10 is not in 0..9 \(the number of wsod label splits"):
        make_split(train_dir, "wsod", 0.1, SEQ_LEN, offset=10)


def test_make_split_ssod(train_dir):
    split = make_split(train_dir, "ssod", 0.34, SEQ_LEN)  # num = round(1.02) = 1, k = 3
    assert split.labeled_frames == {"a_long": list(range(250)), "b_short": [], "c_edge": []}
    assert split.summary() == {"num_sequences": 3, "num_labeled_sequences": 1, "num_labeled_frames": 250,
                               "offset": 0, "k": 3}
    assert make_split(train_dir, "ssod", 0.34, SEQ_LEN, 2).labeled_frames == {
        "a_long": [], "b_short": [], "c_edge": list(range(25))}
    assert num_offsets("ssod", 0.34, 3) == 3
    with pytest.raises(ValueError, match=r"split offset 3 is not in 0..2"):
        make_split(train_dir, "ssod", 0.34, SEQ_LEN, 3)


def test_make_split_full(train_dir):
    split = make_split(train_dir, "full", 1.0, SEQ_LEN)
    assert split.labeled_frames == {"a_long": list(range(250)), "b_short": list(range(5)),
                                    "c_edge": list(range(25))}
    with pytest.raises(ValueError, match="needs ratio 1"):
        make_split(train_dir, "full", 0.5, SEQ_LEN)
    with pytest.raises(ValueError, match=r"split offset 1 is not in 0..0 \(the number of full label splits"):
        make_split(train_dir, "full", 1.0, SEQ_LEN, 1)


def test_make_split_rejects_bad_arguments(train_dir, tmp_path):
    with pytest.raises(ValueError, match="'semi'"):
        make_split(train_dir, "semi", 0.1, SEQ_LEN)
    with pytest.raises(ValueError, match=r"not in \(0, 1\]"):
        make_split(train_dir, "wsod", 0, SEQ_LEN)
    empty = tmp_path / "empty_train"
    empty.mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        make_split(empty, "wsod", 0.1, SEQ_LEN)
    with pytest.raises(ValueError, match="too small for 3 sequences"):
        make_split(train_dir, "ssod", 0.1, SEQ_LEN)


def test_make_split_reports_a_bad_sequence(train_dir):
    bad = SequencePaths(train_dir / "d_bad").objframe_idx_2_repr_idx
    write_npy(bad, np.array([5, 3], dtype=np.int64))
    with pytest.raises(FormatError, match="d_bad"):
        make_split(train_dir, "wsod", 0.1, SEQ_LEN)


# ------------------------------------------------------------------------------------------------- JSON
@pytest.mark.parametrize("setting, ratio, offset", [("wsod", 0.01, 0), ("wsod", 0.01, 7), ("ssod", 0.34, 1),
                                                    ("full", 1.0, 0)])
def test_split_round_trip(train_dir, tmp_path, setting, ratio, offset):
    split = make_split(train_dir, setting, ratio, SEQ_LEN, offset)
    path = tmp_path / "splits" / f"{setting}.json"
    write_split(path, split)
    assert read_split(path) == split


def test_split_json_keeps_odd_sequence_names(tmp_path):
    split = LabelSplit("full", 1.0, SEQ_LEN, {"odd [ 1,\n 2 ]": [0, 1], "plain": []})
    path = tmp_path / "odd.json"
    write_split(path, split)
    assert read_split(path) == split
    assert SETTINGS == ("wsod", "ssod", "full")


def test_split_json_layout(train_dir):
    text = make_split(train_dir, "wsod", 0.01, SEQ_LEN, 1).to_json()
    assert '    "a_long": [9, 109, 209],' in text.splitlines()
    payload = json.loads(text)
    assert payload["version"] == 3 and payload["offset"] == 1 and payload["unlabeled_sequences"] == []
    assert payload["summary"] == {"num_sequences": 3, "num_labeled_sequences": 3, "num_labeled_frames": 5,
                                  "offset": 1, "stride": 100}
    assert list(payload["labeled_frames"]) == ["a_long", "b_short", "c_edge"]


def test_version_1_files_read_as_offset_0(train_dir, tmp_path):
    split = make_split(train_dir, "wsod", 0.01, SEQ_LEN)
    payload = json.loads(split.to_json())
    del payload["offset"], payload["summary"]["offset"], payload["unlabeled_sequences"]
    path = tmp_path / "v1.json"
    path.write_text(json.dumps({**payload, "version": 1}))
    assert read_split(path) == split
    path.write_text(json.dumps({**payload, "version": 1, "offset": 0}))
    with pytest.raises(FormatError, match="expected a JSON object with keys"):
        read_split(path)


def test_version_2_files_read_without_unlabeled_sequences(train_dir, tmp_path):
    split = make_split(train_dir, "ssod", 0.5, SEQ_LEN)
    payload = json.loads(split.to_json())
    del payload["unlabeled_sequences"]
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({**payload, "version": 2}))
    assert read_split(path) == split and split.unlabeled_sequences == ()


def _corrupt(path, **changes):
    payload = json.loads(path.read_text())
    payload.update(changes)
    path.write_text(json.dumps(payload))


@pytest.mark.parametrize("changes, problem", [
    ({"setting": "semi"}, "unknown setting 'semi'"),
    ({"labeled_frames": {"a_long": [108, 8, 208]}}, "not sorted, unique and non-negative"),
    ({"labeled_frames": {"a_long": [8, 8]}}, "not sorted, unique and non-negative"),
    ({"labeled_frames": {"a_long": [-1, 8]}}, "not sorted, unique and non-negative"),
    ({"labeled_frames": {"a_long": ["8"]}}, "list of integer frames"),
    ({"labeled_frames": {"a_long": 8}}, "list of integer frames"),
    ({"labeled_frames": {}}, "non-empty object"),
    ({"ratio": 1.5}, r"not in \(0, 1\]"),
    ({"ratio": "0.01"}, "not a number"),
    ({"setting": "full"}, "needs ratio 1"),
    ({"sequence_length": 0}, "not a positive integer"),
    ({"version": 99}, "unsupported version 99, expected 3"),
    ({"unlabeled_sequences": ["a_long"]}, r"unlabeled sequences \['a_long'\] must be training sequences without"),
    ({"unlabeled_sequences": ["b", "a"]}, "sorted list of unique sequence names"),
    ({"version": "2"}, "unsupported version '2'"),
    ({"offset": 100}, r"split offset 100 is not in 0..99"),
    ({"offset": "1"}, "split offset '1' is not in"),
    ({"offset": 1}, "disagrees"),
    ({"summary": {"num_sequences": 99}}, "disagrees"),
])
def test_read_split_rejects_corrupted_json(train_dir, tmp_path, changes, problem):
    path = tmp_path / "split.json"
    write_split(path, make_split(train_dir, "wsod", 0.01, SEQ_LEN))
    _corrupt(path, **changes)
    with pytest.raises(FormatError, match=problem) as info:
        read_split(path)
    assert info.value.path == path and str(path) in str(info.value)


def test_leod_split_offset_option(train_dir, tmp_path, caplog):
    out = tmp_path / "split.json"
    assert leod(["split", "--data", str(train_dir.parent), "--setting", "wsod", "--ratio", "0.5",
                 "--sequence-length", str(SEQ_LEN), "--offset", "1", "--out", str(out)]) == 0
    split = read_split(out)
    assert split.offset == 1 and split.labeled_frames["a_long"] == list(range(9, 250, 2))
    assert leod(["split", "--data", str(train_dir.parent), "--setting", "wsod", "--ratio", "0.5",
                 "--sequence-length", str(SEQ_LEN), "--offset", "2", "--out", str(tmp_path / "x.json")]) == 1
    assert "split offset 2 is not in 0..1" in caplog.text


def test_read_split_rejects_unreadable_files(tmp_path):
    with pytest.raises(FormatError, match="missing"):
        read_split(tmp_path / "absent.json")
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        read_split(path)
    path.write_text(json.dumps({"setting": "wsod"}))
    with pytest.raises(FormatError, match="keys"):
        read_split(path)


def test_ssod_file_with_too_small_ratio_is_a_format_error(tmp_path):
    split = LabelSplit("ssod", 1.0, SEQ_LEN, {"a": [0], "b": [0]})
    path = tmp_path / "ssod.json"
    write_split(path, split)
    _corrupt(path, ratio=0.01)
    with pytest.raises(FormatError, match="too small for 2 sequences"):
        read_split(path)


# ----------------------------------------------------------------------------------------- LEOD golden
def golden_cases():
    return json.loads((GOLDEN / "leod_cases.json").read_text())


def test_wsod_reproduces_leod_split_code():
    golden = golden_cases()
    reprs = {name: np.asarray(idx, dtype=np.int64) for name, idx in golden["sequences"].items()}
    got = [wsod_labeled_frames(reprs[c["sequence"]], c["ratio"], c["sequence_length"], c["offset"])
           for c in golden["wsod"]]
    wrong = [(c, frames) for c, frames in zip(golden["wsod"], got) if frames != c["expected"]]
    assert not wrong, f"{len(wrong)} of {len(got)} cases differ from LEOD, e.g. {wrong[:3]}"
    assert any(c["start_idx_offset"] is None and c["expected"] for c in golden["wsod"] if "leod_error" not in c)


def test_ssod_reproduces_leod_subsample_list():
    for case in golden_cases()["ssod"]:
        names = [f"seq_{i:05d}" for i in range(case["num_sequences"])]
        kept = ssod_kept_sequences(random.Random(0).sample(names, len(names)), case["ratio"], case["offset"])
        assert [names.index(n) for n in kept] == case["expected"], case


def test_wsod_stride_is_the_step_of_leods_released_splits():
    facts = json.loads((GOLDEN / "leod_released_pickles.json").read_text())["files"]
    assert len(facts) == 8
    for fact in facts:
        assert list(fact["steps_between_kept_frames"]) == [str(wsod_stride(fact["ratio"]))], fact["file"]
        assert max(int(first) for first in fact["first_kept_frame"]) < wsod_stride(fact["ratio"])
