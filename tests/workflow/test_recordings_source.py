"""The workflow's `recordings` source (leod_core/workflow/recordings.py): a folder of the user's recordings arranged
into RVT's raw layout with symbolic links; flat folders split by the holdout, split folders taken as they are, and
every bad folder a clear error naming the files."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from runner import copy_config, job_counts, snakemake

from leod_core.cli import main as leod
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, SPLITS, RawEvents, raw_paths, write_raw_boxes
from leod_core.data.raw_discovery import events_file_for_writing
from leod_core.data.recordings import write_recording
from leod_core.workflow.__main__ import main as workflow
from leod_core.workflow.recordings import (SUMMARY_FILE, Holdout, arrange_recordings, evenly_spaced,
                                           find_recordings)

#: Two events on an 8 x 8 sensor: enough for every format's header and reader.
EVENTS = RawEvents(x=np.array([1, 2], np.uint16), y=np.array([3, 4], np.uint16), p=np.array([0, 1], np.int8),
                   t=np.array([0, 10], np.int64), height=8, width=8)


def add_recording(folder: Path, seq: str, fmt: str = "evt3", labeled: bool = True) -> list[Path]:
    """Write recording ``seq`` (events in ``fmt``; a ``_bbox.npy`` if ``labeled``); return its files."""
    events = events_file_for_writing(folder, seq, fmt)
    write_recording(events, EVENTS, fmt)
    if not labeled:
        return [events]
    boxes = raw_paths(folder, seq)[1]
    write_raw_boxes(boxes, np.zeros(0, PROPHESEE_BBOX_DTYPE))
    return [events, boxes]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: (bytes, mtime in ns), to show that the arrangement changed nothing."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def linked(out: Path, split: str) -> dict[str, str]:
    """Link name -> link target of a split directory of the arrangement."""
    return {p.name: os.readlink(p) for p in sorted((out / split).iterdir())}


@pytest.fixture
def flat(tmp_path) -> Path:
    """A flat folder: labeled a0 .. a4 (mixed formats) and unlabeled u0, u1, plus a file that is no recording."""
    folder = tmp_path / "recs"
    for i, fmt in enumerate(("evt3", "evt2", "dat", "h5", "evt3")):
        add_recording(folder, f"a{i}", fmt)
    add_recording(folder, "u0", "evt3", labeled=False)
    add_recording(folder, "u1", "dat", labeled=False)
    (folder / "notes.txt").write_text("camera on the roof\n")
    return folder


# ------------------------------------------------------------------------------------------------ rules
def test_evenly_spaced_picks_the_centres_of_equal_intervals():
    assert evenly_spaced(5, 2) == [1, 3]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert evenly_spaced(10, 3) == [1, 5, 8]
    assert evenly_spaced(3, 0) == []
    with pytest.raises(ValueError, match="cannot pick 4 of 3"):
        evenly_spaced(3, 4)


def test_holdout_takes_floors_keeps_one_in_each_split_and_says_how_many_are_needed():
    assert Holdout().counts(9) == (1, 1) and Holdout().counts(10) == (2, 2) and Holdout().counts(2) == (1, 1)
    assert Holdout().needed() == 3 and not Holdout().fits(2) and Holdout().fits(3)
    assert Holdout(0.2, 0.7).needed() == 4 and Holdout(0.2, 0.7).counts(3) == (1, 2)
    with pytest.raises(ValueError, match="val must be a fraction in"):
        Holdout(val=0.0)
    with pytest.raises(ValueError, match=r"val \+ test must be below 1"):
        Holdout(val=0.5, test=0.5)


# ------------------------------------------------------------------------------------------ flat folder
def test_a_flat_folder_is_split_by_the_holdout_with_links_to_the_users_files(flat, tmp_path, caplog):
    before = snapshot(flat)
    out = tmp_path / "results/raw/mycam"
    with caplog.at_level(logging.INFO):
        summary = arrange_recordings(flat, out)
    # labeled a0..a4: val and test get round(0.2 * 5) = 1 each, the evenly spaced picks 1 and 3 of the five
    # (val the later one); every unlabeled recording trains
    names = {split: [r["sequence"] for r in summary["splits"][split]] for split in SPLITS}
    assert names == {"train": ["a0", "a2", "a4", "u0", "u1"], "val": ["a3"], "test": ["a1"]}
    assert summary["counts"] == {"train": {"labeled": 3, "unlabeled": 2}, "val": {"labeled": 1, "unlabeled": 0},
                                 "test": {"labeled": 1, "unlabeled": 0}}
    assert summary["layout"] == "flat" and summary["holdout"] == {"val": 0.2, "test": 0.2}
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    formats = {r["sequence"]: (r["format"], r["labeled"]) for split in SPLITS for r in summary["splits"][split]}
    assert formats == {"a0": ("evt3", True), "a1": ("evt2", True), "a2": ("dat", True), "a3": ("h5", True),
                       "a4": ("evt3", True), "u0": ("evt3", False), "u1": ("dat", False)}
    assert linked(out, "val") == {"a3_td.dat.h5": str(flat / "a3_td.dat.h5"),
                                  "a3_bbox.npy": str(flat / "a3_bbox.npy")}
    train = linked(out, "train")
    assert "u0_bbox.npy" not in train and train["u1_td.dat"] == str(flat / "u1_td.dat") and len(train) == 8
    for split in SPLITS:
        for link in (out / split).iterdir():
            assert link.is_symlink() and link.resolve().parent == flat.resolve()
    assert snapshot(flat) == before and sorted(p.name for p in flat.iterdir()) == sorted(before)
    assert "ignoring 1 entries that are not recordings: notes.txt" in caplog.text


def test_the_arrangement_is_what_preprocessing_reads(tmp_path):
    """`leod synth --layout flat --unlabeled-fraction` -> arrangement -> `leod preprocess`: the unlabeled
    recordings become unlabeled train sequences, val and test hold labeled ones only."""
    folder, out, data = tmp_path / "recs", tmp_path / "raw", tmp_path / "data"
    assert leod(["--no-progress", "synth", "--out", str(folder), "--layout", "flat", "--format", "evt3",
                 "--unlabeled-fraction", "0.5", "--num-train", "4", "--num-val", "1", "--num-test", "1",
                 "--duration-s", "1", "--height", "32", "--width", "48"]) == 0
    summary = arrange_recordings(folder, out)
    unlabeled = sorted(r["sequence"] for r in summary["splits"]["train"] if not r["labeled"])
    assert unlabeled == ["synth_train_001", "synth_train_003"]
    assert leod(["--no-progress", "preprocess", "--raw", str(out), "--out", str(data), "--preset", "synth"]) == 0
    statuses = json.loads((data / "preprocess_summary.json").read_text())["splits"]
    assert sorted(statuses["train"]["unlabeled"]) == unlabeled
    for split in ("val", "test"):
        assert set(statuses[split]) == {"written"}
        assert statuses[split]["written"] == [r["sequence"] for r in summary["splits"][split]]


def test_a_rerun_follows_the_folder_and_replaces_only_links(flat, tmp_path):
    out = tmp_path / "out"
    arrange_recordings(flat, out)
    for path in flat.glob("u1*"):
        path.unlink()                                   # the user removes a recording
    arrange_recordings(flat, out)
    assert not any(name.startswith("u1") for name in linked(out, "train"))
    elsewhere = tmp_path / "other_raw_train"            # a link left by the raw source (link_raw) ...
    add_recording(elsewhere, "x")
    (out / "train").rename(tmp_path / "old_train")
    (out / "train").symlink_to(elsewhere, target_is_directory=True)
    arrange_recordings(flat, out)
    assert (out / "train").is_dir() and not (out / "train").is_symlink()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["x_bbox.npy", "x_td.raw"]   # ... and its target stays


def test_an_output_split_holding_real_files_is_left_alone(flat, tmp_path):
    out = tmp_path / "out"
    (out / "val").mkdir(parents=True)
    (out / "val/mine.txt").write_text("not a link")
    with pytest.raises(ValueError, match=r"val holds files that are not links \(.*mine\.txt\)"):
        arrange_recordings(flat, out)
    assert (out / "val/mine.txt").read_text() == "not a link"


# ---------------------------------------------------------------------------------------- split folders
def test_split_folders_are_taken_as_they_are(tmp_path, caplog):
    folder = tmp_path / "recs"
    add_recording(folder / "train", "t0")
    add_recording(folder / "train", "t1", "dat", labeled=False)
    add_recording(folder / "val", "v0", "evt2")
    add_recording(folder / "test", "s0", "h5")
    add_recording(folder / "test", "s1")
    before = snapshot(folder)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        summary = arrange_recordings(folder, out, holdout=Holdout(0.3, 0.3))
    names = {split: [r["sequence"] for r in summary["splits"][split]] for split in SPLITS}
    assert names == {"train": ["t0", "t1"], "val": ["v0"], "test": ["s0", "s1"]}
    assert summary["layout"] == "splits" and summary["holdout"] is None
    assert linked(out, "test")["s0_td.dat.h5"] == str(folder / "test/s0_td.dat.h5")
    assert "taken as it is (holdout val 0.3 / test 0.3 not used)" in caplog.text
    assert snapshot(folder) == before


# ---------------------------------------------------------------------------------------------- errors
def _missing(folder: Path) -> None:
    pass


def _empty(folder: Path) -> None:
    folder.mkdir()
    (folder / "readme.txt").write_text("nothing here")


def _two_event_files(folder: Path) -> None:
    for i in range(3):
        add_recording(folder, f"a{i}")
    write_recording(folder / "a1.raw", EVENTS, "evt2")


def _boxes_without_events(folder: Path) -> None:
    for i in range(3):
        add_recording(folder, f"a{i}")
    write_raw_boxes(folder / "lost_bbox.npy", np.zeros(0, PROPHESEE_BBOX_DTYPE))


def _too_few_labeled(folder: Path) -> None:
    add_recording(folder, "a0")
    add_recording(folder, "a1")
    for i in range(4):
        add_recording(folder, f"u{i}", labeled=False)


def _split_folders(unlabeled_in: str = "", missing: str = "", stray: bool = False,
                   train_labeled: bool = True):
    def build(folder: Path) -> None:
        for split in SPLITS:
            if split != missing:
                add_recording(folder / split, f"{split}0", labeled=train_labeled or split != "train")
        if unlabeled_in:
            add_recording(folder / unlabeled_in, "nolabels", labeled=False)
        if stray:
            add_recording(folder, "stray")
    return build


def _other_format(folder: Path) -> None:
    for i in range(3):
        add_recording(folder, f"a{i}", "evt2")
    add_recording(folder, "b", "evt3")


@pytest.mark.parametrize("build, fmt, message", [
    (_missing, "auto", r"recordings folder .*recs is missing"),
    (_empty, "auto", r"no event recordings in .*recs \(accepted: \{seq\}_td\.dat\.h5, \{seq\}_td\.dat, "
                     r"\{seq\}\.raw, \{seq\}_td\.raw\)"),
    (_two_event_files, "auto", r"ambiguous raw events: 2 event files for one sequence \(.*recs/a1\.raw, .*recs/a1_td\.raw\)"),
    (_boxes_without_events, "auto", r"1 box file\(s\) without an event file beside them .*: .*recs/lost_bbox\.npy"),
    (_too_few_labeled, "auto", r"2 labeled recording\(s\) \(with a _bbox\.npy beside them\) of 6: holding out val "
                               r"0\.2 and test 0\.2 needs at least 3"),
    (_split_folders(unlabeled_in="test"), "auto", r"recs/test: evaluation needs ground truth, but 1 recording\(s\) "
                                                  r"have no _bbox\.npy beside them: .*recs/test/nolabels_td\.raw"),
    (_split_folders(missing="val"), "auto", r"has train/, test/ but not val/"),
    (_split_folders(stray=True), "auto", r"has train/ val/ test/ and recordings beside them \(stray\)"),
    (_split_folders(train_labeled=False), "auto", r"recs/train: no labeled recording"),
    (_other_format, "evt2", r"recordings\.format is evt2, but 1 recording\(s\) are not: .*recs/b_td\.raw \(evt3\)"),
])
def test_a_bad_folder_is_an_error_naming_the_files(tmp_path, build, fmt, message):
    folder = tmp_path / "recs"
    build(folder)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        arrange_recordings(folder, out, fmt)
    assert not (out / SUMMARY_FILE).exists()


def test_the_recordings_must_live_outside_the_output(flat):
    with pytest.raises(ValueError, match="is inside the workflow's output"):
        arrange_recordings(flat, flat.parent)


def test_find_recordings_reads_rvt_h5_names_of_the_preset(tmp_path):
    add_recording(tmp_path, "a", "h5")
    (tmp_path / "a_td.dat.h5").rename(tmp_path / "a_td.h5")          # RVT's 1Mpx naming
    assert [r.sequence for r in find_recordings(tmp_path, gen4_style=True)] == ["a"]
    with pytest.raises(ValueError, match=r"box file\(s\) without an event file .*\{seq\}_td\.dat\.h5"):
        find_recordings(tmp_path, gen4_style=False)


# -------------------------------------------------------------------------------------------------- CLI
def test_the_workflow_command_arranges_and_reports_errors(flat, tmp_path, caplog):
    out = tmp_path / "out"
    args = ["arrange-recordings", "--source", str(flat), "--out", str(out), "--preset", "synth"]
    assert workflow([*args, "--holdout-val", "0.4", "--holdout-test", "0.2"]) == 0
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["holdout"] == {"val": 0.4, "test": 0.2} and len(summary["splits"]["val"]) == 2
    assert workflow([*args, "--format", "dat"]) == 1
    assert "recordings.format is dat, but 5 recording(s) are not" in caplog.text
    assert workflow([*args, "--holdout-val", "0.7", "--holdout-test", "0.3"]) == 1
    assert "holdout val + test must be below 1" in caplog.text


# ------------------------------------------------------------------------------------------------ workflow
EXAMPLE = "workflow_config/examples/my_camera.yaml"


def test_the_example_config_plans_the_arrangement_before_preprocessing_and_lints_clean(tmp_path):
    workdir = copy_config(tmp_path)
    result = snakemake(workdir, "-p", "--configfile", str(workdir / EXAMPLE))
    assert result.returncode == 0, result.stderr
    counts = job_counts(result.stdout)
    assert counts["arrange_recordings"] == counts["preprocess"] == counts["train_round0"] == 1
    assert "synth_raw" not in counts and "link_raw" not in counts
    assert ("python -m leod_core.workflow arrange-recordings --out results/raw/mycam --format auto --holdout-test "
            "0.25 --holdout-val 0.25 --source my_recordings --preset synth") in result.stdout
    lint = snakemake(workdir, "--lint", "--configfile", str(workdir / EXAMPLE), dry_run=False)
    assert "Congratulations, your workflow is in a good condition!" in lint.stdout + lint.stderr, lint.stdout


def test_a_missing_recordings_folder_fails_the_job_with_its_name(tmp_path):
    workdir = copy_config(tmp_path)
    result = snakemake(workdir, "results/raw/mycam/summary.json", "--configfile", str(workdir / EXAMPLE),
                       dry_run=False)
    assert result.returncode != 0
    assert "recordings folder my_recordings is missing" in (workdir / "logs/raw/mycam/arrange.log").read_text()
