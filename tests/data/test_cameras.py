"""The camera registry: LEOD/RVT facts of the built-in cameras, cameras from YAML files, the old per-camera tables
as views of the registry, and a scan that keeps camera constants out of every other module."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from leod_core.data import cameras
from leod_core.data.cameras import (CAMERA_FILES_ENV, BoxFilterConfig, UnknownCameraError, camera_names,
                                    get_camera, load_camera_file, read_camera_file, reference_camera)

REPO = Path(__file__).resolve().parents[2]

#: A 3-class camera as a user would add it (only the required keys and what differs from Gen1's defaults).
MYCAM = {
    "classes": ["car", "truck", "bicycle"],
    "sensor_height": 480, "sensor_width": 640,
    "downsampled_by_2": True,
    "label_filter": {"apply_prophesee_filter": False, "max_class_id": 2},
    "eval_min_box_diag": 40, "eval_min_box_side": 12,
    "pseudo_obj_thresh": [0.6, 0.5, 0.3], "pseudo_cls_thresh": 0.5, "soft_ignore_thresh": [0.7, 0.6, 0.35],
    "tflip_offset": -2, "sequence_length": 10, "partition_split_32": 2,
}


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    """Every test starts and ends with the built-in cameras only and no camera file in the environment."""
    monkeypatch.delenv(CAMERA_FILES_ENV, raising=False)
    cameras.clear_registered_cameras()
    yield
    cameras.clear_registered_cameras()


def write_cameras(path: Path, entries: dict) -> Path:
    path.write_text(yaml.safe_dump(entries))
    return path


# ------------------------------------------------------------------------------------------- built-ins
def test_gen1_is_rvts_gen1():
    gen1 = get_camera("gen1")
    assert gen1.classes == ("car", "pedestrian") and gen1.num_classes == 2
    assert (gen1.sensor_height, gen1.sensor_width) == (240, 304) and gen1.frame_hw == (240, 304)
    assert not gen1.downsampled_by_2 and not gen1.raw_td_h5_names and gen1.label_period_us == 250_000
    assert gen1.label_filter.apply_prophesee_filter and gen1.label_filter.max_class_id is None
    assert (gen1.label_filter.min_box_diag, gen1.label_filter.min_box_side) == (30, 10)
    assert (gen1.eval_min_box_diag, gen1.eval_min_box_side) == (30, 10)
    assert gen1.pseudo_obj_thresh == gen1.pseudo_cls_thresh == (0.6, 0.3)     # [car, ped]
    assert gen1.soft_ignore_thresh == (0.7, 0.35)
    assert gen1.tflip_offset == -1 and gen1.partition_split_32 == 1
    assert (gen1.sequence_length, gen1.pseudo_sequence_length, gen1.quality_sequence_length) == (21, 21, 320)


def test_gen4_is_rvts_1mpx_read_downsampled():
    from leod_core.models.loss import expand_class_thresholds
    gen4 = get_camera("gen4")
    assert gen4.classes == ("pedestrian", "two-wheeler", "car") and gen4.num_classes == 3
    assert (gen4.sensor_height, gen4.sensor_width) == (720, 1280)
    assert gen4.downsampled_by_2 and gen4.frame_hw == (360, 640)
    assert gen4.raw_td_h5_names and gen4.label_period_us is None
    assert gen4.label_filter == BoxFilterConfig(apply_prophesee_filter=False, min_box_diag=60, min_box_side=20,
                                                max_class_id=2)
    assert (gen4.eval_min_box_diag, gen4.eval_min_box_side) == (60, 20)
    # LEOD's two-value [car, ped] lists, expanded to [ped, cyc, car] as its config modifier does
    assert gen4.pseudo_obj_thresh == expand_class_thresholds(get_camera("gen1").pseudo_obj_thresh, 3)
    assert gen4.soft_ignore_thresh == expand_class_thresholds(get_camera("gen1").soft_ignore_thresh, 3)
    assert gen4.tflip_offset == -2 and gen4.partition_split_32 == 2
    assert (gen4.sequence_length, gen4.pseudo_sequence_length, gen4.quality_sequence_length) == (5, 10, 128)


def test_synth_is_gen1_like_at_the_generators_size():
    from leod_core.data.synth import SynthConfig
    synth, gen1 = get_camera("synth"), get_camera("gen1")
    assert (synth.sensor_height, synth.sensor_width) == (SynthConfig().height, SynthConfig().width)
    assert synth.classes == gen1.classes and synth.tflip_offset == gen1.tflip_offset
    assert not synth.label_filter.apply_prophesee_filter
    assert (synth.eval_min_box_diag, synth.eval_min_box_side) == (0, 5)


def test_names_and_unknown_camera():
    assert camera_names() == ("gen1", "gen4", "synth")
    with pytest.raises(UnknownCameraError, match=r"unknown camera 'gen3'; known cameras: gen1, gen4, synth"):
        get_camera("gen3")
    assert issubclass(UnknownCameraError, ValueError)
    assert reference_camera(False).name == "gen1" and reference_camera(True).name == "gen4"


def test_old_tables_are_views_of_the_registry():
    from leod_core.data.formats import DATASET_CLASSES
    from leod_core.data.preprocess import PRESETS, PreprocessConfig
    from leod_core.evaluation.detection import CAMERAS, EvalProtocol
    from leod_core.workflow.settings import CAMERA_TRAIN_DEFAULTS, downsampled_by_2
    for name in camera_names():
        camera = get_camera(name)
        assert DATASET_CLASSES[name] == CAMERAS[name].classes == camera.classes
        assert (CAMERAS[name].min_box_diag, CAMERAS[name].min_box_side) == (camera.eval_min_box_diag,
                                                                            camera.eval_min_box_side)
        assert (PRESETS[name].default_height, PRESETS[name].default_width) == (camera.sensor_height,
                                                                               camera.sensor_width)
        assert PRESETS[name].box_filter == camera.label_filter
        assert CAMERA_TRAIN_DEFAULTS[name] == {
            "model": {"num_classes": camera.num_classes, "partition_split_32": camera.partition_split_32},
            "data": {"tflip_offset": camera.tflip_offset, "downsampled_by_2": camera.downsampled_by_2}}
        assert downsampled_by_2(name) == camera.downsampled_by_2
    assert PRESETS["gen1"] == PreprocessConfig()
    assert list(CAMERAS) == list(camera_names()) and "gen3" not in CAMERAS and len(PRESETS) == 3
    with pytest.raises(KeyError, match="gen3"):
        CAMERA_TRAIN_DEFAULTS["gen3"]
    assert EvalProtocol.for_camera("gen4", downsampled_by_2=True).min_box_side == 10


# ---------------------------------------------------------------------------------------------- YAML
def test_a_camera_from_yaml_reaches_every_consumer(tmp_path):
    from leod_core.data.preprocess import PRESETS
    from leod_core.evaluation.detection import EvalProtocol
    from leod_core.pseudo.quality import QualityConfig
    from leod_core.workflow.settings import CAMERA_TRAIN_DEFAULTS
    (mycam,) = load_camera_file(write_cameras(tmp_path / "cams.yaml", {"mycam": MYCAM}))
    assert get_camera("mycam") is mycam and camera_names() == ("gen1", "gen4", "synth", "mycam")
    assert mycam.classes == ("car", "truck", "bicycle") and mycam.frame_hw == (240, 320)
    assert mycam.pseudo_cls_thresh == (0.5, 0.5, 0.5) and mycam.pseudo_obj_thresh == (0.6, 0.5, 0.3)
    assert mycam.label_filter.max_class_id == 2 and mycam.label_filter.min_box_diag == 30   # RVT default kept
    assert mycam.quality_sequence_length == get_camera("gen1").quality_sequence_length    # unset: Gen1's
    assert PRESETS["mycam"].downsampled_by_2 and PRESETS["mycam"].default_width == 640
    protocol = EvalProtocol.for_camera("mycam", downsampled_by_2=True)
    assert (protocol.classes, protocol.min_box_diag, protocol.min_box_side) == (mycam.classes, 20, 6)
    assert QualityConfig.for_dataset("mycam").class_names == mycam.classes
    assert CAMERA_TRAIN_DEFAULTS["mycam"]["model"] == {"num_classes": 3, "partition_split_32": 2}
    assert load_camera_file(tmp_path / "cams.yaml") == (mycam,)     # loading the same file again is harmless


@pytest.mark.parametrize("entries, message", [
    ({"gen1": MYCAM}, r"camera 'gen1' is built in and cannot be redefined"),
    ({"x": {**MYCAM, "colour": 1}}, r"camera 'x': unknown key\(s\) colour"),
    ({"x": {**MYCAM, "name": "y"}}, r"camera 'x': unknown key\(s\) name"),
    ({"x": {k: v for k, v in MYCAM.items() if k != "sensor_width"}}, r"missing required key\(s\) sensor_width"),
    ({"x": {**MYCAM, "sensor_height": "big"}}, r"Camera.sensor_height must be int, got 'big'"),
    ({"x": {**MYCAM, "label_filter": {"min_box_dia": 3}}}, r"x'\.label_filter: unknown setting 'min_box_dia'"),
    ({"x": {**MYCAM, "pseudo_obj_thresh": [0.5, 0.5]}}, r"pseudo_obj_thresh needs one value in \[0, 1\] per class"),
    ({"x": {"classes": ["a", "b", "c"], "sensor_height": 8, "sensor_width": 8}},
     r"give pseudo_cls_thresh, pseudo_obj_thresh, soft_ignore_thresh \(one number, or one per class\)"),
    ({"x": {**MYCAM, "eval_min_box_side": 5}}, r"eval_min_box_side must be >= 0 \(and divisible by 2"),
    ({"x": {**MYCAM, "classes": ["a", "a", "b"]}}, r"classes must be non-empty, unique names"),
    ({"bad name": MYCAM}, r"a name needs letters, digits"),
    ({"x": [1, 2]}, r"camera 'x': expected a mapping of camera settings"),
])
def test_bad_camera_files_are_rejected_naming_file_and_camera(tmp_path, entries, message):
    path = write_cameras(tmp_path / "cams.yaml", entries)
    with pytest.raises(ValueError, match=message) as err:
        load_camera_file(path)
    assert str(path) in str(err.value)
    assert camera_names() == ("gen1", "gen4", "synth")


def test_missing_empty_and_conflicting_files(tmp_path):
    with pytest.raises(ValueError, match="camera file not found"):
        read_camera_file(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ValueError, match="no camera defined"):
        read_camera_file(tmp_path / "empty.yaml")
    load_camera_file(write_cameras(tmp_path / "a.yaml", {"mycam": MYCAM}))
    with pytest.raises(ValueError, match=r"b.yaml: camera 'mycam' is already defined differently by .*a.yaml"):
        load_camera_file(write_cameras(tmp_path / "b.yaml", {"mycam": {**MYCAM, "tflip_offset": -1}}))


def test_environment_variable_is_read_on_first_use(tmp_path, monkeypatch):
    a = write_cameras(tmp_path / "a.yaml", {"cam-a": MYCAM})
    b = write_cameras(tmp_path / "b.yaml", {"cam_b": {**MYCAM, "classes": ["x", "y", "z"]}})
    monkeypatch.setenv(CAMERA_FILES_ENV, f"{a}{os.pathsep}{b}")
    assert get_camera("cam_b").classes == ("x", "y", "z")
    assert camera_names()[-2:] == ("cam-a", "cam_b")
    monkeypatch.setenv(CAMERA_FILES_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ValueError, match=rf"missing.yaml: camera file not found \(listed in \${CAMERA_FILES_ENV}\)"):
        camera_names()


def test_cli_choices_come_from_the_registry(tmp_path, monkeypatch):
    from leod_core.cli import build_parser
    monkeypatch.setenv(CAMERA_FILES_ENV, str(write_cameras(tmp_path / "c.yaml", {"mycam": MYCAM})))
    args = build_parser().parse_args(["evaluate", "--checkpoint", "c", "--data", "d", "--out", "o", "--camera", "mycam"])
    assert args.camera == "mycam"
    args = build_parser().parse_args(["preprocess", "--raw", "r", "--out", "o", "--preset", "mycam"])
    assert args.preset == "mycam"


def test_workflow_config_camera_files(tmp_path):
    from leod_core.workflow.settings import camera_files_env, check_config, experiment_settings, train_job_config
    config = yaml.safe_load((REPO / "workflow_config" / "config.yaml").read_text())
    config["datasets"]["synth"]["camera"] = "mycam"
    with pytest.raises(ValueError, match="datasets.synth: unknown camera 'mycam'"):
        check_config(config)
    path = write_cameras(tmp_path / "cams.yaml", {"mycam": MYCAM})
    config["camera_files"] = [str(path)]
    check_config(config)
    settings = experiment_settings(config, "synth", "wsod", "0.1")
    assert train_job_config(settings, 0)["data"]["tflip_offset"] == -2
    assert camera_files_env(config, {}) == str(path.resolve())
    inherited = str(tmp_path / "other.yaml")
    assert camera_files_env(config, {CAMERA_FILES_ENV: inherited}).split(os.pathsep) == [inherited, str(path.resolve())]


# ------------------------------------------------------------------------------------------------ scan
#: Modules allowed to hold camera constants. cameras.py is the registry. The others are being rewritten in
#: parallel (issue 18) and will ask the registry afterwards; remove each from this list once it does.
EXCLUDED = {
    "leod_core/data/cameras.py",           # the registry itself
}
SENSOR_SIDES = {side for camera in cameras.BUILTIN_CAMERAS.values() if camera.name != "synth"
                for side in (camera.sensor_height, camera.sensor_width)}
CLASS_NAMES = {name for camera in cameras.BUILTIN_CAMERAS.values() for name in camera.classes}


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return [node.value] if isinstance(node, ast.Constant) and isinstance(node.value, str) else []


def camera_constants(source: str) -> list[tuple[int, str]]:
    """(line, what) of each camera constant in Python ``source``: tuples/lists of class names, sensor sides of the
    real cameras as integer literals, comparisons with and dict keys of camera names (docstrings and comments
    are not code and pass)."""
    names, found = set(cameras.BUILTIN_CAMERAS), []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) >= 2:
            values = _strings(node)
            if len(values) == len(node.elts) and set(values) <= CLASS_NAMES:
                found.append((node.lineno, f"class names {tuple(values)}"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and node.value in SENSOR_SIDES:
            found.append((node.lineno, f"sensor size {node.value}"))
        elif isinstance(node, ast.Compare) and any(set(_strings(s)) & names for s in (node.left, *node.comparators)):
            found.append((node.lineno, "comparison with a camera name"))
        elif isinstance(node, ast.Dict) and any(k is not None and set(_strings(k)) & names for k in node.keys):
            found.append((node.lineno, "dict keyed by camera names"))
    return found


def test_the_scan_finds_camera_constants():
    bad = 'A = ("car", "pedestrian")\nB = (720, 1280)\nif camera == "gen4":\n    pass\nC = {"gen1": 1}\n'
    assert sorted(line for line, _ in camera_constants(bad)) == [1, 2, 2, 3, 5]
    assert camera_constants('"""gen1 is 304x240 ("car", "pedestrian")."""\nx = get_camera("gen4")\n') == []


def test_no_camera_constants_outside_the_registry():
    found = []
    for path in sorted((REPO / "leod_core").rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        if relative not in EXCLUDED:
            found += [f"{relative}:{line}: {what}" for line, what in camera_constants(path.read_text())]
    assert not found, "camera constants outside leod_core/data/cameras.py (ask get_camera):\n" + "\n".join(found)


# --------------------------------------------------------------------------------------------- end to end
def leod(*args: str, env: dict) -> None:
    result = subprocess.run([sys.executable, "-m", "leod_core.cli", "--no-progress", *args], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"leod {' '.join(args)} failed:\n{result.stderr[-3000:]}"


@pytest.mark.slow
def test_a_yaml_camera_runs_synth_preprocess_train_evaluate(tmp_path):
    """A camera that exists only in a YAML file (the synthetic sensor with its own class names) through the CLI."""
    camera = {"tinycam": {"classes": ["vehicle", "person"], "sensor_height": 64, "sensor_width": 96,
                          "label_filter": {"apply_prophesee_filter": False}, "eval_min_box_diag": 0,
                          "eval_min_box_side": 4, "sequence_length": 5, "pseudo_sequence_length": 5}}
    env = {**os.environ, CAMERA_FILES_ENV: str(write_cameras(tmp_path / "cams.yaml", camera))}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"model": {"overrides": {"embed_dim": 16, "dim_head": 16}}}))
    leod("synth", "--out", str(tmp_path / "raw"), "--seed", "3", "--duration-s", "2", "--num-train", "2",
         "--num-val", "1", "--num-test", "1", env=env)
    leod("preprocess", "--raw", str(tmp_path / "raw"), "--out", str(tmp_path / "data"), "--preset", "tinycam",
         env=env)
    leod("split", "--data", str(tmp_path / "data"), "--setting", "full", "--ratio", "1", "--sequence-length", "5",
         "--out", str(tmp_path / "split.json"), env=env)
    leod("train", "--data", str(tmp_path / "data"), "--split", str(tmp_path / "split.json"), "--out",
         str(tmp_path / "round0"), "--config", str(tmp_path / "train.yaml"), "--size", "tiny", "--steps", "2",
         "--batch-size", "2", "--sequence-length", "5", "--accelerator", "cpu", "--camera", "tinycam",
         "--val-every", "2", env=env)
    leod("evaluate", "--checkpoint", str(tmp_path / "round0/model.ckpt"), "--data", str(tmp_path / "data"),
         "--out", str(tmp_path / "metrics.json"), "--camera", "tinycam", "--sequence-length", "5",
         "--batch-size", "1", env=env)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert {"AP", "AP_vehicle", "AP_person"} <= set(metrics) and "AP_car" not in metrics
