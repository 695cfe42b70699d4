"""Paths and wildcards of the workflow (``docs/layout.md``): the one place that spells them.

Every experiment lives in ``results/{dataset}/{setting}_{ratio}[-s{k}][+{variant}]``
(:class:`ExperimentName`): ``-s{k}`` is the label split with offset ``k >= 1`` (LEOD's "offset the index when
sub-sampling"; no suffix is offset 0) and ``+{variant}`` names an overlay of the config's ``variants:``.
A ratio in a path must be the canonical decimal string of :func:`format_ratio` (``0.01``, not ``0.010`` or
``1e-2``), so one experiment has exactly one directory.

Every job also writes a log, ``logs/{job}.log`` (:func:`log_path`), and Snakemake's benchmark file (its run time
and memory), ``logs/benchmarks/{job}.tsv`` (:func:`benchmark_path`), where ``{job}`` is the job's main output
below ``results/`` (``{dataset}/{experiment}/round{r}/eval`` for an evaluation): both trees mirror ``results/``.
The top-level ``benchmarks/`` holds the benchmark scripts, not these files.

In the rules the ``offset`` and ``variant`` wildcards hold the suffixes themselves: ``""`` (offset 0, no variant),
``"-s1"``, ``"+no-tta"``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from leod_core.data.splits import FULL_RATIO, SETTINGS, parse_ratio

#: Wildcard constraints shared by all rules. ``ratio`` is deliberately loose (anything without ``/``, ``_``,
#: ``+``, ``-``): a malformed ratio then reaches :func:`check_ratio_wildcard`, which rejects it with a message, instead
#: of Snakemake's bare "no rule to produce". ``variant`` (empty or ``+name``) is as loose, so that an unknown
#: name reaches :func:`leod_core.workflow.settings.variant_overlay`, which lists the known ones.
WILDCARD_PATTERNS = {
    "dataset": r"[A-Za-z0-9-]+",
    "setting": "|".join(SETTINGS),
    "ratio": r"[^/_+-]+",
    "offset": r"(-[^/+]*)?",
    "variant": r"(\+[^/]+)?",
    "round": r"0|[1-9][0-9]*",
    "shard": r"0|[1-9][0-9]*",
}
#: Rounds that are trained on pseudo labels (and whose pseudo labels / gate exist): 1, 2, ...
SELF_TRAINING_ROUND = r"[1-9][0-9]*"
#: Separates the variant from ``{setting}_{ratio}[-s{k}]`` in an experiment directory.
VARIANT_SEPARATOR = "+"
#: Starts the label split's offset after ``{setting}_{ratio}``: ``wsod_0.01-s1`` is split offset 1.
SPLIT_SEPARATOR = "-s"
_OFFSET_SUFFIX = re.compile(r"^-s(?P<offset>[1-9][0-9]*)$")
_EXPERIMENT_NAME = re.compile(r"^(?P<setting>[A-Za-z0-9]+)_(?P<ratio>[^/_+-]+)(?P<offset>-[^/+]*)?"
                              r"(?:\+(?P<variant>[^/]+))?$")
#: Directory names under ``results/`` that are not datasets, and under ``results/downloads/`` that hold no dataset
#: archive (``weights``: released round-0 checkpoints, :mod:`leod_core.workflow.round0`).
#: ``benchmarks``: ``logs/benchmarks/`` holds the benchmark files beside the logs.
RESERVED_NAMES = ("data", "raw", "tables", "plots", "videos", "downloads", "weights", "benchmarks")

# ------------------------------------------------------------------------------------------- trees and files
#: The workflow's output trees (relative to its working directory).
RESULTS_DIR = "results"
LOGS_DIR = "logs"
BENCHMARKS_DIR = f"{LOGS_DIR}/benchmarks"
#: Preprocessed data of a dataset (RVT layout); the marker file is written last.
DATA_DIR_TEMPLATE = f"{RESULTS_DIR}/data/{{dataset}}"
DATA_MARKER_NAME = "preprocess_summary.json"
DATA_MARKER_TEMPLATE = f"{DATA_DIR_TEMPLATE}/{DATA_MARKER_NAME}"
#: The training sequences' index (:mod:`leod_core.data.sequence_index`), written once per dataset; the split and
#: shard-list jobs read it instead of every sequence's files.
SEQUENCE_INDEX_TEMPLATE = f"{DATA_DIR_TEMPLATE}/sequence_index.json"
#: Paper tables (``{dataset}.md`` / ``.csv``, ``{dataset}_ablation.*``) and plots.
TABLES_DIR = f"{RESULTS_DIR}/tables"
PLOTS_DIR = f"{RESULTS_DIR}/plots"
#: An experiment directory's name and an experiment's / a round's place below a tree, as Snakemake templates
#: (``{offset}``, ``{variant}``: the suffixes, see above).
EXPERIMENT_NAME_TEMPLATE = "{setting}_{ratio}{offset}{variant}"
EXPERIMENT_TEMPLATE = f"{{dataset}}/{EXPERIMENT_NAME_TEMPLATE}"
ROUND_TEMPLATE = f"{EXPERIMENT_TEMPLATE}/round{{round}}"
#: A round's files, relative to its directory.
METRICS_FILE = "eval/test_metrics.json"
GATE_FILE = "gate.json"
QUALITY_FILE = "pseudo/quality.json"
SHARD_LIST_FILE = "pseudo/shard_list.json"
#: The pseudo-label shard directories ``{k}/`` of a round; in logs/ and logs/benchmarks/, the shard jobs'
#: ``{k}.log`` and ``{k}.tsv``.
SHARDS_DIR = "pseudo/shards"
#: The benchmark files of a round's pseudo-label shard jobs, relative to the round's place in ``logs/benchmarks/``.
SHARD_BENCHMARKS = f"{SHARDS_DIR}/*.tsv"
#: A round's directory below ``results/`` whatever its dataset and experiment (a glob).
ANY_ROUND = "*/*/round*"


def result_path(job: str) -> str:
    """``results/{job}``."""
    return f"{RESULTS_DIR}/{job}"


def log_path(job: str) -> str:
    """The log of the job whose output is ``results/{job}``: ``logs/{job}.log``."""
    return f"{LOGS_DIR}/{job}.log"


def benchmark_path(job: str) -> str:
    """The Snakemake benchmark file of the job whose log is :func:`log_path` ``(job)``:
    ``logs/benchmarks/{job}.tsv``."""
    return f"{BENCHMARKS_DIR}/{job}.tsv"


def round_place(dataset: str, experiment: str | ExperimentName, round_: int | str) -> str:
    """``{dataset}/{experiment}/round{r}``: a round's place below ``results/``, ``logs/`` and ``logs/benchmarks/``."""
    return f"{dataset}/{experiment}/round{int(round_)}"


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


def offset_suffix(offset: int) -> str:
    """The ``offset`` wildcard of a label split offset: ``0`` -> ``""``, ``1`` -> ``"-s1"``."""
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"a split offset is an integer >= 0, got {offset!r}")
    return f"{SPLIT_SEPARATOR}{offset}" if offset else ""


def split_offset(suffix: str) -> int:
    """The label split offset of an ``offset`` wildcard: ``""`` -> 0, ``"-s2"`` -> 2; a clear ``ValueError``
    for anything else (``-s0``, ``-s01``, ``-x1``: one directory per experiment)."""
    if not suffix:
        return 0
    match = _OFFSET_SUFFIX.match(suffix)
    if match is None:
        raise ValueError(f"unknown experiment suffix {suffix!r}: a label split other than offset 0 is written "
                         f"'-s<k>' with k >= 1 (e.g. wsod_0.01-s1); offset 0 has no suffix")
    return int(match["offset"])


def check_offset_wildcard(suffix: str, setting: str) -> int:
    """The split offset of an ``offset`` wildcard (:func:`split_offset`); ``full`` has a single split (offset 0)."""
    offset = split_offset(suffix)
    if setting == "full" and offset:
        raise ValueError(f"setting 'full' keeps every label and has a single split: 'full_1{suffix}' is not an "
                         f"experiment, use 'full_1'")
    return offset


@dataclass(frozen=True)
class ExperimentName:
    """The parts of an experiment directory name ``{setting}_{ratio}[-s{k}][+{variant}]``.

    Invariants: ``ratio`` is canonical (:func:`format_ratio`), ``split_offset >= 0`` (0 for ``full``),
    ``variant`` is ``""`` or a name without ``/``."""

    setting: str
    ratio: str
    split_offset: int = 0
    variant: str = ""

    def __str__(self) -> str:
        return f"{self.setting}_{self.ratio}{offset_suffix(self.split_offset)}{variant_suffix(self.variant)}"

    @classmethod
    def parse(cls, name: str) -> "ExperimentName":
        """Parse a directory name; ``ValueError`` naming the problem for one that is not laid out so (an unknown
        suffix, a ratio that is not canonical, ``full`` with a split offset)."""
        match = _EXPERIMENT_NAME.match(name)
        if match is None:
            raise ValueError(f"{name!r} is not an experiment name {{setting}}_{{ratio}}[-s<k>][+variant]")
        setting, ratio = match["setting"], match["ratio"]
        check_ratio_wildcard(ratio, setting)
        offset = check_offset_wildcard(match["offset"] or "", setting)
        return cls(setting, ratio, offset, match["variant"] or "")


def variant_suffix(variant: str) -> str:
    """The ``variant`` wildcard of a variant name: ``""`` -> ``""``, ``"no-tta"`` -> ``"+no-tta"``."""
    return f"{VARIANT_SEPARATOR}{variant}" if variant else ""


def variant_name(suffix: str) -> str:
    """The variant name of a ``variant`` wildcard: ``"+no-tta"`` -> ``"no-tta"``, ``""`` -> ``""``."""
    return suffix.removeprefix(VARIANT_SEPARATOR)


def experiment_dir(dataset: str, setting: str, ratio: float | str, variant: str = "", *, split_offset: int = 0
                   ) -> str:
    """``results/{dataset}/{setting}_{ratio}[-s{k}][+{variant}]`` for one experiment."""
    return result_path(f"{dataset}/{ExperimentName(setting, format_ratio(ratio), split_offset, variant)}")


def round_dir(dataset: str, setting: str, ratio: float | str, round_: int | str, variant: str = "", *,
              split_offset: int = 0) -> str:
    """``results/{dataset}/{setting}_{ratio}[-s{k}][+{variant}]/round{r}``."""
    return f"{experiment_dir(dataset, setting, ratio, variant, split_offset=split_offset)}/round{int(round_)}"


def metrics_path(dataset: str, setting: str, ratio: float | str, round_: int | str, variant: str = "", *,
                 split_offset: int = 0) -> str:
    """Test-split metrics of one round's model."""
    return f"{round_dir(dataset, setting, ratio, round_, variant, split_offset=split_offset)}/{METRICS_FILE}"


def gate_path(dataset: str, setting: str, ratio: float | str, round_: int | str, variant: str = "", *,
              split_offset: int = 0) -> str:
    """Gate decision for training round ``round_`` (>= 1) on its pseudo labels."""
    return f"{round_dir(dataset, setting, ratio, round_, variant, split_offset=split_offset)}/{GATE_FILE}"


def table_paths(datasets: list[str] | tuple[str, ...]) -> list[str]:
    """``results/tables/{dataset}.md`` and ``.csv`` of every dataset, sorted."""
    return [f"{TABLES_DIR}/{d}.{ext}" for d in sorted(set(datasets)) for ext in ("md", "csv")]


def ablation_table_paths(datasets: list[str] | tuple[str, ...]) -> list[str]:
    """``results/tables/{dataset}_ablation.md`` and ``.csv`` of every dataset, sorted."""
    return [f"{TABLES_DIR}/{d}_ablation.{ext}" for d in sorted(set(datasets)) for ext in ("md", "csv")]
