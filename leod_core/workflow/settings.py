"""The workflow config (``workflow_config/*.yaml``, checked by ``schema.yaml``) turned into what each job needs:
per-experiment settings, ``leod train`` / ``leod pseudo-label`` YAML configs and CLI arguments.

A dataset block holds defaults for every experiment on it; its ``overrides`` list refines them by setting and
label ratio (LEOD's per-ratio step counts, for example). An experiment that is not configured at all (a new
ratio asked for on the command line) gets the dataset's settings with the overrides that match its ratio.
A variant (``+name`` in the experiment directory) applies the overlay ``variants.name`` last.

A variant that changes nothing round 0 depends on (``sequence_length``, ``train``) shares the base
experiment's split and round-0 model (:func:`round0_variant`): the ablation compares self-training choices on
one baseline, and round 0 is trained once.
"""
from __future__ import annotations

import copy
import json
import os
import shlex
from pathlib import Path
from typing import Any, Mapping

from leod_core.config import renamed_setting_errors
from leod_core.data.cameras import CAMERA_FILES_ENV, Camera, CameraView, get_camera, load_camera_file
from leod_core.workflow.paths import (RESERVED_NAMES, check_offset_wildcard, check_ratio_wildcard, format_ratio,
                                      offset_suffix, variant_suffix)

#: Sections of a dataset block that the overrides list may refine (deep-merged, in list order).
MERGED_SECTIONS = ("train", "self_train", "pseudo", "label_quality", "evaluate")
#: Settings that round 0 (split and model) depends on: a variant changing none of them shares round 0.
ROUND0_KEYS = ("camera", "sequence_length", "train")
#: The data source that generates a dataset with ``leod synth`` (a source, not the camera of that name).
SYNTH_SOURCE = "synth"
#: The data source of a folder of the user's own recordings (arranged by :mod:`leod_core.workflow.recordings`).
RECORDINGS_SOURCE = "recordings"
#: Ways to get a dataset's data: generate it, or link or arrange what the user provides.
DATA_SOURCES = (SYNTH_SOURCE, "raw", RECORDINGS_SOURCE, "preprocessed")
#: The source of a dataset block with none of :data:`DATA_SOURCES`: its ``download.preprocessed`` archive.
DOWNLOAD_SOURCE = "download"

#: Top-level config key listing camera YAML files (docs/cameras.md), relative to the working directory.
CAMERA_FILES_KEY = "camera_files"


def camera_train_defaults(camera: Camera) -> dict[str, Any]:
    """``leod train`` settings implied by a camera record (overridable in ``train``)."""
    return {"model": {"num_classes": camera.num_classes, "partition_split_32": camera.partition_split_32},
            "data": {"tflip_offset": camera.tflip_offset, "downsampled_by_2": camera.downsampled_by_2}}


#: ``leod train`` settings implied by each camera: a read-only view of the camera registry.
CAMERA_TRAIN_DEFAULTS: Mapping[str, dict[str, Any]] = CameraView(camera_train_defaults)

#: ``leod synth`` option for each key of a dataset's ``synth`` config block.
_SYNTH_OPTIONS = {
    "seed": "--seed", "height": "--height", "width": "--width", "duration_s": "--duration-s",
    "num_train": "--num-train", "num_val": "--num-val", "num_test": "--num-test",
    "min_object_px": "--min-object-px", "max_object_px": "--max-object-px",
    "initial_objects_mean": "--initial-objects-mean", "min_initial_objects": "--min-initial-objects",
    "arrival_rate_hz": "--arrival-rate-hz",
}
#: ``python -m leod_core.workflow arrange-recordings`` option for each key of a ``recordings`` block (``holdout``'s
#: keys under ``holdout_``).
_RECORDINGS_OPTIONS = {"path": "--source", "format": "--format", "holdout_val": "--holdout-val",
                       "holdout_test": "--holdout-test"}
#: ``leod evaluate`` option for each key of an ``evaluate`` block.
_EVALUATE_OPTIONS = {
    "batch_size": "--batch-size", "sequence_length": "--sequence-length", "confidence_threshold": "--confidence-threshold",
    "nms_threshold": "--nms-threshold", "autocast": "--autocast", "backend": "--backend",
}
#: ``leod evaluate`` switch for each boolean key of an ``evaluate`` block (passed when the key is true).
_EVALUATE_SWITCHES = {"compile_model": "--compile-model"}


# ---------------------------------------------------------------------------------------------- basics
def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``base`` with ``update`` applied recursively (mappings merge, anything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dataset_config(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The config block of ``dataset``; a clear ``ValueError`` for a dataset that is not configured."""
    datasets = config["datasets"]
    if dataset not in datasets:
        raise ValueError(f"dataset {dataset!r} is not configured (configured: {', '.join(sorted(datasets))}); "
                         f"add it under 'datasets:' in the workflow config")
    return datasets[dataset]


def data_source(dataset_cfg: dict[str, Any]) -> str:
    """Which of :data:`DATA_SOURCES` a dataset block uses, or :data:`DOWNLOAD_SOURCE` if it has none of them
    but a ``download.preprocessed`` archive (then the workflow downloads it)."""
    present = [key for key in DATA_SOURCES if key in dataset_cfg]
    if not present and "preprocessed" in dataset_cfg.get("download", {}):
        return DOWNLOAD_SOURCE
    if len(present) != 1:
        raise ValueError(f"a dataset needs exactly one of {DATA_SOURCES} (or a download.preprocessed archive), "
                         f"got {present or 'none'}")
    return present[0]


def download_archive(dataset_cfg: dict[str, Any]) -> dict[str, str]:
    """``url`` and ``crc32`` of the preprocessed archive a :data:`DOWNLOAD_SOURCE` dataset is fetched from."""
    if data_source(dataset_cfg) != DOWNLOAD_SOURCE:
        raise ValueError("this dataset is not downloaded: it names its data source")
    return dataset_cfg["download"]["preprocessed"]


def datasets_with_source(config: dict[str, Any], source: str) -> list[str]:
    """Names of the configured datasets whose data comes from ``source``."""
    return sorted(name for name, block in config["datasets"].items() if data_source(block) == source)


def data_hint(dataset_cfg: dict[str, Any]) -> str:
    """Where to get a user-provided dataset, from its ``download`` block (for the error when it is missing)."""
    source = data_source(dataset_cfg)
    files = dataset_cfg.get("download", {}).get(source)
    if source in (SYNTH_SOURCE, DOWNLOAD_SOURCE) or not files:
        return ""
    if source == "preprocessed":
        return f"Download {files['url']} (crc32 {files['crc32']}) and extract it so that train/ val/ test/ are there"
    parts = ", ".join(f"{split}: {f['url']} (crc32 {f['crc32']})" for split, f in sorted(files.items()))
    return f"Download the raw archives ({parts}) and extract them into train/ val/ test/ there"


def name_pattern(names: list[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (none: a pattern that never matches)."""
    return "|".join(names) if names else "(?!)"


def check_renamed_settings(config: dict[str, Any]) -> None:
    """``ValueError`` listing every renamed setting in ``config`` with its new name (before the schema, whose
    message would only say that the old key is not allowed)."""
    errors = renamed_setting_errors(config, "config")
    if errors:
        raise ValueError("\n".join(errors))


def requested_shards(config: dict[str, Any]) -> int:
    """``self_training.num_shards``: how many pseudo-label jobs a round asks for (the shard list may make
    fewer, never more)."""
    return int(config["self_training"]["num_shards"])


def check_config(config: dict[str, Any]) -> None:
    """Checks beyond the JSON schema: experiments name configured datasets, ``full`` has ratio 1 and one split, reserved
    dataset names, one data source per dataset (a ``recordings`` source's holdout leaving train some recordings),
    cameras that the registry knows (after loading ``camera_files``).
    Raises ``ValueError`` naming the problem."""
    load_config_cameras(config)
    for name, block in config["datasets"].items():
        if name in RESERVED_NAMES:
            raise ValueError(f"dataset name {name!r} is reserved (results/{name}/ holds other outputs)")
        try:
            if data_source(block) == RECORDINGS_SOURCE:
                check_holdout(block[RECORDINGS_SOURCE])
            for camera in dataset_cameras(block):
                get_camera(camera)
        except ValueError as err:
            raise ValueError(f"datasets.{name}: {err}") from None
    listed = [("experiments", config["experiments"]), ("ablation.experiments", ablation_entries(config))]
    for key, entries in listed:
        for i, exp in enumerate(entries):
            suffix = variant_suffix(exp.get("variant", ""))
            where = f"{key}[{i}] ({exp['dataset']} {exp['setting']} {exp['ratio']}{suffix})"
            if exp["dataset"] not in config["datasets"]:
                raise ValueError(f"{where}: dataset {exp['dataset']!r} is not configured")
            try:
                check_ratio_wildcard(format_ratio(exp["ratio"]), exp["setting"])
                for offset in exp.get("split_offsets", []):
                    check_offset_wildcard(offset_suffix(offset), exp["setting"])
                variant_overlay(config, exp.get("variant", ""))
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None


def check_holdout(recordings_cfg: dict[str, Any]) -> None:
    """A ``recordings`` block's holdout fractions, checked as the job will (``ValueError``: their sum must be
    below 1, which the schema cannot say)."""
    from leod_core.workflow.recordings import Holdout   # a job module (it reads files): only for this source

    try:
        Holdout(**recordings_cfg.get("holdout", {}))
    except ValueError as err:
        raise ValueError(f"{RECORDINGS_SOURCE}: {err}") from None


def dataset_cameras(dataset_cfg: dict[str, Any]) -> list[str]:
    """Camera names a dataset block uses: ``camera``, ``preprocess.preset`` and the validation cameras of
    ``train`` / ``self_train``."""
    names = [dataset_cfg["camera"], dataset_cfg.get("preprocess", {}).get("preset")]
    names += [dataset_cfg.get(section, {}).get("validation", {}).get("camera") for section in ("train", "self_train")]
    return [name for name in names if name is not None]


def camera_files(config: dict[str, Any]) -> list[Path]:
    """The config's :data:`CAMERA_FILES_KEY` as paths (relative ones against the working directory)."""
    return [Path(path) for path in config.get(CAMERA_FILES_KEY, [])]


def load_config_cameras(config: dict[str, Any]) -> None:
    """Register the cameras of the config's ``camera_files`` (validated; ``ValueError`` naming the file)."""
    for path in camera_files(config):
        try:
            load_camera_file(path)
        except ValueError as err:
            raise ValueError(f"{CAMERA_FILES_KEY}: {err}") from None


def camera_files_env(config: dict[str, Any], environ: Mapping[str, str] | None = None) -> str:
    """The value of :data:`~leod_core.data.cameras.CAMERA_FILES_ENV` the Snakefile exports so that every job
    (``leod ...`` in a rule's shell) knows the config's cameras: the inherited list (``environ``, default
    ``os.environ``), then the config's ``camera_files`` as absolute paths, each once. Loads them first, so a bad
    file fails here with its name."""
    load_config_cameras(config)
    environ = os.environ if environ is None else environ
    items = [item for item in environ.get(CAMERA_FILES_ENV, "").split(os.pathsep) if item]
    for path in camera_files(config):
        absolute = str(path.resolve())
        if absolute not in items:
            items.append(absolute)
    return os.pathsep.join(items)


def ablation_entries(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``ablation.experiments`` list of the config (empty without an ``ablation`` block)."""
    return config.get("ablation", {}).get("experiments", [])


def variant_overlay(config: dict[str, Any], variant: str) -> dict[str, Any]:
    """The config overlay of ``variant`` (``{}`` for ``""``, the base); a clear ``ValueError`` listing the
    known variants for a name that is not under ``variants:``."""
    if not variant:
        return {}
    known = config.get("variants", {})
    if variant not in known:
        raise ValueError(f"unknown variant {variant!r} (known variants: {', '.join(sorted(known)) or 'none'}); "
                         f"define it under 'variants:' in the workflow config")
    return known[variant]


# ------------------------------------------------------------------------------------ experiment settings
def _override_applies(when: dict[str, Any], setting: str, ratio: float) -> bool:
    if "settings" in when and setting not in when["settings"]:
        return False
    if "min_ratio" in when and ratio < when["min_ratio"]:
        return False
    if "max_ratio" in when and ratio > when["max_ratio"]:
        return False
    return True


def experiment_settings(config: dict[str, Any], dataset: str, setting: str, ratio: str | float,
                        variant: str = "") -> dict[str, Any]:
    """Settings of one experiment: ``camera``, ``sequence_length`` and the :data:`MERGED_SECTIONS`, from the
    dataset block refined by every matching entry of its ``overrides`` (in order), then by the overlay of
    ``variant`` (a name of ``variants:``; ``""`` for none)."""
    block = dataset_config(config, dataset)
    ratio_value = check_ratio_wildcard(ratio if isinstance(ratio, str) else format_ratio(ratio), setting)
    overlay = variant_overlay(config, variant)
    out: dict[str, Any] = {"camera": block["camera"], "sequence_length": block["sequence_length"]}
    for section in MERGED_SECTIONS:
        out[section] = copy.deepcopy(block.get(section, {}))
    for override in block.get("overrides", []):
        if _override_applies(override.get("when", {}), setting, ratio_value):
            out = deep_merge(out, {k: v for k, v in override.items() if k != "when"})
    return deep_merge(out, overlay)


def round0_variant(config: dict[str, Any], dataset: str, setting: str, ratio: str | float, variant: str) -> str:
    """The variant whose split and round-0 model the experiment uses: ``""`` (the base experiment's) if
    ``variant`` changes none of :data:`ROUND0_KEYS`, else ``variant`` itself."""
    if not variant:
        return ""
    own = experiment_settings(config, dataset, setting, ratio, variant)
    base = experiment_settings(config, dataset, setting, ratio)
    return "" if all(own[key] == base[key] for key in ROUND0_KEYS) else variant


def downsampled_by_2(camera: str) -> bool:
    """Whether a camera's preprocessed data is read at half resolution (the registry's ``downsampled_by_2``:
    1Mpx / gen4, as RVT and LEOD)."""
    return get_camera(camera).downsampled_by_2


# ------------------------------------------------------------------------------------------ job configs
def train_job_config(settings: dict[str, Any], round_: int) -> dict[str, Any]:
    """The ``leod train --config`` mapping of a round: camera defaults, the experiment's sequence length and
    camera (the validation protocol's), ``train``, and for rounds >= 1 ``self_train`` on top."""
    length = {"data": {"sequence_length": settings["sequence_length"]}, "validation": {"camera": settings["camera"]}}
    cfg = deep_merge(CAMERA_TRAIN_DEFAULTS[settings["camera"]], length)
    cfg = deep_merge(cfg, settings["train"])
    if int(round_) >= 1:
        cfg = deep_merge(cfg, settings["self_train"])
    return cfg


def pseudo_job_config(settings: dict[str, Any]) -> dict[str, Any]:
    """The ``leod pseudo-label --config`` mapping (sections ``tta`` and ``tracker``)."""
    pseudo = settings["pseudo"]
    tta = deep_merge({"sequence_length": settings["sequence_length"]}, pseudo.get("tta", {}))
    return {"tta": tta, "tracker": copy.deepcopy(pseudo.get("tracker", {}))}


def job_config(settings: dict[str, Any], kind: str, round_: int) -> dict[str, Any]:
    """``train`` or ``pseudo`` job config of a round (what the ``job_config`` rule writes as YAML)."""
    if kind == "train":
        return train_job_config(settings, round_)
    if kind == "pseudo":
        if int(round_) < 1:
            raise ValueError("round 0 has no pseudo labels")
        return pseudo_job_config(settings)
    raise ValueError(f"unknown job config kind {kind!r} (train, pseudo)")


def json_arg(value: Any) -> str:
    """``value`` as one shell-quoted JSON word (for ``python -m leod_core.workflow write-config --json``)."""
    return shlex.quote(json.dumps(value, sort_keys=True, separators=(",", ":")))


def train_devices(settings: dict[str, Any], round_: int) -> int:
    """Devices (GPUs on a GPU machine) that one training job of this round uses (``trainer.devices``)."""
    return int(train_job_config(settings, round_).get("trainer", {}).get("devices", 1))


# ------------------------------------------------------------------------------------------- CLI args
def synth_cli_args(synth_config: dict[str, Any]) -> str:
    """``leod synth`` options for a dataset's ``synth`` block (keys checked by the config schema)."""
    return " ".join(f"{_SYNTH_OPTIONS[key]} {value}" for key, value in sorted(synth_config.items()))


def preprocess_cli_args(dataset_cfg: dict[str, Any]) -> str:
    """``leod preprocess`` options: the ``preprocess`` block's preset (default: the camera's) and config."""
    block = dataset_cfg.get("preprocess", {})
    args = f"--preset {block.get('preset', dataset_cfg['camera'])}"
    if "config" in block:
        args += f" --config {shlex.quote(block['config'])}"
    return args


def recordings_cli_args(dataset_cfg: dict[str, Any]) -> str:
    """``python -m leod_core.workflow arrange-recordings`` options: the ``recordings`` block (path, format, holdout)
    and the preprocessing preset and config that ``leod preprocess`` gets (they decide how RVT's h5 files are
    named)."""
    block = dataset_cfg[RECORDINGS_SOURCE]
    flat = {key: value for key, value in block.items() if key != "holdout"}
    flat.update({f"holdout_{key}": value for key, value in block.get("holdout", {}).items()})
    args = [f"{_RECORDINGS_OPTIONS[key]} {shlex.quote(str(value))}" for key, value in sorted(flat.items())]
    return " ".join([*args, preprocess_cli_args(dataset_cfg)])


def evaluate_cli_args(settings: dict[str, Any], device: str) -> str:
    """``leod evaluate`` options: camera, resolution, the ``evaluate`` block (sequence length defaults to the
    experiment's), device."""
    block = {"sequence_length": settings["sequence_length"], **settings["evaluate"]}
    args = [f"--camera {settings['camera']}"]
    if downsampled_by_2(settings["camera"]):
        args.append("--downsampled-by-2")
    args += [f"{_EVALUATE_OPTIONS[key]} {value}" for key, value in sorted(block.items())
             if key not in _EVALUATE_SWITCHES]
    args += [flag for key, flag in sorted(_EVALUATE_SWITCHES.items()) if block.get(key)]
    args.append(f"--device {device}")
    return " ".join(args)


def pseudo_label_cli_args(settings: dict[str, Any], device: str) -> str:
    """``leod pseudo-label`` options besides paths and shard (the rest is in the YAML config)."""
    return f"--camera {settings['camera']} --device {device}"


def label_quality_cli_args(settings: dict[str, Any]) -> str:
    """``leod label-quality`` options: camera, resolution, and the track re-filter's minimum length:
    ``label_quality.refilter_min_track_len`` if set, else the experiment's ``pseudo.tracker.min_track_len``
    (LEOD's ``val_dst.py`` reads the tracker's key, so a variant without the tracker filter measures without
    the re-filter too), else the label-quality default (LEOD's 6)."""
    args = [f"--camera {settings['camera']}"]
    if downsampled_by_2(settings["camera"]):
        args.append("--downsampled-by-2")
    tracker = settings["pseudo"].get("tracker", {})
    refilter = settings["label_quality"].get("refilter_min_track_len", tracker.get("min_track_len"))
    if refilter is not None:
        args.append(f"--refilter-min-track-len {refilter}")
    return " ".join(args)


def video_cli_args(settings: dict[str, Any], device: str) -> str:
    """``leod visualize`` options: camera, resolution, the experiment's sequence length, device."""
    args = [f"--camera {settings['camera']}"]
    if downsampled_by_2(settings["camera"]):
        args.append("--downsampled-by-2")
    args += [f"--sequence-length {settings['sequence_length']}", f"--device {device}"]
    return " ".join(args)
