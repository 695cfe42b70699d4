"""Every bad input of the corpus (``tests/data/bad/corpus.py``) gives a clear, typed error naming the file or
field, and a failing ``leod`` command exits 1 with that message, leaving its output directory as it was.

The pristine inputs the cases are made from pass through the same entry points (first test), so each
error comes from the one defect a case adds. A few inputs are deliberately not errors (RVT/LEOD accept
them); they must be logged instead (last test)."""
from __future__ import annotations

import logging
import os
import re
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Iterator

import h5py
import numpy as np
import pytest

from bad.common import (FILES, SENSOR_HW, SPLIT_LENGTH, SPLIT_RATIO, TRAIN_SEQ, BadCase, Pristine, build_pristine,
                        crc32_hex, run_leod)
from bad.configs import default_workflow_config, load_workflow_config
from bad.corpus import CASES
from bad.preprocessed import edit_labels, seq_copy
from bad.raw import edit_boxes, raw_copy, rewrite_events
from leod_core.cli import main as leod_main
from leod_core.data.download import SUMMARY_NAME
from leod_core.data.sequence import SequenceReader
from leod_core.data.splits import read_split
from leod_core.models.checkpoint import load_model_checkpoint
from leod_core.workflow.settings import experiment_settings

#: (path, mtime ns, size) of every file under a directory; directories by path only.
Snapshot = dict[str, tuple[int, int] | None]


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        """Keep pytest's output clean."""


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Iterator[Pristine]:
    """The valid inputs, and an HTTP server for the download archive."""
    root = tmp_path_factory.mktemp("pristine")
    (root / "served").mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root / "served")))
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield build_pristine(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def snapshot(directories: tuple[Path, ...]) -> Snapshot:
    """Every path under ``directories``: files with (mtime, size), directories with ``None``."""
    out: Snapshot = {}
    for directory in directories:
        for path in [directory, *directory.rglob("*")]:
            stat = path.stat()
            out[str(path)] = None if path.is_dir() else (stat.st_mtime_ns, stat.st_size)
    return out


def _case_id(case: BadCase) -> str:
    return case.id


def test_corpus_covers_every_category_with_unique_ids():
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30
    assert {case.category for case in CASES} == {"raw events", "raw boxes", "preprocessed", "labels", "splits",
                                                 "checkpoints", "configs", "targets", "downloads"}


def test_pristine_inputs_pass_the_same_entry_points(pristine, tmp_path):
    """The undamaged inputs pass every entry point the cases use: each case's error is its defect's."""
    raw, _, _ = raw_copy(tmp_path / "raw_case", pristine)
    run_leod(["preprocess", "--raw", str(raw), "--out", str(tmp_path / "preprocessed"), "--preset", "synth"])
    seq = seq_copy(tmp_path, pristine)
    reader = SequenceReader(seq.root)
    assert reader.num_reprs > 0 and reader.read_reprs(0, reader.num_reprs).shape[0] == reader.num_reprs
    split = tmp_path / "split.json"
    run_leod(["split", "--data", str(pristine.data), "--setting", "wsod", "--ratio", SPLIT_RATIO,
              "--sequence-length", SPLIT_LENGTH, "--out", str(split)])
    assert read_split(split).labeled_frames == {TRAIN_SEQ: [0, 2]}
    run_leod(["import-checkpoint", "--checkpoint", str(pristine.checkpoint), "--out", str(tmp_path / "m.ckpt"),
              "--size", "tiny", "--height", str(SENSOR_HW[0]), "--width", str(SENSOR_HW[1])])
    load_model_checkpoint(pristine.checkpoint)
    assert load_workflow_config(FILES / "configs" / "workflow_valid_overlay.yaml")["experiments"][0]["ratio"] == 0.2
    experiment_settings(default_workflow_config(), "synth", "wsod", "0.1", "no-tta")
    out = tmp_path / "datasets" / "gen1"
    run_leod(["download", "--url", f"{pristine.base_url}/gen1.tar", "--crc32", crc32_hex(pristine.archive),
              "--archive", str(tmp_path / "gen1.tar"), "--out", str(out)])
    assert (out / SUMMARY_NAME).is_file() and (out / "train" / TRAIN_SEQ).is_dir()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # torch, on the plain pickle
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_bad_input_gives_a_clear_error(case: BadCase, pristine, tmp_path, caplog):
    """Exactly the case's error type and message; a `leod` command exits 1 logging it; watched output
    directories keep their files unchanged and gain none."""
    call = case.build(tmp_path, pristine)
    before = snapshot(call.watched)
    with pytest.raises(case.error, match=case.match) as raised:
        call.run()
    assert type(raised.value) is case.error
    if call.argv is not None:  # the `leod` command: one logged line naming the problem, exit status 1
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="leod"):
            assert leod_main(["--no-progress", *call.argv]) == 1
        assert any(re.search(case.match, record.getMessage()) for record in caplog.records)
    assert snapshot(call.watched) == before
    assert not [path for path in call.must_not_exist if os.path.lexists(path)]


# ------------------------------------------------------------------------- accepted as RVT does, but logged
def test_decreasing_event_timestamps_are_raised_and_logged(pristine, tmp_path, caplog):
    raw, events, _ = raw_copy(tmp_path, pristine)
    with h5py.File(events, "r") as h5:
        t = h5["events"]["t"][()]
    later = int(np.argmax(np.diff(t) > 0)) + 1
    t[[later - 1, later]] = t[[later, later - 1]]
    rewrite_events(events, t=t)
    with caplog.at_level(logging.WARNING):
        run_leod(["preprocess", "--raw", str(raw), "--out", str(tmp_path / "data"), "--preset", "synth"])
    assert f"{events}: raised 1 decreasing event timestamps to the running maximum" in caplog.text


def test_a_sequence_without_boxes_is_skipped_and_logged(pristine, tmp_path, caplog):
    raw, _, train_boxes = raw_copy(tmp_path, pristine)
    (boxes,) = sorted((raw / "val").glob("*_bbox.npy"))
    for path in (train_boxes, boxes):
        edit_boxes(lambda rows: rows[:0])(path)
    with caplog.at_level(logging.WARNING):
        run_leod(["preprocess", "--raw", str(raw), "--out", str(tmp_path / "data"), "--preset", "synth"])
    assert f"sequences have no labels left after filtering and were not written: {boxes}" in caplog.text
    assert not (tmp_path / "data" / "val" / boxes.name.removesuffix("_bbox.npy")).exists()
    # in train it is an unlabeled recording, kept for pseudo-labelling (tests/data/test_unlabeled_recordings.py)
    reader = SequenceReader(tmp_path / "data" / "train" / TRAIN_SEQ)
    assert reader.num_frames > 0 and all(len(reader.frame_labels(i)) == 0 for i in range(reader.num_frames))


def test_a_box_outside_the_frame_is_dropped_and_logged(pristine, tmp_path, caplog):
    seq = seq_copy(tmp_path, pristine)

    def move_first_box_out(labels: np.ndarray, starts: np.ndarray) -> dict[str, np.ndarray]:
        labels["x"][0] = 1000.0
        return {"labels": labels, "objframe_idx_2_label_idx": starts}
    edit_labels(move_first_box_out)(seq)
    with caplog.at_level(logging.WARNING):
        SequenceReader(seq.root)
    assert re.search(rf"{re.escape(str(seq.labels))}: 1 of \d+ boxes are empty or lie entirely outside the 64x96 "
                     r"sensor frame: dropped", caplog.text)
