"""``leod predict`` on a recording (EVT 3.0 from the synthetic camera) against ``leod evaluate`` on the same
sequence preprocessed: the same detections at the labeled frames, more at the others; outputs and errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from builders import write_confident_checkpoint
from leod_core.cli import main as leod
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, SequencePaths, read_timestamps_us
from leod_core.data.preprocess import PRESETS
from leod_core.data.recording_reprs import RecordingRepresentations
from leod_core.data.synth import sequence_name

CAMERA = "synth"
L = "5"
SEQ = sequence_name("test", 0)
#: the synthetic camera labels every 250 ms
LABEL_PERIOD_US = PRESETS[CAMERA].label_period_us


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    raw, data = root / "raw", root / "data"
    assert leod(["--no-progress", "synth", "--out", str(raw), "--num-train", "1", "--num-val", "1", "--num-test",
                 "1", "--duration-s", "2.2", "--seed", "5", "--format", "evt3"]) == 0
    assert leod(["--no-progress", "preprocess", "--raw", str(raw), "--out", str(data), "--preset", CAMERA]) == 0
    (recording,) = (raw / "test").glob(f"{SEQ}*.raw")
    return {"root": root, "data": data, "recording": recording,
            "checkpoint": write_confident_checkpoint(root / "model.ckpt", class_1_logit=0.0)}


def assert_same_boxes(got: np.ndarray, expected: np.ndarray, atol: float = 1e-3) -> None:
    """The same boxes of one frame in any order, within ``atol`` (pixels, probability): the FPN + head run on a
    batch of another size in the two commands, so the floats differ in their last bits and equal scores may swap
    places."""
    fields = ("x", "y", "w", "h", "class_confidence")
    got_values = np.stack([got[k] for k in fields], axis=1).astype(np.float64)
    unused = np.ones(len(got), dtype=bool)
    for box in expected:
        same_class = unused & (got["class_id"] == box["class_id"])
        distance = np.abs(got_values - np.asarray([box[k] for k in fields], dtype=np.float64)).max(axis=1)
        distance[~same_class] = np.inf
        nearest = int(np.argmin(distance))
        assert distance[nearest] <= atol, f"no detection near {box} (nearest differs by {distance[nearest]})"
        unused[nearest] = False


def predict(setup, *options: str) -> int:
    return leod(["--no-progress", "predict", "--checkpoint", str(setup["checkpoint"]), "--recording",
                 str(setup["recording"]), "--camera", CAMERA, "--sequence-length", L, *options])


def test_the_recording_is_streamed_on_the_preprocessed_representation_grid(setup):
    reprs = RecordingRepresentations(setup["recording"], PRESETS[CAMERA])
    paths = SequencePaths(setup["data"] / "test" / SEQ)
    np.testing.assert_array_equal(reprs.timestamps_us, read_timestamps_us(paths.repr_timestamps))
    chunks = list(reprs.iter_chunks(0, reprs.num_reprs, 4))
    assert np.concatenate([i for i, _ in chunks]).tolist() == list(range(reprs.num_reprs))
    assert max(len(i) for i, _ in chunks) == 4
    with pytest.raises(ValueError, match="forward only"):
        next(reprs.iter_chunks(0, 3, 2, reverse=True))
    assert reprs.events_read > 0


def test_predict_equals_evaluate_at_the_labeled_frames(setup, tmp_path):
    out, preds_dir = tmp_path / "boxes.npy", tmp_path / "eval_preds"
    assert leod(["--no-progress", "evaluate", "--checkpoint", str(setup["checkpoint"]), "--data",
                 str(setup["data"]), "--split", "test", "--camera", CAMERA, "--sequence-length", L, "--batch-size",
                 "1", "--start-from-zero", "--confidence-threshold", "0.01", "--predictions", str(preds_dir),
                 "--out", str(tmp_path / "metrics.json")]) == 0
    assert predict(setup, "--confidence-threshold", "0.01", "--out", str(out)) == 0
    got = np.load(out, allow_pickle=False)
    expected = np.load(preds_dir / f"{SEQ}.npy", allow_pickle=False)
    assert got.dtype == PROPHESEE_BBOX_DTYPE and len(expected) > 0
    assert json.loads((tmp_path / "metrics.json").read_text())["num_detections"] == len(expected)
    label_times = np.unique(expected["t"])
    at_labels = got[np.isin(got["t"], label_times)]
    assert len(at_labels) == len(expected)
    for t in label_times:
        assert_same_boxes(at_labels[at_labels["t"] == t], expected[expected["t"] == t])
    assert len(np.unique(got["t"])) > len(label_times)          # detections at every representation
    assert np.all(np.diff(got["t"].astype(np.int64)) >= 0)


def test_every_us_keeps_the_label_grid_and_a_video_is_written(setup, tmp_path):
    out, video = tmp_path / "boxes.npy", tmp_path / "pred.mp4"
    assert predict(setup, "--every-us", str(LABEL_PERIOD_US), "--out", str(out), "--video", str(video)) == 0
    got = np.load(out, allow_pickle=False)
    assert len(got) and np.all(got["t"].astype(np.int64) % LABEL_PERIOD_US == 0)
    written = [p for p in tmp_path.iterdir() if p.stem == "pred"]
    assert len(written) == 1 and written[0].stat().st_size > 0


def test_existing_output_needs_overwrite(setup, tmp_path, caplog):
    out = tmp_path / "boxes.npy"
    out.write_bytes(b"keep me")
    assert predict(setup, "--out", str(out)) == 1
    assert "pass --overwrite" in caplog.text and out.read_bytes() == b"keep me"
    assert predict(setup, "--out", str(out), "--overwrite") == 0
    assert np.load(out, allow_pickle=False).dtype == PROPHESEE_BBOX_DTYPE


def test_a_model_for_another_frame_size_is_refused(setup, tmp_path, caplog):
    other = write_confident_checkpoint(tmp_path / "other.ckpt", hw=(32, 48))
    assert leod(["--no-progress", "predict", "--checkpoint", str(other), "--recording", str(setup["recording"]),
                 "--camera", CAMERA, "--out", str(tmp_path / "b.npy")]) == 1
    assert "frames are (64, 96) but the model was built for (32, 48)" in caplog.text
    assert not (tmp_path / "b.npy").exists()


def test_a_1mpx_recording_is_read_at_half_resolution_on_the_nominal_grid(tmp_path):
    """gen4: no fixed label period (RVT derives it from the labels), so the grid is the nominal 100 ms; frames are
    the half-size ``_ds2_nearest`` ones, and boxes go back to sensor pixels."""
    from leod_core.data.formats import RawEvents
    from leod_core.data.recordings import write_recording
    from leod_core.models.predict import to_sensor_pixels

    rng = np.random.default_rng(0)
    count = 3_000
    events = RawEvents(x=rng.integers(0, 1280, count), y=rng.integers(0, 720, count), p=rng.integers(0, 2, count),
                       t=np.sort(rng.integers(0, 450_000, count)), height=720, width=1280)
    path = tmp_path / "drive_td.dat"
    write_recording(path, events, "dat")
    reprs = RecordingRepresentations(path, PRESETS["gen4"])
    assert reprs.name == "drive" and reprs.frame_hw == (360, 640)
    assert reprs.timestamps_us.tolist() == list(range(100_000, 450_000, 50_000))
    (idx, frames), = list(reprs.iter_chunks(0, reprs.num_reprs, reprs.num_reprs))
    assert frames.shape == (reprs.num_reprs, 20, 360, 640) and frames.any()
    boxes = np.zeros(1, dtype=PROPHESEE_BBOX_DTYPE)
    boxes["x"], boxes["y"], boxes["w"], boxes["h"], boxes["t"] = 10.5, 20.0, 30.0, 40.0, 7
    scaled = to_sensor_pixels(boxes, downsampled_by_2=True)
    assert scaled[["x", "y", "w", "h"]].tolist() == [(21.0, 40.0, 60.0, 80.0)] and scaled["t"][0] == 7
    assert to_sensor_pixels(boxes, downsampled_by_2=False)[0] == boxes[0]
