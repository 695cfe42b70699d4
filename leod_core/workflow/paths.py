"""Paths and wildcards of the workflow (``DESIGN.md`` §1): the one place that spells them.

Every experiment lives in ``results/{dataset}/{setting}_{ratio}``, an ablation or model variant in
``results/{dataset}/{setting}_{ratio}+{variant}`` (``{variant}`` names an overlay of the config's ``variants:``);
``logs/`` and ``benchmarks/`` mirror ``results/``. A ratio in a path must be the canonical decimal string of
:func:`format_ratio` (``0.01``, not ``0.010`` or ``1e-2``), so one experiment has exactly one directory.

In the rules the ``variant`` wildcard holds the suffix itself: ``""`` (no variant) or ``"+no-tta"``.
"""
from __future__ import annotations

import numpy as np

from leod_core.data.splits import FULL_RATIO, SETTINGS, parse_ratio

#: Wildcard constraints shared by all rules. ``ratio`` is deliberately loose (anything without ``/``, ``_``,
#: ``+``): a malformed ratio then reaches :func:`check_ratio_wildcard`, which rejects it with a message, instead
#: of Snakemake's bare "no rule to produce". ``variant`` (empty or ``+name``) is as loose, so that an unknown
#: name reaches :func:`leod_core.workflow.settings.variant_overlay`, which lists the known ones.
WILDCARD_PATTERNS = {
    "dataset": r"[A-Za-z0-9-]+",
    "setting": "|".join(SETTINGS),
    "ratio": r"[^/_+]+",
    "variant": r"(\+[^/]+)?",
    "round": r"0|[1-9][0-9]*",
    "shard": r"0|[1-9][0-9]*",
}
#: Rounds that are trained on pseudo labels (and whose pseudo labels / gate exist): 1, 2, ...
SELF_TRAINING_ROUND = r"[1-9][0-9]*"
#: Separates the variant from ``{setting}_{ratio}`` in an experiment directory.
VARIANT_SEPARATOR = "+"
#: Directory names under ``results/`` that are not datasets.
RESERVED_NAMES = ("data", "raw", "tables", "plots", "videos")


def format_ratio(ratio: float | str) -> str:
    """Canonical decimal string of a label ratio for paths: 0.1 -> '0.1', 1 -> '1' (never exponent form)."""
    return np.format_float_positional(parse_ratio(ratio), trim="-")


def check_ratio_wildcard(ratio: str, setting: str) -> float:
    """The ratio of a target path as a float; a clear ``ValueError`` if it is malformed, not canonical, or
    not 1 for setting ``full``."""
    hint = f"in '{setting}_{ratio}': write the label ratio as a decimal in (0, 1], e.g. {setting}_0.01"
    try:
        value = parse_ratio(ratio)
    except ValueError as err:
        raise ValueError(f"malformed ratio {err.args[0].removeprefix('ratio ')} {hint}") from None
    canonical = format_ratio(value)
    if canonical != ratio:
        raise ValueError(f"ratio {ratio!r} is not written canonically: use '{setting}_{canonical}' "
                         f"(one directory per experiment)")
    if setting == "full" and value != FULL_RATIO:
        raise ValueError(f"setting 'full' keeps every label: its ratio must be 1 ('full_1'), got {ratio!r}")
    return value


def variant_suffix(variant: str) -> str:
    """The ``variant`` wildcard of a variant name: ``""`` -> ``""``, ``"no-tta"`` -> ``"+no-tta"``."""
    return f"{VARIANT_SEPARATOR}{variant}" if variant else ""


def variant_name(suffix: str) -> str:
    """The variant name of a ``variant`` wildcard: ``"+no-tta"`` -> ``"no-tta"``, ``""`` -> ``""``."""
    return suffix.removeprefix(VARIANT_SEPARATOR)


def experiment_dir(dataset: str, setting: str, ratio: float | str, variant: str = "") -> str:
    """``results/{dataset}/{setting}_{ratio}[+{variant}]`` for one experiment."""
    return f"results/{dataset}/{setting}_{format_ratio(ratio)}{variant_suffix(variant)}"


def round_dir(dataset: str, setting: str, ratio: float | str, round_: int | str, variant: str = "") -> str:
    """``results/{dataset}/{setting}_{ratio}[+{variant}]/round{r}``."""
    return f"{experiment_dir(dataset, setting, ratio, variant)}/round{int(round_)}"


def metrics_path(dataset: str, setting: str, ratio: float | str, round_: int | str, variant: str = "") -> str:
    """Test-split metrics of one round's model."""
    return f"{round_dir(dataset, setting, ratio, round_, variant)}/eval/test_metrics.json"


def gate_path(dataset: str, setting: str, ratio: float | str, round_: int | str, variant: str = "") -> str:
    """Gate decision for training round ``round_`` (>= 1) on its pseudo labels."""
    return f"{round_dir(dataset, setting, ratio, round_, variant)}/gate.json"


def table_paths(datasets: list[str] | tuple[str, ...]) -> list[str]:
    """``results/tables/{dataset}.md`` and ``.csv`` of every dataset, sorted."""
    return [f"results/tables/{d}.{ext}" for d in sorted(set(datasets)) for ext in ("md", "csv")]


def ablation_table_paths(datasets: list[str] | tuple[str, ...]) -> list[str]:
    """``results/tables/{dataset}_ablation.md`` and ``.csv`` of every dataset, sorted."""
    return [f"results/tables/{d}_ablation.{ext}" for d in sorted(set(datasets)) for ext in ("md", "csv")]

