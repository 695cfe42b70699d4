"""Typed configuration from plain mappings: dataclass defaults overridden by YAML/JSON values."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def replace_fields(base: T, overrides: dict[str, Any], source: str) -> T:
    """Return dataclass ``base`` with ``overrides`` applied; nested dataclasses take nested mappings, tuple
    fields take lists. An unknown key raises ``ValueError`` naming it and ``source``."""
    if not isinstance(overrides, dict):
        raise ValueError(f"{source}: expected a mapping, got {type(overrides).__name__}")
    fields = {f.name for f in dataclasses.fields(base)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
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
