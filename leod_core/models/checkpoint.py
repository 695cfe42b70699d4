"""Checkpoint I/O compatible with RVT / LEOD Lightning checkpoints (``state_dict["mdl." + key]``).

Our own files are read with ``torch.load(weights_only=True)`` (no pickled code runs) and written atomically;
:func:`load_rvt_state_dict` also reads RVT's and LEOD's full Lightning checkpoints, through the restricted
unpickler of :mod:`leod_core.models.released`. A file that is missing, truncated, not a checkpoint, or holds
non-finite weights raises :class:`~leod_core.data.formats.FormatError` naming it.
"""
from __future__ import annotations

import os
import pickle
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import Tensor, nn

from leod_core.data.atomic import atomic_path
from leod_core.data.formats import FormatError
from leod_core.models.detector import RVTConfig, RVTDetector, build_detector

MODEL_PREFIX = "mdl."
CONFIG_KEY = "leod_model_config"
#: Where ``model.ckpt`` records which training step its weights are from and how they were selected.
TRAINING_KEY = "leod_training"
#: Problems listed in full by :class:`CheckpointMismatchError`; the rest are counted.
MAX_PROBLEMS_SHOWN = 50
#: What ``torch.load(weights_only=True)`` raises for a file it cannot read: a pickle of other objects
#: (UnpicklingError), a truncated or non-zip file (RuntimeError), an empty file (EOFError).
_UNREADABLE_CHECKPOINT_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError)


class CheckpointMismatchError(ValueError):
    """A state dict does not fit a model; the message names the file (when known) and lists missing /
    unexpected keys and shape mismatches."""


def _require_file(path: str | os.PathLike) -> None:
    """Raise :class:`FormatError` if ``path`` is not a file."""
    if not os.path.isfile(path):
        raise FormatError(path, "checkpoint file is missing")


def _load_weights_only(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; an unreadable file raises :class:`FormatError`."""
    _require_file(path)
    try:
        return torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except _UNREADABLE_CHECKPOINT_ERRORS as err:
        raise FormatError(path, f"not a readable weights-only PyTorch checkpoint: it is truncated, damaged, or "
                                f"pickles objects other than tensors and plain containers, which are never "
                                f"unpickled ({type(err).__name__})") from err


def _check_finite(state_dict: Mapping[str, Tensor], source: str) -> None:
    """Raise :class:`FormatError` naming the first floating-point tensor with a NaN or infinite value."""
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FormatError(source, f"tensor {key!r} holds NaN or infinite values (a diverged training run?)")


def _extract_state_dict(obj: Any, source: str) -> Dict[str, Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise FormatError(source, "not a checkpoint: expected a Lightning checkpoint with 'state_dict' "
                                  "or a dict of tensors")
    sd = {str(k): v for k, v in obj.items()}
    _check_finite(sd, source)
    if any(k.startswith(MODEL_PREFIX) for k in sd):
        # Lightning module: the detector lives under `mdl.`; other entries are not the detector.
        return {k[len(MODEL_PREFIX):]: v for k, v in sd.items() if k.startswith(MODEL_PREFIX)}
    return sd


def load_rvt_state_dict(path: str | os.PathLike) -> Dict[str, Tensor]:
    """Read the detector weights of an RVT / LEOD / leod_core checkpoint.

    Accepts a Lightning checkpoint (``{"state_dict": {"mdl.<key>": tensor, ...}, ...}``) or a bare state dict
    with or without the ``mdl.`` prefix. When any key has the prefix, only those keys are returned (other
    Lightning entries are not part of the detector), with the prefix removed. Tensors are on the CPU.

    Released RVT / LEOD files pickle optimizer, scheduler and config objects besides the weights, so every file
    is read with :func:`leod_core.models.released.read_released_checkpoint`: nothing but tensors and plain
    containers is rebuilt, nothing from the file is imported or run.
    """
    # Imported here: leod_core.models.released builds on this module.
    from leod_core.models.released import read_released_checkpoint

    return read_released_checkpoint(path).state_dict


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> List[str]:
    """Problems that would stop a strict load (empty when it fits): missing keys, unexpected keys, shape
    mismatches, each as one line naming the key."""
    expected = model.state_dict()
    problems = [f"missing key: {k} (expected shape {tuple(v.shape)})" for k, v in expected.items()
                if k not in state_dict]
    problems += [f"unexpected key: {k} (shape {tuple(v.shape)})" for k, v in state_dict.items()
                 if k not in expected]
    problems += [f"shape mismatch: {k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
                 for k, v in expected.items() if k in state_dict and state_dict[k].shape != v.shape]
    return problems


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], source: str | os.PathLike | None = None) -> None:
    """Load ``state_dict`` into ``model`` with ``strict=True``.

    Raises :class:`CheckpointMismatchError` listing every missing / unexpected key and shape mismatch (the
    message starts with ``source``, the checkpoint file, when given).
    """
    problems = check_state_dict(model, state_dict)
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        if len(problems) > MAX_PROBLEMS_SHOWN:
            shown.append(f"... and {len(problems) - MAX_PROBLEMS_SHOWN} more")
        where = f"{os.fspath(source)}: " if source is not None else ""
        raise CheckpointMismatchError(
            f"{where}checkpoint does not match the model ({len(problems)} problems):\n  " + "\n  ".join(shown))
    model.load_state_dict(dict(state_dict), strict=True)


def save_model_checkpoint(path: str | os.PathLike, model: nn.Module, config: RVTConfig,
                          training: Mapping[str, Any] | None = None) -> None:
    """Write ``{"state_dict": {"mdl." + k: v}, "leod_model_config": config.to_dict()}`` atomically, plus
    ``"leod_training": training`` when given (:func:`save_state_dict_checkpoint`).

    The file loads with ``torch.load(weights_only=True)`` and, thanks to the ``mdl.`` prefix, with RVT's and
    LEOD's own loaders as well as :func:`load_rvt_state_dict`.
    """
    save_state_dict_checkpoint(path, model.state_dict(), config, training)


def save_state_dict_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, Tensor], config: RVTConfig,
                               training: Mapping[str, Any] | None = None) -> None:
    """:func:`save_model_checkpoint` of a detector's ``state_dict`` (keys without the ``mdl.`` prefix).

    ``training`` records where the weights come from (what ``leod train`` stores: ``step``, ``selected``
    ``'best'`` or ``'last'``, ``val_AP`` or None); plain values only, so the file stays weights-only loadable.
    """
    state = {MODEL_PREFIX + k: v.detach().cpu().clone() for k, v in state_dict.items()}
    payload: Dict[str, Any] = {"state_dict": state, CONFIG_KEY: config.to_dict()}
    if training is not None:
        payload[TRAINING_KEY] = dict(training)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_model_checkpoint(path: str | os.PathLike, config: RVTConfig | None = None
                          ) -> Tuple[RVTDetector, RVTConfig]:
    """Build a detector from a checkpoint and load its weights (strict).

    ``config`` is required for checkpoints without ``leod_model_config`` (RVT's / LEOD's own); when given
    it takes precedence over the stored one.
    """
    model, config, _ = load_model_and_record(path, config)
    return model, config


def load_model_and_record(path: str | os.PathLike, config: RVTConfig | None = None
                          ) -> Tuple[RVTDetector, RVTConfig, Dict[str, Any] | None]:
    """:func:`load_model_checkpoint` plus the checkpoint's ``leod_training`` record (None without one), from one
    read of the file."""
    obj = _load_weights_only(path)
    if config is None:
        config = _stored_config(obj, path)
    model = build_detector(config)
    load_into(model, _extract_state_dict(obj, os.fspath(path)), path)
    return model, config, _training_record(obj, path)


def load_training_record(path: str | os.PathLike) -> Dict[str, Any] | None:
    """The ``leod_training`` record of a checkpoint (:func:`save_state_dict_checkpoint`), None if it has none
    (RVT's / LEOD's checkpoints, imported ones)."""
    return _training_record(_load_weights_only(path), path)


def _training_record(obj: Any, path: str | os.PathLike) -> Dict[str, Any] | None:
    record = obj.get(TRAINING_KEY) if isinstance(obj, Mapping) else None
    if record is not None and not isinstance(record, Mapping):
        raise FormatError(path, f"'{TRAINING_KEY}' must be a mapping, got {type(record).__name__}")
    return dict(record) if record is not None else None


def _stored_config(obj: Any, path: str | os.PathLike) -> RVTConfig:
    """The :class:`RVTConfig` stored under :data:`CONFIG_KEY`; :class:`FormatError` if absent or invalid."""
    stored = obj.get(CONFIG_KEY) if isinstance(obj, Mapping) else None
    if stored is None:
        raise FormatError(path, f"no '{CONFIG_KEY}' stored; pass the RVTConfig explicitly")
    if not isinstance(stored, Mapping):
        raise FormatError(path, f"'{CONFIG_KEY}' must be a mapping, got {type(stored).__name__}")
    try:
        return RVTConfig.from_dict(dict(stored))
    except (TypeError, ValueError) as err:
        raise FormatError(path, f"invalid '{CONFIG_KEY}': {err}") from err
