"""`leod evaluate` and `leod visualize` end to end on the small synthetic dataset with an untrained model."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from leod_core.cli import main
from leod_core.models.checkpoint import save_model_checkpoint
from leod_core.models.detector import RVTConfig, build_detector


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    config = RVTConfig.tiny(2, (64, 96), embed_dim=16, dim_head=16)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    save_model_checkpoint(path, build_detector(config), config)
    return path


def test_evaluate_writes_metrics(small_dataset, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval/test_metrics.json"
    assert main(["--no-progress", "evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(small_dataset.root),
                 "--out", str(out), "--camera", "synth", "--sequence-length", "5", "--batch-size", "2"]) == 0
    metrics = json.loads(out.read_text())
    assert {"AP", "AP_50", "AP_75", "AP_car", "AP_pedestrian"} <= set(metrics)
    assert metrics["num_sequences"] == 2 and metrics["split"] == "test"
    assert 0.0 <= metrics["AP"] < 0.05          # an untrained detector finds nothing useful


def test_evaluate_rejects_a_camera_with_other_classes(small_dataset, tiny_checkpoint, tmp_path, caplog):
    assert main(["--no-progress", "evaluate", "--checkpoint", str(tiny_checkpoint), "--data", str(small_dataset.root),
                 "--out", str(tmp_path / "m.json"), "--camera", "gen4"]) == 1
    assert not (tmp_path / "m.json").exists()


def test_visualize_writes_a_gif(small_dataset, tiny_checkpoint, tmp_path):
    seq = sorted(p.name for p in (small_dataset.root / "test").iterdir())[0]
    assert main(["--no-progress", "visualize", "--checkpoint", str(tiny_checkpoint), "--data", str(small_dataset.root),
                 "--sequence", seq, "--out", str(tmp_path / "v.gif"), "--camera", "synth", "--sequence-length", "5",
                 "--max-frames", "6", "--scale", "2"]) == 0
    with Image.open(tmp_path / "v.gif") as gif:
        assert gif.size == (192, 128) and gif.n_frames == 6
