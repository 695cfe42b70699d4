"""Helpers for the Snakemake rules (targets, wildcard patterns, CLI arguments from config).

The only place that knows the workflow's config layout; the library below it takes explicit arguments.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from leod_core.data.splits import SETTINGS, parse_ratio

#: Wildcard constraints shared by all rules. ``ratio`` is deliberately loose: a malformed ratio reaches
#: ``leod split``, which rejects it with a message naming the value.
WILDCARD_PATTERNS = {
    "dataset": r"[A-Za-z0-9-]+",
    "setting": "|".join(SETTINGS),
    "ratio": r"[^/_+]+",
}

#: ``leod synth`` option for each key of a dataset's ``synth`` config block.
_SYNTH_OPTIONS = {
    "seed": "--seed", "height": "--height", "width": "--width", "duration_s": "--duration-s",
    "num_train": "--num-train", "num_val": "--num-val", "num_test": "--num-test",
}


def format_ratio(ratio: float | str) -> str:
    """Canonical decimal string of a label ratio for paths: 0.1 -> '0.1', 1 -> '1' (never exponent form)."""
    return np.format_float_positional(parse_ratio(ratio), trim="-")


def experiment_dir(dataset: str, setting: str, ratio: float | str) -> str:
    """``results/{dataset}/{setting}_{ratio}`` for one experiment."""
    return f"results/{dataset}/{setting}_{format_ratio(ratio)}"


def default_targets(config: dict[str, Any]) -> list[str]:
    """Files ``rule all`` asks for: the split of every configured experiment."""
    return [f"{experiment_dir(e['dataset'], e['setting'], e['ratio'])}/split.json" for e in config["experiments"]]


def synth_cli_args(synth_config: dict[str, Any]) -> str:
    """``leod synth`` options for a dataset's ``synth`` block (keys checked by the config schema)."""
    return " ".join(f"{_SYNTH_OPTIONS[key]} {value}" for key, value in sorted(synth_config.items()))


def preprocess_cli_args(preprocess_config: dict[str, Any]) -> str:
    """``leod preprocess`` options for a dataset's ``preprocess`` block."""
    args = f"--preset {preprocess_config['preset']}"
    if "config" in preprocess_config:
        args += f" --config {preprocess_config['config']}"
    return args
