"""Bad label splits: split files read by ``leod label-quality`` (it reads the split first) and by training's
sequence selection, and ``leod split`` runs that cannot make one."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from leod_core.data.formats import FormatError
from leod_core.data.sequence_index import build_sequence_index
from leod_core.data.loaders import select_sequences
from leod_core.data.splits import LabelSplit, read_split, write_split

from .common import FILES, SPLIT_LENGTH, SPLIT_RATIO, BadCase, Call, Pristine, leod_call, split_call, watched_dir


def quality_with_split(split_file: Path, work: Path, pristine: Pristine) -> Call:
    """``leod label-quality`` (it reads the split first) with the split ``split_file``."""
    out = watched_dir(work / "round1")
    return leod_call(["label-quality", "--pseudo-data", str(work / "pseudo"), "--data", str(pristine.data),
                      "--split", str(split_file), "--out", str(out / "quality.json"), "--camera", "synth"], out)


def committed_split(name: str) -> Callable[[Path, Pristine], Call]:
    return lambda work, pristine: quality_with_split(FILES / "splits" / name, work, pristine)


def missing_split(work: Path, pristine: Pristine) -> Call:
    return quality_with_split(work / "split.json", work, pristine)


def split_with_malformed_ratio(work: Path, pristine: Pristine) -> Call:
    return split_call(work, pristine.data, ratio="0.1x")


def split_of_dataset_without_train(work: Path, pristine: Pristine) -> Call:
    data = work / "data"
    shutil.copytree(pristine.data, data)
    shutil.rmtree(data / "train")
    return split_call(work, data)


def split_from_index(text: str) -> Callable[[Path, Pristine], Call]:
    """``leod split --sequence-index`` of an index file holding ``text``."""
    def build(work: Path, pristine: Pristine) -> Call:
        index = work / "sequence_index.json"
        index.write_text(text)
        out = watched_dir(work / "experiment")
        return leod_call(["split", "--sequence-index", str(index), "--setting", "wsod", "--ratio", SPLIT_RATIO,
                          "--sequence-length", SPLIT_LENGTH, "--out", str(out / "split.json")], out)
    return build


def damaged_index(old: str, new: str) -> Callable[[Path, Pristine], Call]:
    """The pristine dataset's index with the first ``old`` replaced by ``new``."""
    def build(work: Path, pristine: Pristine) -> Call:
        good = build_sequence_index(pristine.data / "train").to_json()
        assert old in good, f"{old!r} is not in the index"
        return split_from_index(good.replace(old, new, 1))(work, pristine)
    return build


def split_naming_unknown_sequence(work: Path, pristine: Pristine) -> Call:
    """A valid split file of another dataset: training selects sequences by it (``leod train``'s loader)."""
    split_file = work / "split.json"
    write_split(split_file, LabelSplit("wsod", float(SPLIT_RATIO), int(SPLIT_LENGTH), {"synth_train_999": [1]}))
    return Call(run=lambda: select_sequences(pristine.data, read_split(split_file)))


SPLIT_CASES = [
    # split files: leod label-quality (reads the split first), leod split, training's sequence selection
    BadCase("split-truncated-json", "splits", committed_split("truncated.json"), FormatError,
            r"truncated\.json: not valid JSON"),
    BadCase("split-missing-summary", "splits", committed_split("missing_summary.json"), FormatError,
            r"missing_summary\.json: expected a JSON object with keys"),
    BadCase("split-unknown-version", "splits", committed_split("unknown_version.json"), FormatError,
            r"unknown_version\.json: unsupported version 99"),
    BadCase("split-unknown-setting", "splits", committed_split("unknown_setting.json"), FormatError,
            r"unknown_setting\.json: unknown setting 'wsodd'"),
    BadCase("split-ratio-as-string", "splits", committed_split("ratio_as_string.json"), FormatError,
            r"ratio_as_string\.json: ratio '0\.5' is not a number"),
    BadCase("split-ratio-above-one", "splits", committed_split("ratio_above_one.json"), FormatError,
            r"ratio_above_one\.json: ratio 1\.5 is not in \(0, 1\]"),
    BadCase("split-full-below-one", "splits", committed_split("full_below_one.json"), FormatError,
            r"full_below_one\.json: setting 'full' needs ratio 1"),
    BadCase("split-zero-sequence-length", "splits", committed_split("zero_sequence_length.json"), FormatError,
            r"zero_sequence_length\.json: sequence_length 0 is not a positive integer"),
    BadCase("split-unsorted-frames", "splits", committed_split("unsorted_frames.json"), FormatError,
            r"unsorted_frames\.json: sequence 'synth_train_000': frames are not sorted"),
    BadCase("split-float-frames", "splits", committed_split("float_frames.json"), FormatError,
            r"float_frames\.json: sequence 'synth_train_000': needs a name and a list of integer frames"),
    BadCase("split-summary-disagrees", "splits", committed_split("summary_disagrees.json"), FormatError,
            r"summary_disagrees\.json: summary .* disagrees with the content"),
    BadCase("split-missing-file", "splits", missing_split, FormatError, r"split\.json: split file is missing"),
    BadCase("split-cli-malformed-ratio", "splits", split_with_malformed_ratio, ValueError,
            r"ratio '0\.1x' is not a number"),
    BadCase("split-cli-no-train-dir", "splits", split_of_dataset_without_train, ValueError,
            r"split directory .*data/train does not exist"),
    # the sequence index: leod split --sequence-index (and the shard list) read it instead of the tree
    BadCase("index-truncated-json", "splits", split_from_index('{"version": 1, "split": "tr'), FormatError,
            r"sequence_index\.json: not a sequence index: not valid JSON"),
    BadCase("index-unknown-version", "splits", damaged_index('"version":1', '"version":7'), FormatError,
            r"sequence_index\.json: not a sequence index of version 1"),
    BadCase("index-unsorted-frames", "splits",
            damaged_index('"objframe_idx_2_repr_idx":[', '"objframe_idx_2_repr_idx":[99999,'), FormatError, r"sequence_index\.json: sequence 'synth_train_\d+': representation indices are not sorted"),
    BadCase("index-missing-key", "splits", damaged_index('"has_boxes":true,', ''), FormatError,
            r"sequence_index\.json: sequence 'synth_train_\d+': needs exactly the keys"),
    BadCase("split-unknown-sequence", "splits", split_naming_unknown_sequence, ValueError,
            r"label split and .*data/train disagree: sequences missing on disk \['synth_train_999'\]"),
]
