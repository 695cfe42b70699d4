"""What the workflow builds by default: every configured experiment's rounds, walked through the gates.

Round 0 is always trained and evaluated. Round r >= 1 is trained only if its gate passed (pseudo-label
precision at the configured IoU >= threshold); nothing after the first failed gate is built, and that gate's
``gate.json`` is the experiment's last file. ``read_gate`` is how the Snakefile reads a gate: through the ``gate``
checkpoint, so an unknown gate schedules the rounds before it (it raises until the gate has run).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from leod_core.workflow.paths import format_ratio, gate_path, metrics_path, table_paths


@dataclass(frozen=True)
class Experiment:
    """One configured experiment: dataset, setting, canonical ratio string, rounds of self-training."""

    dataset: str
    setting: str
    ratio: str
    max_rounds: int

    @property
    def wildcards(self) -> dict[str, str]:
        return {"dataset": self.dataset, "setting": self.setting, "ratio": self.ratio}


def experiments(config: dict[str, Any]) -> list[Experiment]:
    """The configured experiments; ``max_rounds`` defaults to ``self_training.max_rounds``."""
    default_rounds = config["self_training"]["max_rounds"]
    out = [Experiment(e["dataset"], e["setting"], format_ratio(e["ratio"]), int(e.get("max_rounds", default_rounds)))
           for e in config["experiments"]]
    seen = set()
    for exp in out:
        key = (exp.dataset, exp.setting, exp.ratio)
        if key in seen:
            raise ValueError(f"experiment {exp.dataset} {exp.setting}_{exp.ratio} is configured twice")
        seen.add(key)
    return out


def read_gate_file(path: str | Path) -> dict[str, Any]:
    """A ``gate.json`` as written by :func:`leod_core.workflow.jobs.gate_decision`."""
    with open(path, encoding="utf-8") as f:
        gate = json.load(f)
    if not isinstance(gate, dict) or not isinstance(gate.get("passed"), bool):
        raise ValueError(f"{path}: not a gate decision (needs a boolean 'passed')")
    return gate


def round_targets(exp: Experiment, round_: int, read_gate: Callable[[int], dict[str, Any]]) -> list[str]:
    """Files of round ``round_`` of ``exp`` that the default run builds: round 0's test metrics; for a round
    r >= 1 its ``gate.json``, plus its test metrics if the gate passed; nothing if an earlier gate failed.

    ``rule all`` takes one such list per round (each its own input function), so evaluating round r never
    waits for round r + 1's gate."""
    d, s, r = exp.dataset, exp.setting, exp.ratio
    if round_ == 0:
        return [metrics_path(d, s, r, 0)]
    if not 1 <= round_ <= exp.max_rounds:
        raise ValueError(f"round {round_} is not in 0..{exp.max_rounds}")
    for earlier in range(1, round_):
        if not read_gate(earlier)["passed"]:
            return []
    targets = [gate_path(d, s, r, round_)]
    if read_gate(round_)["passed"]:
        targets.append(metrics_path(d, s, r, round_))
    return targets


def experiment_rounds(config: dict[str, Any]) -> list[tuple[Experiment, int]]:
    """(experiment, round) for every configured experiment and each of its rounds 0..max_rounds."""
    return [(exp, round_) for exp in experiments(config) for round_ in range(exp.max_rounds + 1)]


def default_datasets(config: dict[str, Any]) -> list[str]:
    """Datasets that have configured experiments (they get a table)."""
    return sorted({exp.dataset for exp in experiments(config)})


def default_tables(config: dict[str, Any]) -> list[str]:
    """The table files ``rule all`` asks for."""
    return table_paths(default_datasets(config))


def gate_failure_message(gate: dict[str, Any], path: str, round_: int) -> str:
    """Why round ``round_`` is not trained (for an explicit target past a failed gate)."""
    return (f"round {round_} is not trained: its gate failed ({gate.get('reason', 'see the file')}; {path}). "
            f"Lower self_training.gate.threshold to train it anyway.")


def finished_message(tables: list[str]) -> str:
    """What a finished run prints: where its tables (those of ``tables`` that exist), plots and report are."""
    written = [path for path in tables if Path(path).is_file()]
    if not written:
        return "LEOD workflow finished; no table was asked for."
    markdown = [path for path in written if path.endswith(".md")]
    return (f"LEOD workflow finished. Tables: {', '.join(markdown or written)} (CSV next to them); "
            f"plots: results/plots/; an HTML report: snakemake --report report.html")
