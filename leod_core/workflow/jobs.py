"""The small workflow jobs that are not library computations (``python -m leod_core.workflow <command>``):
the gate decision, the shard list, job config files, and linking user-provided data into ``results/``.

Every file is written atomically (temporary name, then rename).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from leod_core.data import sequence_index
from leod_core.data.atomic import write_text_atomic
from leod_core.pseudo import shard_list as pseudo_shard_list
from leod_core.pseudo.shard_list import make_shard_list, read_shard_list, split_sequence_lengths
from leod_core.workflow.settings import downsampled_by_2, requested_shards

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def threshold_key(iou: float) -> str:
    """JSON key of an IoU threshold in quality.json (as ``leod_core.pseudo.quality.threshold_key``, without
    importing torch): ``0.5 -> "0.5"``."""
    return format(float(iou), "g")


# ------------------------------------------------------------------------------------------------ gate
GATE_RULES = ("threshold", "no_drop")


@dataclass(frozen=True)
class GateConfig:
    """``self_training.gate`` (the schema holds the defaults and the docs). ``threshold``: minimum precision
    (fraction) of rule ``threshold``; ``iou``: IoU of the precision; ``rule``: ``threshold`` or ``no_drop``
    (precision not below round r-1's); rounds before ``from_round`` always train."""

    threshold: float
    iou: float
    rule: str
    from_round: int


def needs_previous_quality(gate: GateConfig, round_: int) -> bool:
    """Whether round ``round_``'s gate compares with round r-1's quality.json (rule no_drop, a decided round)."""
    return gate.rule == "no_drop" and round_ >= gate.from_round


def gate_decision(quality: dict[str, Any], round_: int, gate: GateConfig,
                  previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Whether round ``round_`` trains on pseudo labels of quality ``quality`` (``quality.json``; ``previous``:
    round r-1's, needed by a decided ``no_drop`` round). Returns the gate.json object: the decision, whether
    the gate ``decided`` it, the precision (mean over classes, fraction) and recall at ``gate.iou``, the
    ``threshold`` the precision had to reach (``None`` if not decided) and the reason in words.

    Not decided, and so trained: rounds before ``gate.from_round``, and pseudo labels without withheld ground
    truth to measure them on (setting ``full``: precision ``None``); LEOD itself has no gate."""
    if not 0.0 <= gate.threshold <= 1.0:
        raise ValueError(f"self_training.gate.threshold must be in [0, 1], got {gate.threshold}")
    if gate.rule not in GATE_RULES:
        raise ValueError(f"self_training.gate.rule {gate.rule!r} is not one of {GATE_RULES}")
    key = threshold_key(gate.iou)
    precision = _precision(quality, key)
    bar, reason = None, _undecided_reason(round_, gate, precision)
    if reason is None:
        if gate.rule == "threshold":
            bar, what = gate.threshold, f"threshold {gate.threshold:g}"
        else:
            bar = _previous_precision(previous, round_, key)
            what = f"round {round_ - 1}'s precision {bar:.4f} (rule no_drop)"
        reason = f"precision@{key} {precision:.4f} {'>=' if precision >= bar else '<'} {what}"
    per_class = {name: (c.get("precision") or {}).get(key) for name, c in (quality.get("per_class") or {}).items()}
    return {"passed": bar is None or bool(precision >= bar), "decided": bar is not None, "round": round_,
            "rule": gate.rule, "from_round": gate.from_round, "precision": precision, "threshold": bar,
            "iou": float(gate.iou), "recall": (quality.get("recall") or {}).get(key),
            "num_frames": quality.get("num_frames"), "reason": reason, "per_class_precision": per_class}


def _precision(quality: dict[str, Any], key: str) -> float | None:
    """Precision at IoU ``key`` of a quality.json object (``None``: nothing withheld to measure it on)."""
    precision_by_iou = quality.get("precision")
    if not isinstance(precision_by_iou, dict) or key not in precision_by_iou:
        known = sorted(precision_by_iou) if isinstance(precision_by_iou, dict) else []
        raise ValueError(f"quality has no precision at IoU {key} (has {known}); set self_training.gate.iou "
                         f"to one of them")
    return precision_by_iou[key]


def _undecided_reason(round_: int, gate: GateConfig, precision: float | None) -> str | None:
    """Why the gate does not decide round ``round_`` (it is trained), or ``None`` if it decides."""
    if round_ < gate.from_round:
        return f"round {round_} < self_training.gate.from_round {gate.from_round}: always trained"
    if precision is None:
        return ("no withheld ground truth to measure the pseudo labels on: the gate cannot decide, so the round "
                "is trained (as in LEOD, which has no gate)")
    return None


def _previous_precision(previous: dict[str, Any] | None, round_: int, key: str) -> float:
    """Round r-1's pseudo-label precision, the bar of rule ``no_drop``."""
    if previous is None or round_ < 2:
        raise ValueError(f"rule no_drop compares round {round_} with round {round_ - 1}'s pseudo labels, which "
                         f"{'do not exist' if round_ < 2 else 'were not given'}; set self_training.gate.from_round "
                         f">= 2")
    bar = _precision(previous, key)
    if bar is None:
        raise ValueError(f"round {round_ - 1}'s pseudo labels have no precision at IoU {key} to compare with")
    return bar


def write_gate(quality_path: Path, round_: int, gate: GateConfig, out: Path,
               previous_path: Path | None = None) -> dict[str, Any]:
    """Read ``quality.json`` (and round r-1's, ``previous_path``), decide, write ``gate.json``."""
    try:
        previous = _read_json(previous_path) if previous_path else None
        decision = gate_decision(_read_json(quality_path), round_, gate, previous)
    except ValueError as err:
        against = f" (round r-1: {previous_path})" if previous_path else ""
        raise ValueError(f"{quality_path}{against}: {err}") from None
    decision["quality"] = str(quality_path)
    if previous_path:
        decision["previous_quality"] = str(previous_path)
    write_text_atomic(out, json.dumps(decision, indent=2, sort_keys=True) + "\n")
    log.info("gate %s: %s", "passed" if decision["passed"] else "FAILED", decision["reason"])
    return decision


def _read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


# ------------------------------------------------------------------------------------------ shard list
def shard_list(data_dir: Path, split_path: Path, num_shards: int, downsampled_by_2: bool) -> dict[str, Any]:
    """The shard list of a split (:func:`leod_core.pseudo.shard_list.make_shard_list`: ``min(num_shards,
    sequences)`` length-balanced shards) as its JSON object."""
    return make_shard_list(split_sequence_lengths(data_dir, split_path, downsampled_by_2), num_shards).to_dict()


def write_shard_list(data_dir: Path, split_path: Path, num_shards: int, downsampled_by_2: bool, out: Path,
                     sequence_index: Optional[Path] = None) -> dict:
    """Write the shard list: the one assignment of the split's training sequences to the pseudo-label jobs
    (``leod pseudo-label --shard-list`` and ``leod merge-shards --shard-list`` read it); the lengths come from the
    ``sequence_index`` file when given."""
    listing = pseudo_shard_list.write_shard_list(data_dir, split_path, num_shards, downsampled_by_2, out,
                                                 sequence_index)
    log.info("%d sequences in %d shards", listing.num_sequences, listing.num_shards)
    return listing.to_dict()


def write_sequence_index(data_dir: Path, out: Path) -> None:
    """Index ``data_dir/train`` once (:mod:`leod_core.data.sequence_index`): the split and shard-list jobs of every
    experiment read this file instead of every sequence's files."""
    index = sequence_index.write_sequence_index(data_dir / "train", out)
    log.info("indexed %d training sequences of %s (%d unlabeled)", len(index.sequences), data_dir,
             len(index.unlabeled))


def read_shard_count(path: str | Path) -> int:
    """Number of shards in a shard list file (how many pseudo-label jobs the workflow runs)."""
    return read_shard_list(path).num_shards


def shard_list_cli_args(config: dict[str, Any], settings: dict[str, Any]) -> str:
    """``shard-list`` options of an experiment: the requested shards (``self_training.num_shards``) and the
    resolution the sequence lengths are read at."""
    args = f"--num-shards {requested_shards(config)}"
    return args + (" --downsampled-by-2" if downsampled_by_2(settings["camera"]) else "")


# ------------------------------------------------------------------------------------------------ resume
STAMP_NAME = ".inputs.json"


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (streamed)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_resume(directory: Path, inputs: dict[str, Path], extra: str = "", root: Path = Path("results")) -> str:
    """Make ``directory`` (a job's resumable state: ``train_state/``, a pseudo-label shard) safe to resume.

    Its ``.inputs.json`` records the SHA-256 of the job's input files (by role) and ``extra``. Same inputs: the
    state is kept and the job resumes (``"resume"``). Other inputs, or state without a record: the directory is
    deleted, since resuming it would mix in work done for other inputs (``"reset"``). No directory:
    ``"fresh"``. The record is written before the job starts. ``directory`` must lie under ``root``."""
    directory = Path(directory)
    if not directory.resolve().is_relative_to(Path(root).resolve()):
        raise ValueError(f"{directory} is not under {root}/; refusing to manage it")
    stamp = {"extra": extra, "inputs": {role: file_sha256(path) for role, path in sorted(inputs.items())}}
    stamp_path = directory / STAMP_NAME
    status = "fresh"
    if directory.exists():
        try:
            old = json.loads(stamp_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if old == stamp:
            log.info("%s: inputs unchanged, resuming", directory)
            return "resume"
        log.warning("%s: %s; starting afresh", directory,
                    "made from other inputs" if old is not None else "no record of its inputs")
        shutil.rmtree(directory)
        status = "reset"
    directory.mkdir(parents=True)
    write_text_atomic(stamp_path, json.dumps(stamp, indent=1, sort_keys=True) + "\n")
    return status


# --------------------------------------------------------------------------------------------- configs
def write_config(config: dict[str, Any], out: Path) -> None:
    """A job config (``leod train`` / ``leod pseudo-label`` ``--config``) as YAML."""
    if not isinstance(config, dict):
        raise ValueError(f"a job config must be a mapping, got {type(config).__name__}")
    write_text_atomic(out, "# written by the workflow from workflow_config (rule job_config)\n"
                      + yaml.safe_dump(config, sort_keys=True, default_flow_style=False))


# ------------------------------------------------------------------------------------------ user data
def link_data(source: Path, out_dir: Path, marker: str, kind: str, hint: str = "") -> dict[str, Any]:
    """Make user-provided data (``kind``: raw or preprocessed, with ``train/ val/ test/``) available at
    ``out_dir``: symlinks to the source splits (none if ``source`` is ``out_dir``), then ``out_dir/marker``.

    A missing or empty split is an error naming the path; ``hint`` (e.g. where to download) is appended."""
    source, out_dir = Path(source), Path(out_dir)
    problems = []
    for split in SPLITS:
        d = source / split
        if not d.is_dir():
            problems.append(f"{d} is missing")
        elif not any(p for p in d.iterdir() if not p.name.startswith(".")):
            problems.append(f"{d} is empty")
    if problems:
        raise ValueError(f"{kind} data for {out_dir} not found: {'; '.join(problems)}. Provide the dataset in "
                         f"{kind} layout (train/ val/ test/) at {source}" + (f". {hint}" if hint else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    same = source.resolve() == out_dir.resolve()
    counts = {}
    for split in SPLITS:
        target = (source / split).resolve()
        link = out_dir / split
        if not same:
            if link.is_symlink() or link.exists():
                if not (link.is_symlink() and link.resolve() == target):
                    raise ValueError(f"{link} exists and is not a link to {target}; remove it first")
            else:
                os.symlink(target, link, target_is_directory=True)
        counts[split] = sum(1 for p in target.iterdir() if not p.name.startswith("."))
    summary = {"source": str(source.resolve()), "kind": kind, "linked": not same, "entries": counts}
    write_text_atomic(out_dir / marker, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    log.info("%s data at %s: %s", kind, out_dir, counts)
    return summary
