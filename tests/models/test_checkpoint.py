"""Checkpoint I/O: RVT/LEOD Lightning layout, strict loading with clear errors, atomic save."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leod_core.models.checkpoint import (CheckpointMismatchError, load_into, load_model_checkpoint,
                                         load_rvt_state_dict, save_model_checkpoint)
from leod_core.models.detector import RVTConfig, build_detector
from rvt_reference import parse_state_dict_file


def _random_rvt_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape, dtype in parse_state_dict_file():
        if dtype == torch.int64:
            sd[key] = torch.randint(0, 1000, shape, generator=g, dtype=torch.int64)
        else:
            sd[key] = torch.randn(shape, generator=g, dtype=dtype)
    return sd


@pytest.fixture(scope="module")
def rvt_s() -> torch.nn.Module:
    return build_detector(RVTConfig.small(num_classes=2, input_hw=(240, 304)))


@pytest.fixture(scope="module")
def rvt_sd() -> dict[str, torch.Tensor]:
    return _random_rvt_state_dict()


def test_rvt_lightning_checkpoint_loads_strictly(tmp_path: Path, rvt_s, rvt_sd) -> None:
    path = tmp_path / "rvt.ckpt"
    torch.save({"state_dict": {"mdl." + k: v for k, v in rvt_sd.items()}, "epoch": 3}, path)
    loaded = load_rvt_state_dict(path)
    assert set(loaded) == set(rvt_sd)
    load_into(rvt_s, loaded)
    after = rvt_s.state_dict()
    for k, v in rvt_sd.items():
        assert torch.equal(after[k], v), k


@pytest.mark.parametrize("prefix", ["", "mdl."])
def test_bare_state_dict_with_or_without_prefix(tmp_path: Path, rvt_sd, prefix: str) -> None:
    path = tmp_path / "bare.pt"
    torch.save({prefix + k: v for k, v in list(rvt_sd.items())[:5]}, path)
    loaded = load_rvt_state_dict(path)
    assert list(loaded) == list(rvt_sd)[:5]


def test_missing_key_is_named(rvt_s, rvt_sd) -> None:
    sd = dict(rvt_sd)
    del sd["backbone.stages.2.lstm.conv1x1.bias"]
    with pytest.raises(CheckpointMismatchError, match=r"missing key: backbone\.stages\.2\.lstm\.conv1x1\.bias"):
        load_into(rvt_s, sd)


def test_wrong_shape_and_unexpected_key_are_named(rvt_s, rvt_sd) -> None:
    sd = dict(rvt_sd)
    sd["yolox_head.cls_preds.0.weight"] = torch.zeros(3, 96, 1, 1)  # 3 classes instead of 2
    sd["backbone.stages.0.att_blocks.0.att_window.norm1.weight"] = torch.zeros(48)
    with pytest.raises(CheckpointMismatchError) as info:
        load_into(rvt_s, sd)
    msg = str(info.value)
    assert "shape mismatch: yolox_head.cls_preds.0.weight" in msg and "(3, 96, 1, 1)" in msg
    assert "unexpected key: backbone.stages.0.att_blocks.0.att_window.norm1.weight" in msg


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"a": 1}, path)
    with pytest.raises(ValueError, match="not a checkpoint"):
        load_rvt_state_dict(path)


def test_save_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = RVTConfig.tiny(num_classes=3, input_hw=(64, 96))
    torch.manual_seed(1)
    model = build_detector(cfg).eval()
    path = tmp_path / "sub" / "model.ckpt"
    save_model_checkpoint(path, model, cfg)
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith("mdl.") for k in raw["state_dict"])
    assert raw["leod_model_config"] == cfg.to_dict()

    model2, cfg2 = load_model_checkpoint(path)
    assert cfg2 == cfg
    model2.eval()
    x = torch.rand(1, 20, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x)[0].preds, model2(x)[0].preds)
    fresh = build_detector(cfg)
    load_into(fresh, load_rvt_state_dict(path))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k


def test_leod_import_checkpoint_cli(tmp_path: Path, rvt_sd, caplog) -> None:
    from leod_core.cli import main
    released = tmp_path / "rvt-s-gen1x0.01_ss-final.ckpt"
    torch.save({"state_dict": {"mdl." + k: v for k, v in rvt_sd.items()}, "global_step": 150_000}, released)
    ours = tmp_path / "model.ckpt"
    assert main(["import-checkpoint", "--checkpoint", str(released), "--out", str(ours), "--size", "small"]) == 0
    model, config = load_model_checkpoint(ours)
    assert (config.size, config.num_classes, config.input_hw) == ("small", 2, (240, 304))
    for key, value in rvt_sd.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert main(["import-checkpoint", "--checkpoint", str(released), "--out", str(tmp_path / "b.ckpt"),
                 "--size", "base"]) == 1
    assert "is RVT-S with 2 classes (gen1/synth), but RVT-B for gen1 (2 classes) was requested" in caplog.text
    assert not (tmp_path / "b.ckpt").exists()
