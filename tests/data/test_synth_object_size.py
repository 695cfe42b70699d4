"""``leod synth`` object size and count options: Gen1-sized synthetic data keeps its boxes through Gen1's filters."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from leod_core.cli import main
from leod_core.data.formats import SPLITS, raw_paths, read_raw_boxes
from leod_core.data.preprocess import PRESETS
from leod_core.data.preprocess import filter_boxes as preprocess_filter
from leod_core.data.synth import SUMMARY_FILE, SynthConfig, sequence_name
from leod_core.data.synth_scene import _scene
from leod_core.evaluation.detection import EvalProtocol
from leod_core.evaluation.detection import filter_boxes as evaluation_filter

GEN1_HW = (240, 304)  # Gen1 sensor rows, columns (px)
#: Short Gen1-sized sequences: label frames at 0.25 s steps, three of them after evaluation's first 0.5 s.
GEN1_SIZED = ["--height", str(GEN1_HW[0]), "--width", str(GEN1_HW[1]), "--duration-s", "1.5",
              "--num-train", "4", "--num-val", "2", "--num-test", "2"]
#: Objects large enough for Gen1's size filter, at least two of them in every sequence.
GEN1_OBJECTS = ["--min-object-px", "32", "--max-object-px", "96", "--min-initial-objects", "2"]


def _boxes_left_by_gen1_filters(root) -> dict[str, tuple[int, int]]:
    """Per sequence: boxes kept by (preprocessing's, evaluation's) Gen1 filter, at the Gen1 sensor size."""
    protocol = EvalProtocol.for_camera("gen1")
    box_filter = PRESETS["gen1"].box_filter
    summary = json.loads((root / SUMMARY_FILE).read_text())
    kept = {}
    for split in SPLITS:
        for index in range(summary["splits"][split]["sequences"]):
            name = sequence_name(split, index)
            boxes = read_raw_boxes(raw_paths(root / split, name)[1])
            kept[name] = (len(preprocess_filter(boxes, split, *GEN1_HW, box_filter)),
                          len(evaluation_filter(boxes, protocol)))
    return kept


def _synth(tmp_path, name: str, options: list[str]):
    root = tmp_path / name
    assert main(["--no-progress", "synth", "--out", str(root), *GEN1_SIZED, *options]) == 0
    return root


def test_gen1_sized_objects_keep_boxes_in_every_sequence(tmp_path):
    kept = _boxes_left_by_gen1_filters(_synth(tmp_path, "sized", GEN1_OBJECTS))
    assert len(kept) == 8
    assert all(pre > 0 and ev > 0 for pre, ev in kept.values()), kept


def test_default_objects_lose_every_box_of_some_gen1_sized_sequence(tmp_path):
    """The same sequences with today's default sizes: the test above can fail."""
    kept = _boxes_left_by_gen1_filters(_synth(tmp_path, "default", []))
    assert any(ev == 0 for _, ev in kept.values()), kept


def test_options_reach_the_configuration(tmp_path):
    one_short_sequence_each = ["--duration-s", "0.5", "--num-train", "1", "--num-val", "1", "--num-test", "1"]
    root = _synth(tmp_path, "options", [*GEN1_OBJECTS, "--initial-objects-mean", "3", "--arrival-rate-hz", "0.25",
                                        *one_short_sequence_each])
    config = json.loads((root / SUMMARY_FILE).read_text())["config"]
    assert config["car_width_px"] == config["ped_height_px"] == [32.0, 96.0]
    assert (config["min_initial_objects"], config["initial_objects_mean"], config["arrival_rate_hz"]) == (2, 3.0, 0.25)


def test_object_size_bounds_replace_each_class_range():
    default = SynthConfig()
    assert default.with_object_size() == default  # no option: today's configuration, so today's output
    only_max = default.with_object_size(max_px=40)
    assert (only_max.car_width_px, only_max.ped_height_px) == ((default.car_width_px[0], 40.0),
                                                               (default.ped_height_px[0], 40.0))
    with pytest.raises(ValueError, match="car_width_px"):
        default.with_object_size(min_px=default.car_width_px[1] + 1)  # min above the default max
    with pytest.raises(ValueError, match="min_initial_objects"):
        SynthConfig(min_initial_objects=-1)


def test_min_initial_objects_raises_the_poisson_draw():
    config = dataclasses.replace(SynthConfig(duration_s=0.5), initial_objects_mean=0.0, arrival_rate_hz=0.0,
                                 min_initial_objects=3)
    scene = _scene(config, np.random.default_rng(0))
    assert np.count_nonzero(~np.isnan(scene.ox[0])) == config.min_initial_objects
