"""What the workflow builds by default: every configured experiment's rounds, walked through the gates.

Round 0 is always trained and evaluated. Round r >= 1 is trained only if its gate passed (see
:func:`leod_core.workflow.jobs.gate_decision`: rounds before ``self_training.gate.from_round`` and unmeasurable
pseudo labels always pass); nothing after the first failed gate is built, and that gate's
``gate.json`` is the experiment's last file. ``read_gate`` is how the Snakefile reads a gate: through the ``gate``
checkpoint, so an unknown gate schedules the rounds before it (it raises until the gate has run).

``experiments:`` is what ``snakemake`` (``rule all``) builds. ``ablation.experiments`` (variants, each
compared with its base experiment) is what ``snakemake ablation`` builds, and ``rule all`` too where
``ablation.default_target`` is true; their table is ``results/tables/{dataset}_ablation.{md,csv}``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from leod_core.workflow.paths import (ExperimentName, ablation_table_paths, check_offset_wildcard, format_ratio,
                                      gate_path, metrics_path, offset_suffix, table_paths)
from leod_core.workflow.settings import ablation_entries, round0_variant


@dataclass(frozen=True)
class Experiment:
    """One configured experiment: dataset, setting, canonical ratio string, rounds of self-training, variant
    (``""``: none), the variant whose round 0 it uses (``""``: the base experiment's, see
    :func:`~leod_core.workflow.settings.round0_variant`) and the label split's offset (0, 1, 2, ...)."""

    dataset: str
    setting: str
    ratio: str
    max_rounds: int
    variant: str = ""
    round0_variant: str = ""
    split_offset: int = 0

    @property
    def name(self) -> str:
        """``{setting}_{ratio}[-s{k}][+{variant}]``, the experiment's directory name."""
        return str(ExperimentName(self.setting, self.ratio, self.split_offset, self.variant))


def split_offsets(config: dict[str, Any], entry: dict[str, Any]) -> list[int]:
    """The label split offsets an ``experiments`` entry runs: its ``split_offsets``, else the config's top-level
    ``split_offsets``; ``full`` has one split (offset 0) whatever the default says."""
    if entry["setting"] == "full" and "split_offsets" not in entry:
        return [0]
    return list(entry.get("split_offsets", config.get("split_offsets", [0])))


def _experiments(config: dict[str, Any], entry: dict[str, Any]) -> list[Experiment]:
    """One :class:`Experiment` per label split offset of a config entry."""
    ratio, variant = format_ratio(entry["ratio"]), entry.get("variant", "")
    rounds = int(entry.get("max_rounds", config["self_training"]["max_rounds"]))
    shared = round0_variant(config, entry["dataset"], entry["setting"], ratio, variant)
    found = []
    for offset in split_offsets(config, entry):
        check_offset_wildcard(offset_suffix(offset), entry["setting"])
        found.append(Experiment(entry["dataset"], entry["setting"], ratio, rounds, variant, shared, offset))
    return found


def _unique(found: list[Experiment], key: str) -> list[Experiment]:
    seen = set()
    for exp in found:
        if (exp.dataset, exp.name) in seen:
            raise ValueError(f"{key}: experiment {exp.dataset} {exp.name} is configured twice")
        seen.add((exp.dataset, exp.name))
    return found


def experiments(config: dict[str, Any]) -> list[Experiment]:
    """The configured experiments; ``max_rounds`` defaults to ``self_training.max_rounds``."""
    return _unique([exp for e in config["experiments"] for exp in _experiments(config, e)], "experiments")


def ablation_experiments(config: dict[str, Any]) -> list[Experiment]:
    """``ablation.experiments``, each followed by its base experiment (same dataset, setting and ratio, no
    variant, as many rounds as its variants) unless that is listed itself."""
    variants = _unique([exp for e in ablation_entries(config) for exp in _experiments(config, e)],
                       "ablation.experiments")
    bases: dict[tuple[str, str, str, int], int] = {}
    for exp in variants:
        key = (exp.dataset, exp.setting, exp.ratio, exp.split_offset)
        bases[key] = max(bases.get(key, 0), exp.max_rounds)
    listed = {(exp.dataset, exp.name) for exp in variants}
    extra = [Experiment(d, s, r, rounds, split_offset=k) for (d, s, r, k), rounds in sorted(bases.items())
             if (d, str(ExperimentName(s, r, k))) not in listed]
    return variants + extra


def read_gate_file(path: str | Path) -> dict[str, Any]:
    """A ``gate.json`` as written by :func:`leod_core.workflow.jobs.gate_decision`."""
    with open(path, encoding="utf-8") as f:
        try:
            gate = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not a gate decision: not valid JSON ({err})") from err
    if not isinstance(gate, dict) or not isinstance(gate.get("passed"), bool):
        raise ValueError(f"{path}: not a gate decision (needs a boolean 'passed')")
    return gate


def round_targets(exp: Experiment, round_: int, read_gate: Callable[[int], dict[str, Any]],
                  from_round: int = 1) -> list[str]:
    """Files of round ``round_`` of ``exp`` that the default run builds: round 0's test metrics; for a round
    r >= 1 its ``gate.json``, plus its test metrics if the gate passed; nothing if an earlier gate failed.
    Gates of rounds before ``from_round`` (``self_training.gate.from_round``) cannot stop them, so they are not
    read (not waited for): a dry run plans those rounds to their test metrics.

    ``rule all`` takes one such list per round (each its own input function), so evaluating round r never
    waits for round r + 1's gate."""
    d, s, r, v, k = exp.dataset, exp.setting, exp.ratio, exp.variant, exp.split_offset
    if round_ == 0:
        return [metrics_path(d, s, r, 0, exp.round0_variant, split_offset=k)]
    if not 1 <= round_ <= exp.max_rounds:
        raise ValueError(f"round {round_} is not in 0..{exp.max_rounds}")
    for earlier in range(max(1, from_round), round_):
        if not read_gate(earlier)["passed"]:
            return []
    targets = [gate_path(d, s, r, round_, v, split_offset=k)]
    if round_ < from_round or read_gate(round_)["passed"]:
        targets.append(metrics_path(d, s, r, round_, v, split_offset=k))
    return targets


def experiment_rounds(config: dict[str, Any]) -> list[tuple[Experiment, int]]:
    """(experiment, round) for every configured experiment and each of its rounds 0..max_rounds."""
    return _rounds(experiments(config))


def ablation_rounds(config: dict[str, Any]) -> list[tuple[Experiment, int]]:
    """(experiment, round) of :func:`ablation_experiments`."""
    return _rounds(ablation_experiments(config))


def _rounds(found: list[Experiment]) -> list[tuple[Experiment, int]]:
    return [(exp, round_) for exp in found for round_ in range(exp.max_rounds + 1)]


def default_datasets(config: dict[str, Any]) -> list[str]:
    """Datasets that have configured experiments (they get a table)."""
    return sorted({exp.dataset for exp in experiments(config)})


def default_tables(config: dict[str, Any]) -> list[str]:
    """The table files of the configured experiments (``rule tables``)."""
    return table_paths(default_datasets(config))


def ablation_datasets(config: dict[str, Any]) -> list[str]:
    """Datasets with ablation experiments (they get an ablation table)."""
    return sorted({exp.dataset for exp in ablation_experiments(config)})


def ablation_tables(config: dict[str, Any]) -> list[str]:
    """The ablation table files (``rule ablation_tables``)."""
    return ablation_table_paths(ablation_datasets(config))


def ablation_by_default(config: dict[str, Any]) -> bool:
    """Whether ``rule all`` builds the ablation too (``ablation.default_target``)."""
    return bool(config.get("ablation", {}).get("default_target", False))


def gate_failure_message(gate: dict[str, Any], path: str, round_: int) -> str:
    """Why round ``round_`` is not trained (for an explicit target past a failed gate), and which
    ``self_training.gate`` setting would train it."""
    remedy = ("lower self_training.gate.threshold" if gate.get("rule", "threshold") == "threshold"
              else "set self_training.gate.rule to threshold")
    return (f"round {round_} is not trained: its gate failed ({gate.get('reason', 'see the file')}; {path}). "
            f"To train it anyway, {remedy} or raise self_training.gate.from_round above {round_}.")


def finished_message(tables: list[str]) -> str:
    """What a finished run prints: where its tables (those of ``tables`` that exist), plots and report are."""
    written = [path for path in tables if Path(path).is_file()]
    if not written:
        return "LEOD workflow finished; no table was asked for."
    markdown = [path for path in written if path.endswith(".md")]
    return (f"LEOD workflow finished. Tables: {', '.join(markdown or written)} (CSV next to them); "
            f"plots: results/plots/; an HTML report: snakemake --report report.html")
