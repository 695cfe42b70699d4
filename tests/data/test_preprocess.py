"""Preprocessing: golden output of RVT's script, hand-placed events, label-frame timing, filters, bad input."""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the Blosc filter for plain h5py reads)
import numpy as np
import pytest
import torch

from leod_core.cli import main as leod
from leod_core.data import formats
from leod_core.data.formats import FormatError, SequencePaths
from leod_core.data.preprocess import (PRESETS, BoxFilterConfig, derive_label_period_us, filter_boxes,
                                       plan_sequence, preprocess_dataset, repr_timestamps)
from builders import downsample_by_2_nearest
from leod_core.data.representation import stacked_histogram

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "preprocess"
GEN1 = PRESETS["gen1"]


def boxes(rows: list[tuple]) -> np.ndarray:
    """Prophesee boxes from (t, x, y, w, h, class_id) tuples."""
    out = np.zeros(len(rows), dtype=formats.PROPHESEE_BBOX_DTYPE)
    for i, (t, x, y, w, h, c) in enumerate(rows):
        out[i] = (t, x, y, w, h, c, i, 1.0)
    return out


# ------------------------------------------------------------------------------------------- golden
@pytest.fixture(scope="module")
def golden_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden") / "gen1"
    assert leod(["--no-progress", "preprocess", "--raw", str(GOLDEN / "raw"), "--out", str(out),
                 "--preset", "gen1", "--workers", "2"]) == 0
    return out


def expected_files() -> list[Path]:
    return sorted(p.relative_to(GOLDEN / "expected") for p in (GOLDEN / "expected").rglob("*") if p.is_file())


def test_golden_layout_has_the_same_files(golden_out):
    written = sorted(p.relative_to(golden_out) for p in golden_out.rglob("*")
                     if p.is_file() and p.name != "preprocess_summary.json")
    assert written == expected_files()
    assert len(written) == 15


@pytest.mark.parametrize("rel", [p for p in expected_files() if p.suffix in (".npy", ".npz")], ids=str)
def test_golden_arrays_match(golden_out, rel):
    expected, got = load_arrays(GOLDEN / "expected" / rel), load_arrays(golden_out / rel)
    assert expected.keys() == got.keys()
    for key in expected:
        assert got[key].dtype == expected[key].dtype, key
        np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{rel}:{key}")


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".npy":
        return {"": np.load(path, allow_pickle=False)}
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.parametrize("rel", [p for p in expected_files() if p.suffix == ".h5"], ids=str)
def test_golden_hdf5_matches_with_plain_h5py(golden_out, rel):
    with h5py.File(GOLDEN / "expected" / rel, "r") as exp, h5py.File(golden_out / rel, "r") as got:
        assert list(got.keys()) == ["data"]
        e, g = exp["data"], got["data"]
        assert g.dtype == np.uint8 and g.ndim == 4 and g.shape[1:] == (20, 240, 304)
        assert (g.shape, g.chunks, g.maxshape) == (e.shape, e.chunks, e.maxshape)
        assert g.chunks == (1, 20, 240, 304)
        assert "32001" in g._filters and g._filters == e._filters
        np.testing.assert_array_equal(g[()], e[()])


def test_preprocessed_labels_read_back_independently(golden_out):
    with np.load(golden_out / "train/seqA/labels_v2/labels.npz", allow_pickle=False) as npz:
        labels, idx = npz["labels"], npz["objframe_idx_2_label_idx"]
    assert labels.dtype.names == ("t", "x", "y", "w", "h", "class_id", "track_id", "class_confidence")
    assert idx.dtype == np.int64 and idx[0] == 0 and np.all(np.diff(idx) >= 0)
    assert np.all(labels["t"] >= 100_000)
    assert np.all(labels["x"] + labels["w"] <= 303) and np.all(labels["y"] + labels["h"] <= 239)


# -------------------------------------------------------------------------------- stacked histogram
def test_hand_placed_events_land_in_expected_bins_and_channels():
    # window from t=1000 to t=2000: bin = floor((t - 1000) / 1000 * 10), clamped to 9
    x = np.array([0, 1, 1, 2, 3], dtype=np.int64)
    y = np.array([0, 0, 0, 1, 2], dtype=np.int64)
    p = np.array([0, 1, 1, 0, 1], dtype=np.int64)
    t = np.array([1000, 1099, 1100, 1550, 2000], dtype=np.int64)
    hist = stacked_histogram(x, y, p, t, height=3, width=4, nbins=10, count_cutoff=10)
    assert hist.shape == (20, 3, 4) and hist.dtype == np.uint8
    expected = np.zeros_like(hist)
    expected[0, 0, 0] = 1           # p=0, bin 0
    expected[10 + 0, 0, 1] = 1      # p=1, bin 0 (t=1099 -> 0.99)
    expected[10 + 1, 0, 1] = 1      # p=1, bin 1 (t=1100 -> 1.0)
    expected[5, 1, 2] = 1           # p=0, bin 5
    expected[10 + 9, 2, 3] = 1      # last event: bin 10 clamped to 9
    np.testing.assert_array_equal(hist, expected)


def test_counts_clip_at_cutoff_and_wrap_like_uint8():
    n_hot, n_wrap = 37, 258           # 258 events wrap to 2 in RVT's uint8 accumulation
    x = np.array([0] * n_hot + [1] * n_wrap, dtype=np.int64)
    y = np.zeros_like(x)
    p = np.ones_like(x)
    t = np.zeros_like(x)                # one timestamp: span 0 -> every event in bin 0
    hist = stacked_histogram(x, y, p, t, height=1, width=2, nbins=10, count_cutoff=10)
    assert hist[10, 0, 0] == 10 and hist[10, 0, 1] == 2
    assert hist.sum() == 12


def test_empty_window_gives_zeros():
    empty = np.zeros(0, dtype=np.int64)
    hist = stacked_histogram(empty, empty, empty, empty, 2, 3, nbins=10, count_cutoff=10)
    assert hist.shape == (20, 2, 3) and not hist.any()


def test_downsample_matches_torch_nearest_exact():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 11, size=(3, 20, 14, 22), dtype=np.uint8)
    expected = torch.nn.functional.interpolate(torch.from_numpy(frames), scale_factor=0.5, mode="nearest-exact")
    np.testing.assert_array_equal(downsample_by_2_nearest(frames), expected.numpy())


# --------------------------------------------------------------------------- label frames and timing
def test_label_frames_map_to_expected_representation_indices():
    # 50 ms: before the 100 ms alignment -> dropped; 551.5 ms: 1.5 ms jitter accepted;
    # 700 ms: not a whole number of 250 ms periods after 551.5 ms -> rejected; 1051.5 ms: two periods later.
    rows = [(50_000, 10, 10, 40, 40, 0), (300_000, 10, 10, 40, 40, 0), (551_500, 12, 10, 40, 40, 1),
            (700_000, 14, 10, 40, 40, 0), (1_051_500, 16, 10, 40, 40, 0)]
    plan = plan_sequence(boxes(rows), "val", 240, 304, GEN1, Path("seq_bbox.npy"))
    np.testing.assert_array_equal(plan.label_timestamps_us, [300_000, 551_500, 1_051_500])
    # 100..250 ms every 50 ms (4 reprs), then 2 per 250 ms period: 300, 425.75, 551.5, 676.5, 801.5, 926.5, 1051.5
    np.testing.assert_array_equal(plan.repr_timestamps_us,
                                  [100_000, 150_000, 200_000, 250_000, 300_000, 425_750, 551_500,
                                   676_500, 801_500, 926_500, 1_051_500])
    np.testing.assert_array_equal(plan.objframe_idx_2_repr_idx, [4, 6, 10])
    np.testing.assert_array_equal(plan.labels.objframe_idx_2_label_idx, [0, 1, 2])
    assert plan.labels.frame(1)["class_id"][0] == 1


def test_single_label_frame_has_history_up_to_it():
    ts = repr_timestamps(np.array([250_000]), [], 50_000)
    np.testing.assert_array_equal(ts, [100_000, 150_000, 200_000, 250_000])


def test_gen4_label_period_from_label_rate():
    at_60hz = np.arange(0, 2_000_000, 16_667)
    assert derive_label_period_us(at_60hz, Path("x")) == 6 * 16_667
    at_30hz = np.arange(0, 2_000_000, 33_333)
    assert derive_label_period_us(at_30hz, Path("x")) == 3 * 33_333
    with pytest.raises(FormatError, match="x: label rate is 4 Hz"):
        derive_label_period_us(np.arange(0, 2_000_000, 250_000), Path("x"))


def test_filters_crop_size_class_and_huge_boxes():
    rows = [(1, -10, 5, 40, 40, 0),       # cropped at the left edge to w=30
            (1, 290, 200, 40, 60, 1),     # cropped to 13 x 39
            (1, 10, 10, 8, 40, 0),        # side 8 < 10: dropped by the Prophesee filter
            (1, 0, 0, 280, 50, 0),        # wider than 0.9 * 304 = 273: dropped on train only
            (1, 10, 10, 30, 30, 5)]       # class 5: dropped only when max_class_id = 2
    train = filter_boxes(boxes(rows), "train", 240, 304, GEN1.box_filter)
    val = filter_boxes(boxes(rows), "val", 240, 304, GEN1.box_filter)
    assert train["track_id"].tolist() == [0, 1, 4]
    assert val["track_id"].tolist() == [0, 1, 3, 4]
    np.testing.assert_allclose(train[["x", "w"]].tolist()[:2], [(0, 30), (290, 13)])
    assert train["h"][1] == 39
    gen4_like = dataclasses.replace(GEN1.box_filter, max_class_id=2, apply_prophesee_filter=False)
    kept = filter_boxes(boxes(rows), "val", 240, 304, gen4_like)
    assert kept["track_id"].tolist() == [0, 1, 2, 3]   # conservative filter keeps side 8 >= 5


# ------------------------------------------------------------------------------- dataset-level runs
def copy_golden_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    shutil.copytree(GOLDEN / "raw", raw)
    return raw


def test_rerun_skips_complete_sequences(tmp_path):
    raw, out = copy_golden_raw(tmp_path), tmp_path / "out"
    first = preprocess_dataset(raw, out, GEN1, progress=False)
    assert first["splits"]["train"] == {"written": ["seqA"]}
    h5 = SequencePaths(out / "train/seqA").ev_repr_file(False)
    mtime = h5.stat().st_mtime_ns
    second = preprocess_dataset(raw, out, GEN1, progress=False)
    assert second["splits"]["train"] == {"skipped": ["seqA"]}
    assert h5.stat().st_mtime_ns == mtime


def test_sequence_without_labels_is_not_written(tmp_path, caplog):
    raw, out = copy_golden_raw(tmp_path), tmp_path / "out"
    formats.write_raw_boxes(raw / "val/seqB_bbox.npy", boxes([(300_000, 10, 10, 4, 4, 0)]))
    with caplog.at_level(logging.WARNING):
        summary = preprocess_dataset(raw, out, GEN1, progress=False)
    assert summary["splits"]["val"] == {"no-labels": ["seqB"]}
    assert not (out / "val/seqB").exists()
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]     # once, with the count
    assert warning.message.startswith("1 of 3 sequences have no labels left after filtering and were not written")
    assert warning.message.endswith("val/seqB_bbox.npy")


def test_gen4_style_writes_downsampled_file(tmp_path):
    raw, out = copy_golden_raw(tmp_path), tmp_path / "out"
    for split_dir in raw.iterdir():
        for f in split_dir.glob("*_td.dat.h5"):
            f.rename(f.with_name(f.name.replace("_td.dat.h5", "_td.h5")))
    cfg = dataclasses.replace(GEN1, gen4_style_names=True, downsampled_by_2=True)
    preprocess_dataset(raw, out, cfg, progress=False)
    seq = SequencePaths(out / "train/seqA")
    small = formats.read_event_repr(seq.ev_repr_file(True))
    full = formats.read_event_repr(GOLDEN / "expected/train/seqA" / seq.ev_repr_file(False).relative_to(seq.root))
    assert small.shape == (15, 20, 120, 152)
    np.testing.assert_array_equal(small, downsample_by_2_nearest(full))


def test_truncated_raw_hdf5_is_an_error_naming_the_file(tmp_path):
    raw = copy_golden_raw(tmp_path)
    events = raw / "test/seqC_td.dat.h5"
    events.write_bytes(events.read_bytes()[:2000])
    with pytest.raises(FormatError, match="seqC_td.dat.h5: not a readable HDF5 file"):
        preprocess_dataset(raw, tmp_path / "out", GEN1, progress=False)


def test_missing_events_file_is_an_error(tmp_path):
    raw = copy_golden_raw(tmp_path)
    (raw / "val/seqB_td.dat.h5").unlink()
    with pytest.raises(FormatError, match="seqB_td.dat.h5: raw events of seqB_bbox.npy are missing"):
        preprocess_dataset(raw, tmp_path / "out", GEN1, progress=False)


def test_unsorted_raw_boxes_are_an_error(tmp_path):
    raw = copy_golden_raw(tmp_path)
    formats.write_raw_boxes(raw / "val/seqB_bbox.npy", boxes([(550_000, 1, 1, 40, 40, 0), (300_000, 1, 1, 40, 40, 0)]))
    with pytest.raises(FormatError, match="seqB_bbox.npy: boxes are not sorted by timestamp"):
        preprocess_dataset(raw, tmp_path / "out", GEN1, progress=False)


def test_nan_raw_boxes_are_an_error(tmp_path):
    raw = copy_golden_raw(tmp_path)
    formats.write_raw_boxes(raw / "val/seqB_bbox.npy", boxes([(300_000, np.nan, 1, 40, 40, 0)]))
    with pytest.raises(FormatError, match="seqB_bbox.npy: boxes contain NaN"):
        preprocess_dataset(raw, tmp_path / "out", GEN1, progress=False)


def test_cli_reports_bad_input_and_unknown_config_key(tmp_path, caplog):
    assert leod(["preprocess", "--raw", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 1
    assert "nope/train: raw split directory is missing" in caplog.text
    cfg = tmp_path / "custom.yaml"
    cfg.write_text("box_filter:\n  min_box_dia: 3\n")
    assert leod(["preprocess", "--raw", str(GOLDEN / "raw"), "--out", str(tmp_path / "o"),
                 "--config", str(cfg)]) == 1
    assert "unknown setting 'min_box_dia'" in caplog.text


def test_custom_config_overrides_preset(tmp_path):
    cfg = tmp_path / "custom.yaml"
    cfg.write_text("box_filter:\n  apply_prophesee_filter: false\n")
    out = tmp_path / "o"
    assert leod(["--no-progress", "preprocess", "--raw", str(GOLDEN / "raw"), "--out", str(out),
                 "--config", str(cfg)]) == 0
    labels = formats.read_labels(out / "train/seqA/labels_v2/labels.npz", 240, 304)
    assert len(labels.frame(0)) == 3    # the 8 x 12 box now passes the conservative filter
    assert BoxFilterConfig().min_box_diag == 30.0


def test_unlabeled_grid_is_on_multiples_of_the_label_period():
    """Gen1 (fixed 250 ms period) and 1Mpx (period derived from labels; without labels its nominal 100 ms)."""
    from leod_core.data.preprocess import NoLabelsError, plan_unlabeled_sequence, unlabeled_label_frames

    assert unlabeled_label_frames((30_000, 1_010_000), GEN1).tolist() == [250_000, 500_000, 750_000, 1_000_000]
    assert unlabeled_label_frames((260_000, 760_000), GEN1).tolist() == [500_000, 750_000]
    gen4 = PRESETS["gen4"]
    assert gen4.label_period_us is None
    assert unlabeled_label_frames((0, 450_000), gen4).tolist() == [100_000, 200_000, 300_000, 400_000]
    plan = plan_unlabeled_sequence((0, 450_000), gen4, Path("rec.raw"))
    assert plan.repr_timestamps_us.tolist() == list(range(100_000, 450_000, 50_000))
    assert plan.objframe_idx_2_repr_idx.tolist() == [0, 2, 4, 6]
    for time_range in (None, (0, 90_000)):
        with pytest.raises(NoLabelsError):
            unlabeled_label_frames(time_range, gen4)
    with pytest.raises(NoLabelsError):
        unlabeled_label_frames((0, 10**6), dataclasses.replace(gen4, unlabeled_label_period_us=None))
