"""``leod import-checkpoint`` on files with the structure of RVT's / LEOD's released Lightning checkpoints: read
through the restricted unpickler (never importing or running the file's code), architecture inferred, malicious
files rejected, the result evaluable."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from leod_core.cli import main
from leod_core.data.formats import FormatError
from leod_core.models.checkpoint import CheckpointMismatchError, load_model_checkpoint, load_rvt_state_dict
from leod_core.models.detector import RVTConfig, build_detector
from leod_core.models.released import (CLASS_PREDICTION_WEIGHT, STAGE1_WEIGHT, import_released_checkpoint,
                                       infer_architecture, read_released_checkpoint, runs_code_or_system)
from leod_core.workflow.settings import CAMERA_TRAIN_DEFAULTS
from released_fixtures import HERE, SystemCall, write_released_checkpoint

#: The released checkpoints imitated: (size, dataset).
RELEASES = [("small", "gen1"), ("small", "gen4"), ("base", "gen1"), ("base", "gen4")]
#: What the model of each camera sees (gen4: 720x1280 downsampled by 2), in px.
EXPECTED_HW = {"gen1": (240, 304), "gen4": (360, 640), "synth": (64, 96)}
#: What every released file holds besides the weights, as the import reports it.
EXPECTED_SKIPPED = ("epoch", "global_step", "pytorch-lightning_version", "loops", "callbacks", "optimizer_states",
                    "lr_schedulers (builtins.getattr, torch.optim.lr_scheduler.OneCycleLR)",
                    "hyper_parameters (omegaconf.dictconfig.DictConfig)")
#: Parallel fixture builds (subprocesses).
BUILD_WORKERS = 2


@dataclass(frozen=True)
class Release:
    path: Path
    state_dict: dict[str, torch.Tensor]


def random_weights(size: str, camera: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised detector of ``size`` for ``camera`` (its class count and partition split)."""
    model = CAMERA_TRAIN_DEFAULTS[camera]["model"]
    torch.manual_seed(seed)
    config = RVTConfig.for_size(size, model["num_classes"], EXPECTED_HW[camera], model["partition_split_32"])
    return dict(build_detector(config).state_dict())


def make_release(root: Path, size: str, dataset: str, **options) -> Release:
    path = root / f"rvt-{size[0]}-{dataset}x0.01_ss-final.ckpt"
    state_dict = random_weights(size, dataset)
    write_released_checkpoint(path, state_dict, dataset=dataset, size=size, **options)
    return Release(path, state_dict)


@pytest.fixture(scope="session")
def released(tmp_path_factory) -> dict[tuple[str, str], Release]:
    root = tmp_path_factory.mktemp("released")
    with ThreadPoolExecutor(BUILD_WORKERS) as pool:
        builds = {key: pool.submit(make_release, root, *key) for key in RELEASES}
        return {key: build.result() for key, build in builds.items()}


@pytest.fixture(scope="module")
def synth_release(tmp_path_factory) -> tuple[Release, Path]:
    """An RVT-T release for the synthetic camera whose callback state holds a :class:`Tripwire`, and its marker."""
    root = tmp_path_factory.mktemp("synth_release")
    marker = root / "tripwire-fired"
    return make_release(root, "tiny", "synth", tripwire=marker), marker


def assert_same_weights(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(actual) == set(expected)
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


# ------------------------------------------------------------------------------------------------ import
@pytest.mark.parametrize("size, dataset", RELEASES)
def test_import_infers_size_and_camera(released, size, dataset, tmp_path, caplog):
    release, out = released[size, dataset], tmp_path / "model.ckpt"
    with caplog.at_level(logging.INFO):
        assert main(["import-checkpoint", "--checkpoint", str(release.path), "--out", str(out)]) == 0
    model, config = load_model_checkpoint(out)
    defaults = CAMERA_TRAIN_DEFAULTS[dataset]["model"]
    assert (config.size, config.num_classes, config.partition_split_32, config.input_hw) == (
        size, defaults["num_classes"], defaults["partition_split_32"], EXPECTED_HW[dataset])
    assert_same_weights(model.state_dict(), release.state_dict)
    assert f"skipped {'; '.join(EXPECTED_SKIPPED)}" in caplog.text


def test_weights_only_loading_refuses_released_files(released):
    for release in released.values():
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            torch.load(release.path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("option, requested", [(("--size", "base"), "RVT-B for gen1 (2 classes)"),
                                               (("--camera", "gen4"), "RVT-S for gen4 (3 classes)")])
def test_a_request_that_does_not_fit_names_both(released, option, requested, tmp_path, caplog):
    path, out = released["small", "gen1"].path, tmp_path / "model.ckpt"
    message = f"checkpoint {path} is RVT-S with 2 classes (gen1/synth), but {requested} was requested"
    assert main(["import-checkpoint", "--checkpoint", str(path), "--out", str(out), *option]) == 1
    assert message in caplog.text and not out.exists()
    flag, value = option
    with pytest.raises(CheckpointMismatchError, match=r"^checkpoint .* was requested"):
        import_released_checkpoint(path, out, **{flag.lstrip("-"): value})


def test_legacy_format_imports_and_loads(tmp_path):
    release = make_release(tmp_path, "tiny", "gen1", legacy_format=True)
    out = tmp_path / "model.ckpt"
    config, read = import_released_checkpoint(release.path, out)
    assert (config.size, config.num_classes, config.input_hw) == ("tiny", 2, EXPECTED_HW["gen1"])
    assert read.skipped == EXPECTED_SKIPPED
    assert_same_weights(load_model_checkpoint(out)[0].state_dict(), release.state_dict)
    assert_same_weights(load_rvt_state_dict(release.path), release.state_dict)   # train --init-weights


# --------------------------------------------------------------------------------------------- safety
@pytest.mark.parametrize("place", ["hyper_parameters", "state_dict"])
def test_a_pickled_system_call_is_rejected_and_never_run(place, tmp_path, caplog):
    marker = tmp_path / "system-call-ran"
    release = make_release(tmp_path, "tiny", "gen1", system_call=SystemCall(place, f"touch {marker}"))
    error = rf"{release.path}: would call \w+\.system on load; nothing was run"
    with pytest.raises(FormatError, match=error):
        read_released_checkpoint(release.path)
    with pytest.raises(FormatError, match=error):
        load_rvt_state_dict(release.path)
    out = tmp_path / "model.ckpt"
    assert main(["import-checkpoint", "--checkpoint", str(release.path), "--out", str(out)]) == 1
    assert "system on load; nothing was run" in caplog.text
    assert not marker.exists() and not out.exists()


_ISOLATION_SCRIPT = """
import sys
from pathlib import Path
import torch
from leod_core.models.released import import_released_checkpoint

checkpoint, out, marker = sys.argv[1:4]
import_released_checkpoint(checkpoint, out, camera="synth")
foreign = sorted(m for m in sys.modules
                 if m.split(".")[0] in ("omegaconf", "pytorch_lightning", "lightning", "released_fixtures"))
assert not foreign, f"imported while reading: {foreign}"
assert not Path(marker).exists(), "the file's code ran"
torch.load(checkpoint, map_location="cpu", weights_only=False)   # control: unrestricted, the tripwire fires
assert Path(marker).exists() and "omegaconf" in sys.modules, "the control did not run the file's code"
"""


def test_import_never_imports_or_runs_the_files_code(synth_release, tmp_path):
    """In a fresh interpreter where the file's modules are importable, the import loads none of them (OmegaConf,
    Lightning, the tripwire's module) and runs none of its code; an unrestricted load of the same file would."""
    release, marker = synth_release
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _ISOLATION_SCRIPT, str(release.path), str(tmp_path / "m.ckpt"),
                           str(marker)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_archives_are_refused(tmp_path):
    path = tmp_path / "scripted.ckpt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(FormatError, match="a TorchScript archive, not a checkpoint"):
        read_released_checkpoint(path)


def test_the_rule_for_globals_that_run_code_or_reach_the_system():
    for name in ("posix.system", "nt.system", "builtins.eval", "builtins.exec", "io.open", "subprocess.Popen",
                 "importlib.import_module", "torch.hub.load", "torch.storage._load_from_bytes"):
        assert runs_code_or_system(name), name
    for name in ("builtins.getattr", "builtins.set", "omegaconf.dictconfig.DictConfig",
                 "torch.optim.lr_scheduler.OneCycleLR", "collections.defaultdict", "ossified.system"):
        assert not runs_code_or_system(name), name


# ------------------------------------------------------------------------------------------ architecture
def test_an_unknown_width_or_a_missing_weight_is_named():
    weights = {STAGE1_WEIGHT: torch.zeros(16, 20, 7, 7), CLASS_PREDICTION_WEIGHT: torch.zeros(2, 64, 1, 1)}
    with pytest.raises(FormatError, match=r"^custom\.ckpt: stage-1 width 16 is no RVT size \(tiny 32, small 48, "
                                          r"base 64\)"):
        infer_architecture(weights, "custom.ckpt")
    del weights[CLASS_PREDICTION_WEIGHT]
    with pytest.raises(FormatError, match=r"^custom\.ckpt: no 'yolox_head\.cls_preds\.0\.weight' weight"):
        infer_architecture(weights, "custom.ckpt")


def test_height_and_width_go_together(synth_release, tmp_path, caplog):
    release, _ = synth_release
    assert main(["import-checkpoint", "--checkpoint", str(release.path), "--out", str(tmp_path / "m.ckpt"),
                 "--height", "64"]) == 1
    assert "give both --height and --width, or neither" in caplog.text


def test_an_imported_checkpoint_evaluates(synth_release, small_dataset, tmp_path):
    release, _ = synth_release
    model, metrics = tmp_path / "model.ckpt", tmp_path / "metrics.json"
    assert main(["import-checkpoint", "--checkpoint", str(release.path), "--out", str(model),
                 "--camera", "synth"]) == 0
    assert main(["--no-progress", "evaluate", "--checkpoint", str(model), "--data", str(small_dataset.root),
                 "--out", str(metrics), "--camera", "synth", "--split", "val", "--sequence-length", "5"]) == 0
    assert json.loads(metrics.read_text())["num_sequences"] == 1


def test_import_into_an_experiments_model_checks_width_classes_and_checksum(synth_release, small_dataset, tmp_path,
                                                                            caplog):
    """The workflow's import_round0: ``--config train_config.yaml --data DIR`` builds the model that training would
    (here RVT-T at the data's frame size); a checkpoint of another width is refused naming both, a wrong checksum
    before anything is read."""
    release, _ = synth_release
    config = tmp_path / "train_config.yaml"
    config.write_text("model: {size: tiny}\n")
    args = ["import-checkpoint", "--checkpoint", str(release.path), "--config", str(config),
            "--data", str(small_dataset.root)]
    md5 = hashlib.md5(release.path.read_bytes()).hexdigest()
    assert main([*args, "--out", str(tmp_path / "a.ckpt"), "--md5", md5[:6]]) == 0
    model, imported = load_model_checkpoint(tmp_path / "a.ckpt")
    assert (imported.size, imported.embed_dim, imported.input_hw) == ("tiny", 32, (64, 96))   # SynthConfig()
    assert_same_weights(model.state_dict(), release.state_dict)

    assert main([*args, "--out", str(tmp_path / "b.ckpt"), "--md5", "000000"]) == 1
    assert f"md5 is {md5}, expected 000000" in caplog.text and not (tmp_path / "b.ckpt").exists()
    config.write_text("model: {size: small}\n")
    assert main([*args, "--out", str(tmp_path / "c.ckpt")]) == 1
    assert "has stage-1 width 32 and 2 classes, but the model it is imported into (RVT-S) has width 48" in caplog.text
    assert main([*args[:3], "--config", str(config), "--out", str(tmp_path / "d.ckpt")]) == 1
    assert "--config and --data go together" in caplog.text
