"""Released RVT / LEOD weights: full PyTorch Lightning checkpoints read without running their pickles, the
architecture inferred from the weights, and the import into our ``model.ckpt`` format.

RVT's and LEOD's ``.ckpt`` files (``rvt-s-gen1x0.01_ss.ckpt``, ``rvt-b-gen4x0.02_seq-final.ckpt``, ...) pickle,
besides ``state_dict``, the optimizer and scheduler states (with a bound method of ``OneCycleLR``), an OmegaConf
config and Lightning's loop and callback states, which ``torch.load(weights_only=True)`` refuses. Here
``torch.load`` unpickles with a restricted pickle module: the globals of :data:`ALLOWED_GLOBALS` (what rebuilds
tensors and ordered dicts) are the real objects; every other global becomes an inert :class:`Placeholder` class,
never imported, whose instances drop whatever the pickle puts into them. A pickle that would call a global
that runs code or reaches the system (:func:`runs_code_or_system`) is rejected as malicious. Nothing from the
file is ever run, whatever it holds: placeholders call nothing.
"""
from __future__ import annotations

import _compat_pickle
import collections
import functools
import logging
import os
import pickle
import types
from dataclasses import dataclass
from typing import IO, Any, Dict, Mapping, Tuple

import torch
from torch import Tensor

from leod_core.data.formats import FormatError
from leod_core.data.cameras import camera_names, get_camera
from leod_core.models.checkpoint import (CheckpointMismatchError, _extract_state_dict, _require_file, load_into,
                                         save_model_checkpoint)
from leod_core.models.detector import RVTConfig, build_detector

log = logging.getLogger(__name__)

#: The only globals unpickled as the real objects: they rebuild tensors, parameters and ordered dicts (storage
#: types are resolved by ``torch.load`` itself). Not ``_rebuild_parameter_with_state``: it sets pickled attributes
#: on the parameter, which could shadow tensor methods.
ALLOWED_GLOBALS: Mapping[Tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
#: Modules (and globals) whose calls run code or reach the system: processes, files, sockets, imports, the
#: interpreter, foreign memory, further unpickling. A pickle that calls a global at or below one of these dotted
#: names is malicious: no checkpoint needs to.
CODE_OR_SYSTEM_GLOBALS = frozenset({
    "builtins", "os", "posix", "nt", "posixpath", "ntpath", "sys", "subprocess", "_posixsubprocess", "shutil",
    "importlib", "pkgutil", "zipimport", "runpy", "code", "codeop", "pdb", "bdb", "timeit", "trace", "profile",
    "cProfile", "socket", "_socket", "ssl", "http", "urllib", "ftplib", "smtplib", "webbrowser", "pty", "tty",
    "signal", "ctypes", "_ctypes", "mmap", "multiprocessing", "threading", "_thread", "asyncio", "io", "_io",
    "tempfile", "glob", "fileinput", "pickle", "_pickle", "marshal", "dill", "cloudpickle", "joblib", "types",
    "operator", "functools", "inspect", "gc", "torch.load", "torch.hub", "torch.jit", "torch.serialization",
    "torch.package", "torch.storage._load_from_bytes", "torch.utils.cpp_extension", "numpy.load",
    "numpy.lib.npyio",
})
#: Builtins that only build plain values; ``getattr`` is how a bound method pickles (RVT's ``OneCycleLR``
#: ``anneal_func``), and its placeholder never looks anything up.
INERT_BUILTINS = frozenset({"builtins.getattr", "builtins.set", "builtins.frozenset", "builtins.bytearray",
                            "builtins.complex", "builtins.slice"})
#: ``torch.load`` hands a zip holding this record (a TorchScript archive) to ``torch.jit.load``, past the pickle
#: module; such files are refused before.
TORCHSCRIPT_RECORD = "constants.pkl"
#: First bytes of a zip archive (``torch.save``'s default format since torch 1.6).
ZIP_MAGIC = b"PK\x03\x04"
#: What a damaged or hand-made pickle raises while torch rebuilds it (besides the errors of a truncated file).
_UNREBUILDABLE_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, TypeError, ValueError,
                         KeyError, IndexError)
#: Top-level key of a Lightning checkpoint that holds the weights.
STATE_DICT_KEY = "state_dict"
#: RVT size presets recognised by their stage-1 width.
SIZES = ("tiny", "small", "base")
#: The first backbone convolution, ``[embed_dim, input_channels, k, k]``: its output channels are the stage-1 width.
STAGE1_WEIGHT = "backbone.stages.0.downsample_cf2cl.conv.weight"
#: The YOLOX head's class prediction of the first FPN level, ``[num_classes, C, 1, 1]``.
CLASS_PREDICTION_WEIGHT = "yolox_head.cls_preds.0.weight"


class _ForbiddenCall(Exception):
    """Raised while unpickling when the pickle calls a global of :data:`CODE_OR_SYSTEM_GLOBALS`."""

    def __init__(self, global_name: str) -> None:
        super().__init__(global_name)
        self.global_name = global_name


def runs_code_or_system(global_name: str) -> bool:
    """Whether calling the global ``module.name`` could run code or reach the system: it lies at or below one of
    :data:`CODE_OR_SYSTEM_GLOBALS` and is not one of :data:`INERT_BUILTINS`."""
    if global_name in INERT_BUILTINS:
        return False
    return any(global_name == p or global_name.startswith(p + ".") for p in CODE_OR_SYSTEM_GLOBALS)


class Placeholder:
    """Inert stand-in for a pickled global outside :data:`ALLOWED_GLOBALS`; one subclass per global
    (:func:`placeholder_class`), whose ``global_name`` is ``"module.name"``.

    Constructing one (pickle's REDUCE, NEWOBJ, OBJ, INST) keeps the arguments in ``args`` (to report what it
    stood for) unless the global runs code or reaches the system, which raises :class:`_ForbiddenCall`. Pickled
    state, items and list entries given to an instance are dropped.
    """

    global_name = ""
    args: Tuple[Any, ...]

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        if runs_code_or_system(cls.global_name):
            raise _ForbiddenCall(cls.global_name)
        instance = super().__new__(cls)
        instance.args = args + tuple(kwargs.values())
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments are kept by ``__new__`` (pickle's NEWOBJ calls only that)."""

    def __setstate__(self, state: Any) -> None:
        """Pickle's BUILD: the state is dropped."""

    def __setitem__(self, key: Any, value: Any) -> None:
        """Pickle's SETITEM(S): the item is dropped."""

    def append(self, item: Any) -> None:
        """Pickle's APPEND: the item is dropped."""

    def extend(self, items: Any) -> None:
        """Pickle's APPENDS: the items are dropped."""

    def __repr__(self) -> str:
        return f"<placeholder of {self.global_name}>"


@functools.lru_cache(maxsize=None)
def placeholder_class(global_name: str) -> type[Placeholder]:
    """The :class:`Placeholder` subclass standing for ``global_name`` (one per name, so identity holds)."""
    return type(f"Placeholder[{global_name}]", (Placeholder,), {"global_name": global_name})


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals are :data:`ALLOWED_GLOBALS` or placeholders; it never imports anything."""

    def find_class(self, module: str, name: str) -> Any:
        module, name = _python3_name(module, name)
        allowed = ALLOWED_GLOBALS.get((module, name))
        return allowed if allowed is not None else placeholder_class(f"{module}.{name}")


def _python3_name(module: str, name: str) -> Tuple[str, str]:
    """Python 2 names, which protocol 2 pickles use (``__builtin__.getattr``), as Python 3 names."""
    module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _restricted_load(file: IO[bytes], **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


#: What ``torch.load(pickle_module=...)`` uses: it subclasses ``Unpickler`` for the data pickle (mapping storage
#: types itself) and calls ``load`` for the legacy format's header pickles.
RESTRICTED_PICKLE = types.SimpleNamespace(__name__="leod_restricted_pickle", Unpickler=_RestrictedUnpickler,
                                          load=_restricted_load)


def load_restricted(path: str | os.PathLike) -> Any:
    """``torch.load`` of ``path`` (zip or legacy format) on the CPU through :data:`RESTRICTED_PICKLE`.

    Raises :class:`FormatError` naming the file if it is missing, a TorchScript archive, truncated or damaged,
    or if its pickle would call a global that runs code or reaches the system.
    """
    _require_file(path)
    with open(path, "rb") as f:
        try:
            if not _is_torchscript(f):
                return torch.load(f, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE)
        except _ForbiddenCall as call:
            raise FormatError(path, f"would call {call.global_name} on load; nothing was run (a malicious or "
                                    f"tampered file?)") from None
        except _UNREBUILDABLE_ERRORS as err:
            raise FormatError(path, f"not a readable PyTorch checkpoint: truncated, damaged, or not written by "
                                    f"torch.save ({type(err).__name__}: {err})") from err
    raise FormatError(path, "a TorchScript archive, not a checkpoint; TorchScript is never loaded")


def _is_torchscript(f: IO[bytes]) -> bool:
    """Whether the open file ``f`` is a zip holding :data:`TORCHSCRIPT_RECORD`, which ``torch.load`` would hand to
    ``torch.jit.load``; leaves ``f`` at its start. A damaged zip raises ``RuntimeError``, as ``torch.load``."""
    is_zip = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    f.seek(0)
    if not is_zip:
        return False
    records = torch._C.PyTorchFileReader(f).get_all_records()
    f.seek(0)
    return TORCHSCRIPT_RECORD in records


# ----------------------------------------------------------------------------------------------- reading
@dataclass(frozen=True)
class ReleasedCheckpoint:
    """The detector weights of a released checkpoint.

    Attributes:
        state_dict: ``{key: tensor}`` on the CPU, keys without Lightning's ``mdl.`` prefix.
        skipped: what was dropped, readable: each other top-level key, with the globals that became
            placeholders in it (``"hyper_parameters (omegaconf.dictconfig.DictConfig)"``).
    """

    state_dict: Dict[str, Tensor]
    skipped: Tuple[str, ...]


def read_released_checkpoint(path: str | os.PathLike) -> ReleasedCheckpoint:
    """Read the detector weights of an RVT / LEOD / leod_core checkpoint (Lightning, ours, or a bare state dict)
    with :func:`load_restricted`; keeps only the state dict. Non-finite weights raise :class:`FormatError`."""
    obj = load_restricted(path)
    return ReleasedCheckpoint(_extract_state_dict(obj, os.fspath(path)), _skipped(obj))


def _skipped(obj: Any) -> Tuple[str, ...]:
    if not (isinstance(obj, Mapping) and STATE_DICT_KEY in obj):
        return ()
    return tuple(_describe(str(key), value) for key, value in obj.items() if key != STATE_DICT_KEY)


def _describe(key: str, value: Any) -> str:
    names = placeholder_names(value)
    return f"{key} ({', '.join(names)})" if names else key


def placeholder_names(obj: Any) -> list[str]:
    """Sorted global names of the placeholders in ``obj`` (through dicts, lists, tuples, sets and the arguments
    of placeholders)."""
    names: set[str] = set()
    seen: set[int] = set()
    todo = [obj]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, type) and issubclass(item, Placeholder):
            names.add(item.global_name)
        elif isinstance(item, Placeholder):
            names.add(item.global_name)
            todo.extend(item.args)
        elif isinstance(item, Mapping):
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            todo.extend(item)
    return sorted(names)


# ---------------------------------------------------------------------------------------- architecture
@dataclass(frozen=True)
class InferredArchitecture:
    """What a state dict's shapes say: RVT ``size`` (tiny, small, base) and ``num_classes`` of the head."""

    size: str
    num_classes: int

    def describe(self) -> str:
        """``"RVT-S with 2 classes (gen1/synth)"``."""
        cameras = "/".join(cameras_with_classes(self.num_classes)) or "no known camera"
        return f"{size_label(self.size)} with {self.num_classes} classes ({cameras})"


def size_label(size: str) -> str:
    """``"small"`` -> ``"RVT-S"``."""
    return f"RVT-{size[0].upper()}"


def cameras_with_classes(num_classes: int) -> Tuple[str, ...]:
    """Registered cameras whose models detect ``num_classes`` classes, in registry order (2: gen1 first)."""
    return tuple(name for name in camera_names() if get_camera(name).num_classes == num_classes)


def infer_architecture(state_dict: Mapping[str, Tensor], source: str | os.PathLike = "state dict"
                       ) -> InferredArchitecture:
    """RVT size from the stage-1 width (:data:`STAGE1_WEIGHT`), class count from the head's class prediction
    (:data:`CLASS_PREDICTION_WEIGHT`). A missing key or a width of no RVT size raises :class:`FormatError`
    naming ``source``."""
    width, num_classes = _width_and_classes(state_dict, source)
    sizes = {RVTConfig.for_size(size).embed_dim: size for size in SIZES}
    if width not in sizes:
        known = ", ".join(f"{size} {w}" for w, size in sizes.items())
        raise FormatError(source, f"stage-1 width {width} is no RVT size ({known}); a custom model cannot be "
                                  f"imported by size")
    return InferredArchitecture(sizes[width], num_classes)


def _width_and_classes(state_dict: Mapping[str, Tensor], source: str | os.PathLike) -> Tuple[int, int]:
    """(stage-1 width, class count) of RVT weights; :class:`FormatError` naming ``source`` if either is missing."""
    for key in (STAGE1_WEIGHT, CLASS_PREDICTION_WEIGHT):
        if key not in state_dict or state_dict[key].dim() == 0:
            raise FormatError(source, f"no {key!r} weight: not the weights of an RVT detector")
    return int(state_dict[STAGE1_WEIGHT].shape[0]), int(state_dict[CLASS_PREDICTION_WEIGHT].shape[0])


def camera_input_hw(camera: str) -> Tuple[int, int]:
    """(height, width) in px of the frames a model for ``camera`` sees: the sensor size, halved when the camera
    is read downsampled (gen4 720x1280 -> 360x640)."""
    return get_camera(camera).frame_hw


# ---------------------------------------------------------------------------------------------- import
def import_released_checkpoint(path: str | os.PathLike, out: str | os.PathLike, *, camera: str | None = None,
                               size: str | None = None, input_hw: Tuple[int, int] | None = None
                               ) -> Tuple[RVTConfig, ReleasedCheckpoint]:
    """Convert a released RVT / LEOD checkpoint into our ``model.ckpt`` at ``out`` (atomic).

    Size and class count are inferred from the weights; ``camera`` defaults to the first camera with that class
    count (2: gen1, 3: gen4), ``input_hw`` (px) to :func:`camera_input_hw`. A ``size`` or ``camera`` that does
    not fit the weights raises :class:`CheckpointMismatchError` naming both. The weights are strict-loaded into
    the detector before writing.
    """
    released = read_released_checkpoint(path)
    found = infer_architecture(released.state_dict, path)
    camera = _requested_camera(path, found, camera, size)
    split = get_camera(camera).partition_split_32
    config = RVTConfig.for_size(found.size, found.num_classes, input_hw or camera_input_hw(camera), split)
    _write_import(path, out, config, released)
    return config, released


def import_into_config(path: str | os.PathLike, out: str | os.PathLike, config: RVTConfig) -> ReleasedCheckpoint:
    """:func:`import_released_checkpoint` into a given detector ``config`` (what an experiment trains, e.g. from
    ``leod import-checkpoint --config train_config.yaml``), custom widths included. Weights of another stage-1
    width or class count raise :class:`CheckpointMismatchError` naming both before the strict load."""
    released = read_released_checkpoint(path)
    width, classes = _width_and_classes(released.state_dict, path)
    if (width, classes) != (config.embed_dim, config.num_classes):
        raise CheckpointMismatchError(
            f"checkpoint {os.fspath(path)} has stage-1 width {width} and {classes} classes, but the model it is "
            f"imported into ({size_label(config.size)}) has width {config.embed_dim} and {config.num_classes} classes")
    _write_import(path, out, config, released)
    return released


def _write_import(path: str | os.PathLike, out: str | os.PathLike, config: RVTConfig,
                  released: ReleasedCheckpoint) -> None:
    """Strict-load ``released`` into a detector of ``config`` and write it to ``out`` (atomic)."""
    model = build_detector(config)
    load_into(model, released.state_dict, path)
    save_model_checkpoint(out, model, config)
    log.info("%s: kept the detector weights (%d tensors), skipped %s", os.fspath(path), len(released.state_dict),
             "; ".join(released.skipped) or "nothing")


def _requested_camera(path: str | os.PathLike, found: InferredArchitecture, camera: str | None,
                      size: str | None) -> str:
    """``camera``, or the default for the weights' class count; raises if the request does not fit ``found``."""
    if camera is not None:
        get_camera(camera)  # an unknown name raises, listing the known ones
    candidates = cameras_with_classes(found.num_classes)
    if camera is None and not candidates:
        raise CheckpointMismatchError(f"checkpoint {os.fspath(path)} is {found.describe()}: no camera detects "
                                      f"{found.num_classes} classes")
    camera = camera or candidates[0]
    wanted_size = RVTConfig.for_size(size).size if size is not None else found.size
    wanted_classes = get_camera(camera).num_classes
    if (wanted_size, wanted_classes) != (found.size, found.num_classes):
        raise CheckpointMismatchError(
            f"checkpoint {os.fspath(path)} is {found.describe()}, but {size_label(wanted_size)} for {camera} "
            f"({wanted_classes} classes) was requested; leave out the size and camera to use the checkpoint's")
    return camera
