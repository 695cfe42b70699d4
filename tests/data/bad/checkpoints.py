"""Bad model checkpoints, run through ``leod import-checkpoint`` or loaded with :func:`load_model_checkpoint`
(as ``leod evaluate`` / ``pseudo-label`` load them)."""
from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Callable

import torch

from leod_core.data.formats import FormatError
from leod_core.models.checkpoint import CONFIG_KEY, CheckpointMismatchError, load_model_checkpoint

from .common import SENSOR_HW, BadCase, Call, Pristine, leod_call, truncate, watched_dir

#: The camera of the pristine data and checkpoint.
CAMERA = "synth"


def import_checkpoint(work: Path, checkpoint: Path, size: str = "tiny", camera: str = CAMERA,
                      must_not_exist: tuple[Path, ...] = ()) -> Call:
    """``leod import-checkpoint`` of ``checkpoint`` into a watched directory."""
    out = watched_dir(work / "imported")
    return leod_call(["import-checkpoint", "--checkpoint", str(checkpoint), "--out", str(out / "model.ckpt"),
                      "--size", size, "--camera", camera, "--height", str(SENSOR_HW[0]),
                      "--width", str(SENSOR_HW[1])], out, must_not_exist=must_not_exist)


def checkpoint_imported_as(size: str, camera: str) -> Callable[[Path, Pristine], Call]:
    return lambda work, pristine: import_checkpoint(work, pristine.checkpoint, size, camera)


def checkpoint_case(write: Callable[[Path, Pristine], None]) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        path = work / "model.ckpt"
        write(path, pristine)
        return import_checkpoint(work, path)
    return build


def edited_checkpoint(edit: Callable[[dict], None]) -> Callable[[Path, Pristine], None]:
    """Write the pristine checkpoint's payload, changed in place by ``edit``."""
    def write(path: Path, pristine: Pristine) -> None:
        payload = torch.load(pristine.checkpoint, weights_only=True)
        edit(payload)
        torch.save(payload, path)
    return write


def pickled_checkpoint(path: Path, pristine: Pristine) -> None:
    """A state dict written with plain ``pickle`` instead of ``torch.save``."""
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"mdl.weight": torch.zeros(2)}}, f)


class _WritesFileWhenUnpickled:
    """Unpickling this object would create ``marker``: the proof that no pickled code runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def code_pickle_case(work: Path, pristine: Pristine) -> Call:
    path, marker = work / "model.ckpt", work / "unpickled-code-ran.txt"
    torch.save({"state_dict": {"mdl.weight": torch.zeros(2)}, "hook": _WritesFileWhenUnpickled(marker)}, path)
    return import_checkpoint(work, path, must_not_exist=(marker,))


def truncated_checkpoint(path: Path, pristine: Pristine) -> None:
    shutil.copy(pristine.checkpoint, path)
    truncate(path)


def empty_checkpoint(path: Path, pristine: Pristine) -> None:
    path.write_bytes(b"")


def training_state_only(path: Path, pristine: Pristine) -> None:
    torch.save({"epoch": 3, "global_step": 1200}, path)


def extra_weight(payload: dict) -> None:
    payload["state_dict"]["mdl.extra.weight"] = torch.zeros(1)


def first_weight_nan(payload: dict) -> None:
    key = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][key].view(-1)[0] = float("nan")


def missing_checkpoint(work: Path, pristine: Pristine) -> Call:
    return import_checkpoint(work, work / "model.ckpt")


def stored_config_case(edit: Callable[[dict], None]) -> Callable[[Path, Pristine], Call]:
    """Our checkpoint with its stored model config edited, loaded as ``leod evaluate`` / ``pseudo-label`` do."""
    def build(work: Path, pristine: Pristine) -> Call:
        path = work / "model.ckpt"
        edited_checkpoint(edit)(path, pristine)
        return Call(run=lambda: load_model_checkpoint(path))
    return build


def drop_config(payload: dict) -> None:
    del payload[CONFIG_KEY]


def config_with_unknown_key(payload: dict) -> None:
    payload[CONFIG_KEY]["embed_dimension"] = 64


_CKPT = r"model\.ckpt"

CHECKPOINT_CASES = [
    # checkpoints: leod import-checkpoint, load_model_checkpoint (leod evaluate / pseudo-label)
    BadCase("ckpt-wrong-model-size", "checkpoints", checkpoint_imported_as("small", CAMERA),
            CheckpointMismatchError, _CKPT + r" is RVT-T with 2 classes \(gen1/synth\), but RVT-S for synth "
                                             r"\(2 classes\) was requested"),
    BadCase("ckpt-wrong-class-count", "checkpoints", checkpoint_imported_as("tiny", "gen4"), CheckpointMismatchError,
            _CKPT + r" is RVT-T with 2 classes \(gen1/synth\), but RVT-T for gen4 \(3 classes\) was requested"),
    BadCase("ckpt-extra-weight", "checkpoints", checkpoint_case(edited_checkpoint(extra_weight)),
            CheckpointMismatchError, _CKPT + r": checkpoint does not match the model \(1 problems\):\n  "
                                             r"unexpected key: extra\.weight"),
    BadCase("ckpt-plain-pickle", "checkpoints", checkpoint_case(pickled_checkpoint), FormatError,
            _CKPT + r": would call torch\.storage\._load_from_bytes on load; nothing was run"),
    BadCase("ckpt-pickled-code", "checkpoints", code_pickle_case, FormatError,
            _CKPT + r": would call io\.open on load; nothing was run"),
    BadCase("ckpt-truncated", "checkpoints", checkpoint_case(truncated_checkpoint), FormatError,
            _CKPT + r": not a readable PyTorch checkpoint.*\(RuntimeError: "),
    BadCase("ckpt-empty-file", "checkpoints", checkpoint_case(empty_checkpoint), FormatError,
            _CKPT + r": not a readable PyTorch checkpoint.*\(EOFError: "),
    BadCase("ckpt-missing", "checkpoints", missing_checkpoint, FormatError, _CKPT + r": checkpoint file is missing"),
    BadCase("ckpt-no-state-dict", "checkpoints", checkpoint_case(training_state_only), FormatError,
            _CKPT + r": not a checkpoint: expected a Lightning checkpoint with 'state_dict'"),
    BadCase("ckpt-nan-weights", "checkpoints", checkpoint_case(edited_checkpoint(first_weight_nan)), FormatError,
            _CKPT + r": tensor 'mdl\.[\w.]+' holds NaN or infinite values"),
    BadCase("ckpt-no-stored-config", "checkpoints", stored_config_case(drop_config), FormatError,
            _CKPT + r": no 'leod_model_config' stored"),
    BadCase("ckpt-stored-config-unknown-key", "checkpoints", stored_config_case(config_with_unknown_key),
            FormatError, _CKPT + r": invalid 'leod_model_config': unknown RVTConfig keys: \['embed_dimension'\]"),
]
