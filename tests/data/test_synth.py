"""Tests of leod_core.data.synth: the synthetic event camera and its RVT raw-layout output."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from leod_core.data import synth
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, check_boxes, raw_paths, read_raw_boxes, read_raw_events
from leod_core.data.synth import CAR, PEDESTRIAN, SynthConfig, generate_dataset, generate_sequence

SMALL = SynthConfig(height=32, width=48, duration_s=1.5, num_train=1, num_val=1, num_test=1,
                    car_width_px=(10.0, 18.0), ped_height_px=(10.0, 16.0), initial_objects_mean=2.0)
#: A busier, longer scene at the default resolution for label statistics.
BUSY = SynthConfig(duration_s=6.0, initial_objects_mean=4.0, arrival_rate_hz=1.0)
EMPTY = dataclasses.replace(SMALL, initial_objects_mean=0.0, arrival_rate_hz=0.0)


def _same(a, b) -> bool:
    events_a, boxes_a = a
    events_b, boxes_b = b
    return (all(np.array_equal(getattr(events_a, k), getattr(events_b, k)) for k in "xypt")
            and boxes_a.tobytes() == boxes_b.tobytes())


# ----------------------------------------------------------------------------------------------- events
def test_same_seed_same_sequence_other_seed_or_index_differs():
    first = generate_sequence(SMALL, "train", 0)
    assert _same(first, generate_sequence(SMALL, "train", 0))
    assert not _same(first, generate_sequence(dataclasses.replace(SMALL, seed=1), "train", 0))
    assert not _same(first, generate_sequence(SMALL, "train", 1))
    assert not _same(first, generate_sequence(SMALL, "val", 0))


def test_events_are_sorted_inside_the_sensor_and_binary():
    events, _ = generate_sequence(SMALL, "train", 0)
    assert len(events.t) > 100
    assert events.t.dtype == np.int64 and np.all(np.diff(events.t) >= 0)
    assert events.t[0] >= 0 and events.t[-1] <= SMALL.duration_us
    assert events.x.min() >= 0 and events.x.max() < SMALL.width
    assert events.y.min() >= 0 and events.y.max() < SMALL.height
    assert set(np.unique(events.p).tolist()) == {0, 1}
    assert (events.height, events.width) == (SMALL.height, SMALL.width)
    # crossing times are interpolated inside the rendering step, not snapped to its ends
    assert np.mean(events.t % SMALL.time_step_us != 0) > 0.5


def test_events_concentrate_on_objects():
    config = dataclasses.replace(BUSY, duration_s=3.0)
    events, boxes = generate_sequence(config, "test", 0)
    window, margin = 50_000, 3
    inside = area = 0
    for t in np.unique(boxes["t"]):
        in_window = (events.t > t - window) & (events.t <= t)
        mask = np.zeros((config.height, config.width), bool)
        for b in boxes[boxes["t"] == t]:
            x0, y0 = int(max(b["x"] - margin, 0)), int(max(b["y"] - margin, 0))
            mask[y0:int(b["y"] + b["h"]) + margin + 1, x0:int(b["x"] + b["w"]) + margin + 1] = True
        inside += int(mask[events.y[in_window], events.x[in_window]].sum())
        area += int(mask.sum())
    rate_inside = inside / (area * window * 1e-6)  # events per pixel per second
    assert rate_inside > 20 * config.noise_rate_hz


def test_a_bright_square_moving_right_fires_on_at_its_front_and_off_at_its_back():
    config = dataclasses.replace(SMALL, walk_frames=1, duration_s=0.5)
    background = np.full((config.height, config.width), 0.4)
    speed_px_s, side, frames = 20.0, 10, config.duration_us // config.time_step_us + 1
    scene = _square_scene(config, [(5.0, 10.0)], side)
    ox = scene.ox + speed_px_s * np.arange(frames)[:, None] * config.time_step_us * 1e-6
    threshold = np.full(background.shape, config.contrast_threshold)
    rows = synth._simulate(background, scene.prem, scene.alpha, scene.frame, ox, scene.oy, scene.order,
                           threshold, config.time_step_us)  # intensity 1 over 0.4
    t, x, p = rows[:, 0], rows[:, 1], rows[:, 3]
    assert x[p == 1].mean() > x[p == 0].mean() + side / 2
    # each edge pixel swept by the square crosses log(1 / 0.4) / C thresholds, both ways
    travelled = speed_px_s * config.duration_s
    expected = 2 * side * travelled * np.log(1 / 0.4) / config.contrast_threshold
    assert 0.8 * expected < len(rows) < 1.2 * expected
    assert np.all((t >= 0) & (t <= config.duration_us))


def test_static_scene_without_noise_emits_no_events_or_boxes():
    config = dataclasses.replace(EMPTY, noise_rate_hz=0.0, hot_pixels=0)
    events, boxes = generate_sequence(config, "train", 0)
    assert len(events.t) == 0 and len(boxes) == 0


def test_noise_rate_matches_the_configuration():
    config = dataclasses.replace(EMPTY, noise_rate_hz=2.0, hot_pixels=0, duration_s=2.0)
    events, _ = generate_sequence(config, "train", 0)
    expected = config.noise_rate_hz * config.height * config.width * config.duration_s
    assert abs(len(events.t) - expected) < 0.05 * expected
    assert abs(events.p.mean() - 0.5) < 0.05
    assert abs(np.mean(events.t < config.duration_us / 2) - 0.5) < 0.05


def test_hot_pixels_fire_at_their_rate():
    config = dataclasses.replace(EMPTY, noise_rate_hz=0.0, hot_pixels=3, hot_pixel_rate_hz=100.0)
    events, _ = generate_sequence(config, "train", 0)
    assert len(np.unique(events.y.astype(int) * config.width + events.x)) <= 3
    expected = 3 * config.hot_pixel_rate_hz * config.duration_s
    assert abs(len(events.t) - expected) < 5 * np.sqrt(expected)


# ------------------------------------------------------------------------------------------------ boxes
@pytest.fixture(scope="module")
def busy_boxes() -> np.ndarray:
    return np.concatenate([generate_sequence(BUSY, "train", i)[1] for i in range(2)])


def test_label_frames_every_250_ms_from_250_ms():
    boxes = generate_sequence(BUSY, "train", 0)[1]
    assert boxes.dtype == PROPHESEE_BBOX_DTYPE
    assert np.all(np.diff(boxes["t"].astype(np.int64)) >= 0)
    grid = np.arange(BUSY.label_period_us, BUSY.duration_us, BUSY.label_period_us)
    frames = np.unique(boxes["t"])
    assert set(frames.tolist()) <= set(grid.tolist()) and len(frames) >= 0.8 * len(grid)
    assert np.all(boxes["class_confidence"] == 1.0)


def test_boxes_lie_inside_the_frame_with_positive_size(busy_boxes):
    check_boxes("synthetic", busy_boxes, BUSY.height, BUSY.width)
    assert np.all(busy_boxes["w"] > 0) and np.all(busy_boxes["h"] > 0)
    assert np.mean(np.minimum(busy_boxes["w"], busy_boxes["h"]) >= 5) > 0.7


def test_both_classes_with_their_aspect(busy_boxes):
    assert set(np.unique(busy_boxes["class_id"]).tolist()) == {CAR, PEDESTRIAN}
    aspect = busy_boxes["w"] / busy_boxes["h"]
    assert np.median(aspect[busy_boxes["class_id"] == CAR]) > 1.3
    assert np.median(aspect[busy_boxes["class_id"] == PEDESTRIAN]) < 0.8


def test_track_ids_are_unique_per_frame_and_keep_their_class():
    boxes = generate_sequence(BUSY, "val", 0)[1]
    for t in np.unique(boxes["t"]):
        ids = boxes["track_id"][boxes["t"] == t]
        assert len(np.unique(ids)) == len(ids)
    for track in np.unique(boxes["track_id"]):
        assert len(np.unique(boxes["class_id"][boxes["track_id"] == track])) == 1
    lengths = np.bincount(boxes["track_id"])
    assert lengths.max() >= 4  # objects are followed over several label frames


def _square_scene(config: SynthConfig, positions: list[tuple[float, float]], side: int) -> synth._Scene:
    """Opaque ``side``-px squares at fixed top-left ``positions`` (box coordinates), first one at the back."""
    n, frames = len(positions), config.duration_us // config.time_step_us + 1
    sprite = np.zeros((side + 2, side + 2))
    sprite[1:-1, 1:-1] = 1.0
    stack = np.broadcast_to(sprite, (n, config.walk_frames, *sprite.shape)).copy()
    ox = np.tile([x - synth._SHAPE_ORIGIN for x, _ in positions], (frames, 1))
    oy = np.tile([y - synth._SHAPE_ORIGIN for _, y in positions], (frames, 1))
    return synth._Scene(prem=stack, alpha=stack.copy(), frame=np.zeros((frames, n), np.int64), ox=ox, oy=oy,
                        size=np.full((n, 2), float(side)), order=np.arange(n), class_id=np.zeros(n, np.uint32))


def test_occluded_and_clipped_objects_get_their_visible_box():
    scene = _square_scene(SMALL, [(10.0, 10.0), (15.0, 10.0), (40.0, -4.0), (30.0, 20.0), (31.0, 20.0)], side=10)
    boxes = {j: (x, y, w, h) for j, x, y, w, h in synth._visible_boxes(SMALL, scene, 0)}
    # unoccluded boxes are exact; visible extents are known to the pixel (half a pixel each side)
    assert boxes[0] == pytest.approx((10.0, 10.0, 5.0, 10.0), abs=1.0)  # right half hidden behind object 1
    assert boxes[1] == pytest.approx((15.0, 10.0, 10.0, 10.0))
    assert boxes[2] == pytest.approx((40.0, 0.0, SMALL.width - 1 - 40.0, 6.0))  # clipped by the frame
    assert 3 not in boxes  # almost fully covered by object 4
    assert boxes[4] == pytest.approx((31.0, 20.0, 10.0, 10.0))


def test_pedestrians_walk_and_cars_do_not():
    rng = np.random.default_rng(0)
    car_prem, car_alpha = synth._sprite(SMALL, rng, CAR, 20.0, 10.0)
    ped_prem, ped_alpha = synth._sprite(SMALL, rng, PEDESTRIAN, 8.0, 18.0)
    assert np.all(car_alpha == car_alpha[0]) and not np.all(ped_alpha == ped_alpha[0])
    assert car_alpha.shape[1:] == (12, 22) and ped_alpha.shape[1:] == (20, 10)
    assert car_alpha[0, 1:-1, 1:-1].mean() > 0.6 and ped_alpha[0, 1:-1, 1:-1].mean() > 0.4


# ---------------------------------------------------------------------------------------------- dataset
def test_generate_dataset_writes_the_raw_layout(tmp_path):
    summary = generate_dataset(tmp_path, SMALL, workers=1, progress=False)
    total = 0
    for split in synth.SPLITS:
        events, boxes = generate_sequence(SMALL, split, 0)
        events_path, boxes_path = raw_paths(tmp_path / split, f"synth_{split}_000")
        with h5py.File(events_path, "r") as h5:
            group = h5["events"]
            assert {"x", "y", "p", "t", "height", "width"} <= set(group)
            for key in "xypt":
                assert np.array_equal(group[key][()], getattr(events, key))
            assert (int(group["height"][()]), int(group["width"][()])) == (SMALL.height, SMALL.width)
        raw_boxes = np.load(boxes_path, allow_pickle=False)
        assert raw_boxes.dtype == PROPHESEE_BBOX_DTYPE and raw_boxes.tobytes() == boxes.tobytes()
        read = read_raw_events(events_path, default_hw=(1, 1))
        assert (read.height, read.width) == (SMALL.height, SMALL.width) and np.array_equal(read.t, events.t)
        assert read_raw_boxes(boxes_path).tobytes() == boxes.tobytes()
        stats = summary["splits"][split]
        assert (stats["sequences"], stats["events"], stats["boxes"]) == (1, len(events.t), len(boxes))
        total += events_path.stat().st_size + boxes_path.stat().st_size
    assert summary["total_bytes"] == total


def test_parallel_generation_writes_identical_files(tmp_path):
    config = dataclasses.replace(SMALL, num_train=2, num_val=0, num_test=0, duration_s=1.0)
    serial = generate_dataset(tmp_path / "serial", config, workers=1, progress=False)
    parallel = generate_dataset(tmp_path / "parallel", config, workers=2, progress=False)
    assert serial == parallel and serial["splits"]["train"]["sequences"] == 2
    for i in range(2):
        for a, b in zip(raw_paths(tmp_path / "serial" / "train", f"synth_train_{i:03d}"),
                        raw_paths(tmp_path / "parallel" / "train", f"synth_train_{i:03d}")):
            assert a.read_bytes() == b.read_bytes()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="split"):
        generate_sequence(SMALL, "training", 0)
    with pytest.raises(ValueError, match="time_step_us"):
        SynthConfig(time_step_us=3000)
