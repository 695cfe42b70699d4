"""``leod preprocess`` of camera recordings (Prophesee DAT, EVT 2.0 / 3.0 RAW) beside RVT's ``*_td.dat.h5``, and
``leod synth --format``: the same events in any format give byte-identical preprocessed files."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from leod_core.cli import main as leod
from leod_core.data import recordings
from leod_core.data.formats import SPLITS, FormatError, raw_paths, read_raw_events, write_raw_events
from leod_core.data.preprocess import PRESETS, preprocess_dataset
from leod_core.data.recordings import detect_format, write_recording
from leod_core.data.synth import EVENT_FORMATS, SUMMARY_FILE, SynthConfig, generate_sequence, sequence_name

#: A tiny synthetic dataset (one 1.2 s sequence per split at the synth camera's 64 x 96 pixels).
SYNTH_ARGS = ("--num-train", "1", "--num-val", "1", "--num-test", "1", "--duration-s", "1.2", "--seed", "3")
CONFIG = SynthConfig(num_train=1, num_val=1, num_test=1, duration_s=1.2, seed=3)
PRESET = "synth"
#: Name ending of the converted event file per format: every name preprocessing accepts is used once.
CONVERTED_ENDINGS = {"dat": "_td.dat", "evt2": "_td.raw", "evt3": ".raw"}
H5_ENDING = "_td.dat.h5"


def synth(out: Path, *options: str) -> Path:
    assert leod(["--no-progress", "synth", "--out", str(out), *SYNTH_ARGS, *options]) == 0
    return out


def preprocess(raw: Path, out: Path) -> Path:
    assert leod(["--no-progress", "preprocess", "--raw", str(raw), "--out", str(out), "--preset", PRESET]) == 0
    return out


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its relative path, with its bytes."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def assert_same_tree(got: Path, expected: Path) -> None:
    got_files, expected_files = tree_bytes(got), tree_bytes(expected)
    assert sorted(got_files) == sorted(expected_files)
    differing = [name for name in expected_files if got_files[name] != expected_files[name]]
    assert not differing, f"files differ from the h5 route's: {differing}"


@pytest.fixture(scope="module")
def h5_raw(tmp_path_factory) -> Path:
    """``leod synth`` output (RVT's ``*_td.dat.h5``)."""
    return synth(tmp_path_factory.mktemp("raw_h5") / "raw")


@pytest.fixture(scope="module")
def h5_preprocessed(h5_raw, tmp_path_factory) -> Path:
    """``leod preprocess`` of :func:`h5_raw`: the reference every other format must reproduce byte for byte."""
    out = preprocess(h5_raw, tmp_path_factory.mktemp("out_h5") / "out")
    summary = json.loads((out / "preprocess_summary.json").read_text())
    assert summary["splits"] == {split: {"written": [sequence_name(split, 0)]} for split in SPLITS}
    return out


def convert_raw(h5_raw: Path, dest: Path, fmt: str) -> Path:
    """A copy of ``h5_raw`` with every sequence's events rewritten in ``fmt`` (the h5 files removed)."""
    shutil.copytree(h5_raw, dest)
    for h5_file in sorted(dest.glob(f"*/*{H5_ENDING}")):
        seq = h5_file.name[: -len(H5_ENDING)]
        target = h5_file.with_name(f"{seq}{CONVERTED_ENDINGS[fmt]}")
        write_recording(target, read_raw_events(h5_file, (CONFIG.height, CONFIG.width)), fmt)
        assert detect_format(target) == fmt
        h5_file.unlink()
    return dest


@pytest.mark.parametrize("fmt", sorted(CONVERTED_ENDINGS))
def test_every_format_gives_the_h5_route_bytes(h5_raw, h5_preprocessed, tmp_path, fmt):
    raw = convert_raw(h5_raw, tmp_path / "raw", fmt)
    assert not list(raw.glob(f"*/*{H5_ENDING}"))
    assert_same_tree(preprocess(raw, tmp_path / "out"), h5_preprocessed)


def test_synth_evt3_then_preprocess_matches_synth_h5_then_preprocess(h5_preprocessed, tmp_path):
    raw = synth(tmp_path / "raw", "--format", "evt3")
    for split in SPLITS:
        events_file = raw / split / f"{sequence_name(split, 0)}_td.raw"
        assert detect_format(events_file) == "evt3"
        assert not raw_paths(raw / split, sequence_name(split, 0))[0].exists()
    assert_same_tree(preprocess(raw, tmp_path / "out"), h5_preprocessed)


def test_synth_default_format_writes_rvt_h5_as_before(h5_raw, tmp_path):
    events_file, _ = raw_paths(h5_raw / "train", sequence_name("train", 0))
    expected = tmp_path / events_file.name
    write_raw_events(expected, generate_sequence(CONFIG, "train", 0)[0])
    assert events_file.read_bytes() == expected.read_bytes()
    assert sorted(json.loads((h5_raw / SUMMARY_FILE).read_text())) == ["config", "splits", "total_bytes"]


def test_synth_formats_are_the_recording_formats():
    assert sorted(EVENT_FORMATS) == sorted(recordings.FORMATS)


def test_two_formats_of_one_sequence_are_an_error_naming_both(h5_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(h5_raw, raw)
    seq = sequence_name("val", 0)
    h5_file, _ = raw_paths(raw / "val", seq)
    dat_file = raw / "val" / f"{seq}_td.dat"
    write_recording(dat_file, read_raw_events(h5_file, (CONFIG.height, CONFIG.width)), "dat")
    with pytest.raises(FormatError, match="ambiguous raw events") as error:
        preprocess_dataset(raw, tmp_path / "out", PRESETS[PRESET], progress=False)
    assert str(h5_file) in str(error.value) and str(dat_file) in str(error.value)
    assert not (tmp_path / "out").exists()


def test_missing_events_name_every_accepted_file(h5_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(h5_raw, raw)
    seq = sequence_name("test", 0)
    raw_paths(raw / "test", seq)[0].unlink()
    with pytest.raises(FormatError, match=f"raw events of {seq}_bbox.npy are missing") as error:
        preprocess_dataset(raw, tmp_path / "out", PRESETS[PRESET], progress=False)
    for name in (f"{seq}{H5_ENDING}", f"{seq}_td.dat", f"{seq}.raw", f"{seq}_td.raw"):
        assert name in str(error.value)
