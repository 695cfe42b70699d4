"""Files with the structure of RVT's and LEOD's released Lightning checkpoints (``rvt-s-gen1x0.01_ss.ckpt``).

Besides ``state_dict`` (``mdl.``-prefixed) they pickle what the released files do and ``weights_only=True``
refuses: a real AdamW state after one step, a ``OneCycleLR`` state holding a bound method (old torch stored
``anneal_func = self._annealing_cos``), an OmegaConf ``DictConfig``, Lightning's callback and loop states.

The file is written in a subprocess that imports ``omegaconf`` (a test dependency, never one of
``leod_core``), so the test process never imports it; without it the builder fails, it never skips.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

HERE = Path(__file__).resolve().parent
#: The subprocess: imports this file as the module ``released_fixtures`` and builds ``argv[2]`` from ``argv[1]``.
_BUILD_SCRIPT = "import sys; sys.path.insert(0, sys.argv[3]); import released_fixtures as f; f._build(*sys.argv[1:3])"
#: Lightning version recorded in the files (LEOD trained with Lightning 1.x).
LIGHTNING_VERSION = "1.8.6"
#: Training progress recorded in the files (LEOD gen1 runs: 150k steps).
GLOBAL_STEP, EPOCH = 150_000, 7
#: OneCycleLR settings of RVT's config: peak learning rate, warm-up fraction.
MAX_LR, PCT_START = 2e-4, 0.005
#: Where a :class:`SystemCall` may be put.
CALL_PLACES = ("hyper_parameters", "state_dict")


@dataclass(frozen=True)
class SystemCall:
    """A malicious payload: an object whose unpickling runs ``os.system(command)``, put under ``place``."""

    place: str
    command: str

    def __post_init__(self) -> None:
        if self.place not in CALL_PLACES:
            raise ValueError(f"place must be one of {CALL_PLACES}, got {self.place!r}")


class _RunsSystem:
    """Pickles as the call ``os.system(command)`` (``posix.system`` on Linux)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


class Tripwire:
    """Unpickling this object (importing ``released_fixtures`` and calling ``__setstate__``) creates ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __setstate__(self, state: dict[str, str]) -> None:
        Path(state["marker"]).touch()


def write_released_checkpoint(path: Path, state_dict: Mapping[str, Tensor], *, dataset: str, size: str,
                              legacy_format: bool = False, system_call: SystemCall | None = None,
                              tripwire: Path | None = None) -> None:
    """Write a released-style Lightning checkpoint of the detector weights ``state_dict`` (keys without ``mdl.``)
    of an RVT ``size`` model trained on ``dataset`` (recorded in the OmegaConf config).

    ``legacy_format``: torch's pre-1.6 serialization. ``system_call``: a malicious payload. ``tripwire``: put a
    :class:`Tripwire` creating this file into the callback states (it fires only if the file's pickled code runs).
    Raises ``RuntimeError`` with the subprocess's error output if the file cannot be built (e.g. no omegaconf).
    """
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.pt"
        torch.save({"state_dict": dict(state_dict), "dataset": dataset, "size": size, "legacy": legacy_format,
                    "call": None if system_call is None else (system_call.place, system_call.command),
                    "tripwire": None if tripwire is None else str(tripwire)}, spec)
        done = subprocess.run([sys.executable, "-c", _BUILD_SCRIPT, str(spec), str(path), str(HERE)],
                              capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the released-checkpoint fixture {path} failed:\n{done.stderr}")


# ------------------------------------------------------------------------------------- in the subprocess
def _build(spec_file: str, out: str) -> None:
    try:
        import omegaconf
    except ImportError as err:
        raise RuntimeError("the released-checkpoint fixtures need omegaconf (pip install -e '.[test]')") from err
    spec = torch.load(spec_file, weights_only=True)
    state_dict = spec["state_dict"]
    optimizer, scheduler = _one_training_step(state_dict)
    config = omegaconf.OmegaConf.create(_full_config(spec["dataset"], spec["size"]))
    checkpoint: dict[str, Any] = {
        "epoch": EPOCH,
        "global_step": GLOBAL_STEP,
        "pytorch-lightning_version": LIGHTNING_VERSION,
        "state_dict": {"mdl." + k: v for k, v in state_dict.items()},
        "loops": _loops(),
        "callbacks": _callbacks(),
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [_scheduler_state(scheduler)],
        "hyper_parameters": {"full_config": config},
    }
    if spec["call"] is not None:
        place, command = spec["call"]
        target = checkpoint["state_dict"] if place == "state_dict" else checkpoint["hyper_parameters"]
        target["mdl.on_load" if place == "state_dict" else "on_load"] = _RunsSystem(command)
    if spec["tripwire"] is not None:
        checkpoint["callbacks"]["Tripwire"] = Tripwire(spec["tripwire"])
    torch.save(checkpoint, out, _use_new_zipfile_serialization=not spec["legacy"])


def _one_training_step(state_dict: Mapping[str, Tensor]
                       ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.OneCycleLR]:
    """AdamW + OneCycleLR after one step on copies of the weights; the parameters then get the weights back as
    their data (the file's parameters and state dict share storage, as a checkpoint of one model does)."""
    weights = [v for v in state_dict.values() if v.is_floating_point()]
    params = [torch.nn.Parameter(v.clone()) for v in weights]
    optimizer = torch.optim.AdamW(params, lr=MAX_LR)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=MAX_LR, total_steps=GLOBAL_STEP,
                                                    pct_start=PCT_START)
    for p in params:
        p.grad = torch.randn_like(p)
    optimizer.step()
    scheduler.step()
    for p, value in zip(params, weights):
        p.data = value
    return optimizer, scheduler


def _scheduler_state(scheduler: torch.optim.lr_scheduler.OneCycleLR) -> dict[str, Any]:
    """``scheduler.state_dict()`` plus the bound method old torch kept in it: pickled as
    ``builtins.getattr(<OneCycleLR instance>, '_annealing_cos')``, which pickles the scheduler and its optimizer."""
    state = scheduler.state_dict()
    state["anneal_func"] = types.MethodType(torch.optim.lr_scheduler.OneCycleLR._annealing_cos, scheduler)
    return state


def _full_config(dataset: str, size: str) -> dict[str, Any]:
    """A trimmed RVT / LEOD ``full_config``."""
    return {
        "dataset": {"name": dataset, "path": f"./datasets/{dataset}", "ratio": 0.01, "train_ratio": 0.01},
        "model": {"name": "rnndet", "backbone": {"name": "MaxViTRNN", "size": size, "input_channels": 20},
                  "fpn": {"name": "PAFPN"}, "head": {"name": "YoloX"}},
        "training": {"max_steps": GLOBAL_STEP, "learning_rate": MAX_LR,
                     "lr_scheduler": {"use": True, "pct_start": PCT_START}},
    }


def _callbacks() -> dict[str, Any]:
    """Lightning's ``ModelCheckpoint`` state, keyed by its state key."""
    key = "ModelCheckpoint{'monitor': 'val/AP', 'mode': 'max', 'every_n_train_steps': 0, 'every_n_epochs': 1}"
    return {key: {"monitor": "val/AP", "best_model_score": torch.tensor(0.47), "current_score": torch.tensor(0.45),
                  "best_model_path": "checkpoints/epoch=007-step=150000-val_AP=0.47.ckpt",
                  "dirpath": "checkpoints", "best_k_models": {}, "kth_best_model_path": "",
                  "kth_value": torch.tensor(float("inf")), "last_model_path": "checkpoints/last.ckpt"}}


def _loops() -> dict[str, Any]:
    """Lightning's fit-loop progress."""
    progress = {"ready": EPOCH + 1, "started": EPOCH + 1, "processed": EPOCH, "completed": EPOCH}
    return {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": progress, "current": progress},
                         "epoch_loop.state_dict": {"_batches_that_stepped": GLOBAL_STEP}}}
