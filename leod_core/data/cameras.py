"""The camera registry: everything that differs between event cameras, in one typed record per camera.

Built in: ``gen1`` (Prophesee Gen1 automotive, 304x240), ``gen4`` (Prophesee 1 Mpx automotive, 1280x720, read
downsampled x2 by RVT and LEOD) and ``synth`` (this repository's synthetic camera, 96x64, a Gen1-like task).
More cameras come from YAML files (:func:`load_camera_file`), listed in the environment variable
:data:`CAMERA_FILES_ENV` (``os.pathsep``-separated; read on first use and whenever it changes) or in the
workflow config's ``camera_files``. See ``docs/cameras.md``.

Units: sensor sizes and the size filters are in **sensor pixels** (the full-resolution frame, before RVT's x2
downsampling and before the model's padding to a multiple of 32); times in **µs**; sequence lengths in event
representations (one per 50 ms step); thresholds are scores in [0, 1], one per class in class-id order.

Every other module asks :func:`get_camera` / :func:`camera_names` instead of keeping its own copy.
"""
from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from leod_core.config import load_yaml_mapping, replace_fields

#: Environment variable listing camera YAML files (``os.pathsep``-separated), loaded by the registry.
CAMERA_FILES_ENV = "LEOD_CAMERA_FILES"
#: LEOD's default dataset (its ``dataset=gen1``): the defaults of the typed settings and of YAML cameras.
DEFAULT_CAMERA = "gen1"
#: RVT's spatial downsampling factor of ``downsampled_by_2`` data (``event_representations_ds2_nearest.h5``).
DOWNSAMPLE_FACTOR = 2
#: Keys a camera YAML entry must give; every other key defaults to the :data:`DEFAULT_CAMERA` record's value.
REQUIRED_KEYS = ("classes", "sensor_height", "sensor_width")
#: Characters of a camera name (names become CLI choices and config values).
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")

T = TypeVar("T")


class UnknownCameraError(ValueError):
    """A camera name that is neither built in nor registered from a YAML file."""


# ------------------------------------------------------------------------------------------ type checks
#: Value types accepted for a field annotated with a type (an int is a valid float setting, a bool is not).
_ACCEPTED_TYPES = {float: (int, float), int: (int,), bool: (bool,), str: (str,), type(None): (type(None),)}


def _type_ok(value: Any, annotation: Any) -> bool:
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for option in options:
        if typing.get_origin(option) is tuple:
            item = typing.get_args(option)[0]
            if isinstance(value, tuple) and all(_type_ok(v, item) for v in value):
                return True
        elif isinstance(value, bool):
            if option is bool:
                return True
        elif isinstance(value, _ACCEPTED_TYPES.get(option, (option,))):
            return True
    return False


def check_field_types(config: object) -> None:
    """Raise ``ValueError`` naming the first field of dataclass ``config`` whose value is not of its annotated
    type (``int``, ``float``, ``bool``, ``str``, ``X | None``, ``tuple[X, ...]`` or a nested dataclass), e.g.
    ``nbins: "ten"`` in a YAML override."""
    hints = typing.get_type_hints(type(config))
    for item in dataclasses.fields(config):
        annotation = hints[item.name]
        value = getattr(config, item.name)
        if not _type_ok(value, annotation):
            options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
            expected = " or ".join("None" if option is type(None) else getattr(option, "__name__", str(option))
                                   for option in options)
            raise ValueError(f"{type(config).__name__}.{item.name} must be {expected}, got {value!r}")


# --------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class BoxFilterConfig:
    """RVT's preprocessing label filters (``conf_preprocess/filter_gen{1,4}.yaml``); sizes in sensor pixels.
    Defaults: RVT's Gen1 filter."""

    apply_prophesee_filter: bool = True   # diag >= min_box_diag and both sides >= min_box_side (Gen1 filter)
    min_box_diag: float = 30.0            # RVT filter_gen1: 30 (filter_gen4: 60)
    min_box_side: float = 10.0            # RVT filter_gen1: 10 (filter_gen4: 20)
    conservative_min_side: float = 5.0    # RVT: used instead of the Prophesee filter when it is off
    apply_huge_box_filter: bool = True    # RVT, train split only: drop boxes wider than the fraction below
    huge_box_max_width_frac: float = 0.9
    max_class_id: int | None = None       # RVT filter_gen4 keeps classes 0..2 (pedestrian, two-wheeler, car)

    def __post_init__(self) -> None:
        check_field_types(self)


@dataclass(frozen=True)
class Camera:
    """What the pipeline needs to know about one event camera.

    Attributes:
        name: registry key (``--camera``, the workflow config's ``camera``).
        classes: class names in class-id order (the ``class_id`` of the label files indexes them).
        sensor_height, sensor_width: full sensor resolution in pixels (labels and raw events live in it; also
            the size preprocessing assumes when a raw file stores none).
        downsampled_by_2: RVT/LEOD read this camera's representations at half resolution
            (``event_representations_ds2_nearest.h5``) and halve the boxes.
        raw_td_h5_names: raw events are named ``{seq}_td.h5`` (RVT's 1Mpx layout) instead of ``{seq}_td.dat.h5``.
        label_period_us: base label period (µs) of preprocessing's label-frame choice; ``None`` derives it from
            the median label spacing (RVT's 1Mpx rule).
        unlabeled_label_period_us: label period (µs) of the grid of a recording without labels (an unlabeled
            sequence, ``leod predict``) where ``label_period_us`` is ``None``; ``None``: ``label_period_us``.
        label_filter: preprocessing's label filter (sensor pixels).
        eval_min_box_diag, eval_min_box_side: the Prophesee evaluation's size filter in sensor pixels (divided
            by :data:`DOWNSAMPLE_FACTOR` on downsampled data, so they must be even for such a camera).
        pseudo_obj_thresh, pseudo_cls_thresh: LEOD's pseudo-label score thresholds (strict ``>``), per class.
        soft_ignore_thresh: LEOD's ``rnndet-soft`` ignore thresholds of self-training, per class.
        tflip_offset: label index shift of time-flipped samples and of the time-flip TTA view (representations).
        sequence_length: training sequence length L of LEOD's dataset config (representations).
        pseudo_sequence_length: L of LEOD's pseudo-labelling streams (representations).
        quality_sequence_length: chunk length of LEOD's pseudo-label quality evaluation (``val_dst.py``).
        partition_split_32: RVT's attention partition split: the model input is padded to a multiple of
            ``32 * partition_split_32`` pixels (of the read, possibly downsampled, frame).
        description: free text for listings.
    """

    name: str
    classes: tuple[str, ...]
    sensor_height: int
    sensor_width: int
    downsampled_by_2: bool = False
    raw_td_h5_names: bool = False
    label_period_us: int | None = None
    unlabeled_label_period_us: int | None = None
    label_filter: BoxFilterConfig = field(default_factory=BoxFilterConfig)
    eval_min_box_diag: int = 0
    eval_min_box_side: int = 0
    pseudo_obj_thresh: tuple[float, ...] | float = ()
    pseudo_cls_thresh: tuple[float, ...] | float = ()
    soft_ignore_thresh: tuple[float, ...] | float = ()
    tflip_offset: int = 0
    sequence_length: int = 1
    pseudo_sequence_length: int = 1
    quality_sequence_length: int = 1
    partition_split_32: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        where = f"camera {self.name!r}"
        if not isinstance(self.name, str) or not self.name or not set(self.name) <= _NAME_CHARS:
            raise ValueError(f"{where}: a name needs letters, digits, '_' or '-' only")
        if isinstance(self.classes, list):
            object.__setattr__(self, "classes", tuple(self.classes))
        for key in ("pseudo_obj_thresh", "pseudo_cls_thresh", "soft_ignore_thresh"):
            value = getattr(self, key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = (float(value),) * len(self.classes)
            elif isinstance(value, (list, tuple)):
                value = tuple(float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value)
            object.__setattr__(self, key, value)
        try:
            check_field_types(self)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        self._check_values(where)

    def _check_values(self, where: str) -> None:
        if not self.classes or len(set(self.classes)) != len(self.classes) or not all(self.classes):
            raise ValueError(f"{where}: classes must be non-empty, unique names, got {list(self.classes)}")
        for key in ("sensor_height", "sensor_width", "sequence_length", "pseudo_sequence_length",
                    "quality_sequence_length", "partition_split_32"):
            if getattr(self, key) < 1:
                raise ValueError(f"{where}: {key} must be >= 1, got {getattr(self, key)}")
        for key in ("label_period_us", "unlabeled_label_period_us"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{where}: {key} must be >= 1 (or null), got {getattr(self, key)}")
        for key in ("eval_min_box_diag", "eval_min_box_side"):
            value = getattr(self, key)
            if value < 0 or (self.downsampled_by_2 and value % DOWNSAMPLE_FACTOR):
                raise ValueError(f"{where}: {key} must be >= 0 (and divisible by {DOWNSAMPLE_FACTOR} when "
                                 f"downsampled_by_2), got {value}")
        if self.downsampled_by_2 and (self.sensor_height % DOWNSAMPLE_FACTOR or self.sensor_width % DOWNSAMPLE_FACTOR):
            raise ValueError(f"{where}: a downsampled_by_2 sensor needs an even height and width")
        for key in ("pseudo_obj_thresh", "pseudo_cls_thresh", "soft_ignore_thresh"):
            value = getattr(self, key)
            if len(value) != len(self.classes) or not all(0.0 <= v <= 1.0 for v in value):
                raise ValueError(f"{where}: {key} needs one value in [0, 1] per class {list(self.classes)} (or one "
                                 f"number for all), got {list(value)}")

    @property
    def num_classes(self) -> int:
        """Classes the detector of this camera predicts (RVT's ``num_classes``)."""
        return len(self.classes)

    @property
    def frame_hw(self) -> tuple[int, int]:
        """(height, width) in pixels of the frames the model reads: the sensor size, halved when downsampled
        (before the padding to a multiple of ``32 * partition_split_32``)."""
        factor = DOWNSAMPLE_FACTOR if self.downsampled_by_2 else 1
        return self.sensor_height // factor, self.sensor_width // factor

    def tta_defaults(self) -> dict[str, Any]:
        """The camera's settings of LEOD's pseudo-labelling (``TTAConfig`` fields)."""
        return {"tflip_offset": self.tflip_offset, "downsampled_by_2": self.downsampled_by_2,
                "sequence_length": self.pseudo_sequence_length, "obj_thresh": self.pseudo_obj_thresh,
                "cls_thresh": self.pseudo_cls_thresh}


# ------------------------------------------------------------------------------------------- built-ins
# Values from LEOD's and RVT's configs: the dataset configs (``config/dataset/gen1.yaml``, ``gen4.yaml``: resolution,
# downsampling, sequence length, time-flip offset), the experiment configs (``partition_split_32``), RVT's
# preprocessing filters (``filter_gen1.yaml``, ``filter_gen4.yaml``) and label-frame rule, the Prophesee evaluation
# (class names, size filters), LEOD's ``pseudo_labeler.yaml`` / ``rnndet-soft.yaml`` thresholds (two-value
# [car, ped] lists, expanded to [ped, cyc, car] = [b, b, a] for Gen4 by LEOD's config modifier) and ``val_dst.py``.
GEN1 = Camera(
    name="gen1", description="Prophesee Gen1 automotive (ATIS), 304x240",
    classes=("car", "pedestrian"),          # Prophesee evaluation / RVT label map of Gen1
    sensor_height=240, sensor_width=304,    # RVT/LEOD gen1.yaml resolution_hw
    downsampled_by_2=False,                 # gen1.yaml downsample_by_factor_2: False
    raw_td_h5_names=False,                  # RVT's Gen1 raw files are {seq}_td.dat.h5
    label_period_us=250_000,                # RVT preprocessing: Gen1 labels at 4 Hz
    label_filter=BoxFilterConfig(),         # RVT filter_gen1.yaml: Prophesee filter diag 30 / side 10
    eval_min_box_diag=30, eval_min_box_side=10,   # Prophesee evaluation, Gen1
    pseudo_obj_thresh=(0.6, 0.3), pseudo_cls_thresh=(0.6, 0.3),   # pseudo_labeler.yaml [car, ped]
    soft_ignore_thresh=(0.7, 0.35),         # rnndet-soft.yaml head.ignore_bbox_thresh [car, ped]
    tflip_offset=-1,                        # LEOD data_augmentation.tflip_offset default
    sequence_length=21,                     # gen1.yaml sequence_length
    pseudo_sequence_length=21,              # pseudo-labelling streams use the dataset's L
    quality_sequence_length=320,            # val_dst.py: 320 for gen1
    partition_split_32=1,                   # experiment/gen1/default.yaml
)
GEN4 = Camera(
    name="gen4", description="Prophesee 1 Mpx automotive (Gen4), 1280x720, read downsampled x2 (640x360)",
    classes=("pedestrian", "two-wheeler", "car"),   # Prophesee evaluation / RVT label map of 1Mpx
    sensor_height=720, sensor_width=1280,   # gen4.yaml resolution_hw
    downsampled_by_2=True,                  # gen4.yaml downsample_by_factor_2: True
    raw_td_h5_names=True,                   # RVT's 1Mpx raw files are {seq}_td.h5
    label_period_us=None,                   # RVT preprocessing: derived from the 30/60 Hz label rate
    unlabeled_label_period_us=100_000,      # what that rule derives: 3 labels at 30 Hz, or 6 at 60 Hz
    label_filter=BoxFilterConfig(apply_prophesee_filter=False, min_box_diag=60.0, min_box_side=20.0,
                                 max_class_id=2),   # RVT filter_gen4.yaml: conservative filter, classes 0..2
    eval_min_box_diag=60, eval_min_box_side=20,   # Prophesee evaluation, 1Mpx (halved on downsampled data)
    pseudo_obj_thresh=(0.3, 0.3, 0.6), pseudo_cls_thresh=(0.3, 0.3, 0.6),   # pseudo_labeler.yaml, expanded
    soft_ignore_thresh=(0.35, 0.35, 0.7),   # rnndet-soft.yaml, expanded
    tflip_offset=-2,                        # gen4.yaml data_augmentation.tflip_offset (labels lag the events)
    sequence_length=5,                      # gen4.yaml sequence_length (10 in the label-efficient configs)
    pseudo_sequence_length=10,              # gen4x*_ss/_seq.yaml sequence_length, the pre-trained model's L
    quality_sequence_length=128,            # val_dst.py: 128 for gen4
    partition_split_32=2,                   # experiment/gen4/default.yaml (RVT's default)
)
# The synthetic camera (leod_core.data.synth, default 96x64): Gen1's task and settings, with the label filter
# and evaluation size limits of its small frame (side >= 5 px, the conservative filter), so that evaluation
# sees the boxes training sees.
SYNTH = dataclasses.replace(
    GEN1, name="synth", description="synthetic event camera of leod synth, 96x64 (a Gen1-like task)",
    sensor_height=64, sensor_width=96,
    label_filter=BoxFilterConfig(apply_prophesee_filter=False),
    eval_min_box_diag=0, eval_min_box_side=5,
)
BUILTIN_CAMERAS: Mapping[str, Camera] = types.MappingProxyType({c.name: c for c in (GEN1, GEN4, SYNTH)})

# ------------------------------------------------------------------------------------------- registry
_registered: dict[str, Camera] = {}
_sources: dict[str, str] = {}
_env_seen: str = ""


def register_camera(camera: Camera, source: str = "code") -> None:
    """Add ``camera`` to the registry. A built-in name, or a name registered with other values, raises
    ``ValueError``; registering an identical record again is a no-op."""
    if camera.name in BUILTIN_CAMERAS:
        raise ValueError(f"{source}: camera {camera.name!r} is built in and cannot be redefined; choose another name")
    known = _registered.get(camera.name)
    if known is not None and known != camera:
        raise ValueError(f"{source}: camera {camera.name!r} is already defined differently by {_sources[camera.name]}")
    _registered[camera.name] = camera
    _sources.setdefault(camera.name, source)


def camera_from_mapping(name: str, mapping: Any, source: str) -> Camera:
    """A :class:`Camera` from a YAML entry: :data:`REQUIRED_KEYS` must be present, any other key of
    :class:`Camera` (``label_filter`` as a mapping of :class:`BoxFilterConfig` fields) overrides the
    :data:`DEFAULT_CAMERA` record's value. Unknown or missing keys and bad values raise ``ValueError`` naming
    ``source`` and the camera."""
    where = f"{source}: camera {name!r}"
    if not isinstance(mapping, dict):
        raise ValueError(f"{where}: expected a mapping of camera settings, got {type(mapping).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in mapping]
    if missing:
        raise ValueError(f"{where}: missing required key(s) {', '.join(missing)}")
    try:
        return _replace_camera(BUILTIN_CAMERAS[DEFAULT_CAMERA], name, mapping, where)
    except (TypeError, ValueError) as err:
        message = str(err)
        raise ValueError(message if message.startswith(source) else f"{where}: {message}") from None


def _replace_camera(base: Camera, name: str, mapping: dict[str, Any], where: str) -> Camera:
    fields = {f.name for f in dataclasses.fields(Camera)} - {"name"}
    unknown = sorted(set(mapping) - fields)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(fields))})")
    thresholds = {"pseudo_obj_thresh", "pseudo_cls_thresh", "soft_ignore_thresh"}
    classes = mapping["classes"]
    if isinstance(classes, (list, tuple)) and len(classes) != base.num_classes and not thresholds <= set(mapping):
        absent = ", ".join(sorted(thresholds - set(mapping)))
        raise ValueError(f"{where}: give {absent} (one number, or one per class): the defaults are "
                         f"{base.name}'s {base.num_classes} per-class values")
    values = {key: value for key, value in mapping.items() if key != "label_filter"}
    camera = replace_fields(dataclasses.replace(base, name=name), values, where)
    if "label_filter" in mapping:
        camera = dataclasses.replace(camera, label_filter=replace_fields(BoxFilterConfig(), mapping["label_filter"],
                                                                         f"{where}.label_filter"))
    return camera


def read_camera_file(path: str | os.PathLike) -> tuple[Camera, ...]:
    """The cameras of a YAML file (a mapping ``name: {settings}``), validated, not registered."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: camera file not found")
    data = load_yaml_mapping(path)
    if not data:
        raise ValueError(f"{path}: no camera defined (expected a mapping of camera names to settings)")
    return tuple(camera_from_mapping(str(name), settings, str(path)) for name, settings in data.items())


def load_camera_file(path: str | os.PathLike) -> tuple[Camera, ...]:
    """Read the cameras of a YAML file (:func:`read_camera_file`) and register them; returns them."""
    cameras = read_camera_file(path)
    for camera in cameras:
        register_camera(camera, str(path))
    return cameras


def load_env_camera_files() -> None:
    """Load the files listed in :data:`CAMERA_FILES_ENV` (again only when the variable changed)."""
    global _env_seen
    value = os.environ.get(CAMERA_FILES_ENV, "")
    if value == _env_seen:
        return
    for item in value.split(os.pathsep):
        if item.strip():
            try:
                load_camera_file(item.strip())
            except ValueError as err:
                raise ValueError(f"{err} (listed in ${CAMERA_FILES_ENV})") from None
    _env_seen = value


def clear_registered_cameras() -> None:
    """Forget every camera registered from YAML (the built-ins stay); the environment is read again on next use."""
    global _env_seen
    _registered.clear()
    _sources.clear()
    _env_seen = ""


def camera_names() -> tuple[str, ...]:
    """Names of every known camera: the built-ins, then the registered ones in registration order."""
    load_env_camera_files()
    return tuple(BUILTIN_CAMERAS) + tuple(_registered)


def get_camera(name: str) -> Camera:
    """The record of camera ``name``; an unknown name raises :class:`UnknownCameraError` listing the known ones."""
    if name in BUILTIN_CAMERAS:
        return BUILTIN_CAMERAS[name]
    load_env_camera_files()
    if name not in _registered:
        raise UnknownCameraError(f"unknown camera {name!r}; known cameras: {', '.join(camera_names())} (add one "
                                 f"from a YAML file: ${CAMERA_FILES_ENV} or the workflow's camera_files, see "
                                 f"docs/cameras.md)")
    return _registered[name]


def reference_camera(downsampled_by_2: bool) -> Camera:
    """The first built-in camera with this resolution handling: what LEOD's code assumes when it only knows
    whether the data is downsampled (``val_dst.py`` picks its chunk length that way): gen1 or gen4."""
    return next(c for c in BUILTIN_CAMERAS.values() if c.downsampled_by_2 == downsampled_by_2)


class CameraView(Mapping[str, T]):
    """A read-only mapping ``camera name -> derive(camera)`` over the whole registry, for the old public
    per-camera tables (``DATASET_CLASSES``, ``CAMERAS``, ``PRESETS``, ``CAMERA_TRAIN_DEFAULTS``)."""

    def __init__(self, derive: Callable[[Camera], T]):
        self._derive = derive

    def __getitem__(self, name: str) -> T:
        try:
            return self._derive(get_camera(name))
        except UnknownCameraError as err:
            raise KeyError(str(err)) from None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in camera_names()

    def __iter__(self) -> Iterator[str]:
        return iter(camera_names())

    def __len__(self) -> int:
        return len(camera_names())
