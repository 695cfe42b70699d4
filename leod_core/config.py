"""Typed configuration from plain mappings: dataclass defaults overridden by YAML/JSON values."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")

#: Settings renamed so that each idea has one name in config, CLI and code: ``(parent key or None for any
#: parent, old key) -> new key``. An old key is an error naming the new one (:func:`renamed_setting_errors`).
RENAMED_SETTINGS: dict[tuple[str | None, str], str] = {
    (None, "downsample_by_2"): "downsampled_by_2",
    (None, "confidence"): "confidence_threshold",
    (None, "score_threshold"): "confidence_threshold",
    ("label_quality", "min_track_len"): "refilter_min_track_len",
    (None, "nms"): "nms_threshold",
}


def renamed_to(parent: str | None, key: str) -> str | None:
    """The new name of setting ``key`` under ``parent`` if it was renamed, else ``None``."""
    return RENAMED_SETTINGS.get((parent, key)) or RENAMED_SETTINGS.get((None, key))


def renamed_setting_errors(mapping: Any, source: str, parent: str | None = None) -> list[str]:
    """One message per renamed key anywhere in the nested ``mapping`` (dicts and lists of dicts), naming its
    path in ``source`` and its new name."""
    errors: list[str] = []
    if isinstance(mapping, list):
        for index, item in enumerate(mapping):
            errors += renamed_setting_errors(item, f"{source}[{index}]", parent)
    elif isinstance(mapping, dict):
        for key, value in mapping.items():
            new = renamed_to(parent, str(key))
            if new is not None:
                errors.append(f"{source}.{key}: this setting was renamed to '{new}'")
            errors += renamed_setting_errors(value, f"{source}.{key}", str(key))
    return errors


def replace_fields(base: T, overrides: dict[str, Any], source: str) -> T:
    """Return dataclass ``base`` with ``overrides`` applied; nested dataclasses take nested mappings, tuple
    fields take lists. An unknown key raises ``ValueError`` naming it and ``source``."""
    if not isinstance(overrides, dict):
        raise ValueError(f"{source}: expected a mapping, got {type(overrides).__name__}")
    fields = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            new = RENAMED_SETTINGS.get((None, key))
            if new in fields:
                raise ValueError(f"{source}: the setting '{key}' was renamed to '{new}'")
            raise ValueError(f"{source}: unknown setting '{key}' (known: {', '.join(sorted(fields))})")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = replace_fields(current, value, f"{source}.{key}")
        elif isinstance(value, list) and (current is None or isinstance(current, tuple)):
            value = tuple(value)
        changes[key] = value
    return dataclasses.replace(base, **changes)


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """``yaml.safe_load`` a file that must hold a mapping (an empty file is an empty mapping)."""
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of settings")
    return data
