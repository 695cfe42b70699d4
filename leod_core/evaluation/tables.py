"""Result tables laid out like LEOD's paper: mAP per self-training round for every setting × ratio, over the
label splits.

Files read under ``results_dir`` (the workflow's ``results/``)::

    {dataset}/{experiment}/round{r}/eval/test_metrics.json   # required per round
    {dataset}/{experiment}/round{r}/gate.json                 # optional
    {dataset}/{experiment}/round{r}/pseudo/quality.json       # optional

``{experiment}`` is ``{setting}_{ratio}[-s{k}][+{variant}]`` as :class:`~leod_core.workflow.paths.ExperimentName`
parses it (column ``split``: the label split's offset ``k``, 0 without the suffix; LEOD averages every paper
number over splits 0, 1, 2); a directory it rejects is skipped with a logged warning.

- ``test_metrics.json``: a JSON object of metric name -> number, as :func:`write_test_metrics` writes the
  dict of ``evaluate_detections`` (``AP``, ``AP_50``, ... and per class ``AP_car``, ...; fractions in [0, 1],
  COCO's -1 where undefined). ``AP`` is the mAP, ``AP_{class}`` a class's AP (:func:`class_ap_keys`).
- ``gate.json``: a JSON object; its top-level scalars become columns ``gate_{key}``. A round at or after a
  failed gate (``"passed": false``) is left out: its model is left over from an earlier run.
- ``quality.json``: pseudo-label quality of the labels round ``r`` trains on, see
  :data:`QUALITY_KEYS`: ``{"precision": {"0.5": p, ...}, "recall": {"0.5": r, ...}}`` with IoU thresholds
  as strings and fractions in [0, 1]; other keys are ignored. They become columns ``pl_precision@{thr}``
  and ``pl_recall@{thr}``.

Written tables of each dataset, in percent (AP × 100); a value that does not exist (or that COCO cannot define)
is missing (empty in the CSV, "–" in Markdown), never 0:

- ``{out_dir}/{dataset}.csv`` (:func:`split_table`): one row per experiment and split (setting, ratio, variant,
  split; sorted by setting as in ``SETTINGS``, then ratio, variant, split): ``round 0 (baseline)``,
  ``round 1`` … ``round N`` (mAP), ``full``, ``gap closed %``, then ``round {r} AP_{class}`` for every round
  and class (classes by name).
- ``{out_dir}/{dataset}.md`` (:func:`summary_table`): one row per experiment (setting, ratio, variant); each
  round and ``gap closed %`` as ``mean ± std (n=k)`` over the k splits that have the value (std: the sample
  standard deviation, ddof=1), a value of a single split alone (``31.2``); ``full`` is one number.

``full`` is the mAP of round 0 (the supervised baseline; its rounds ≥ 1 are self-training on 100 % labels,
shown in the ``full_1`` row itself) of ``full_1+{variant}`` for a row of a variant, if that experiment exists,
else of ``full_1``. So a variant that changes the model (RVT-B, ``+rvt-b``) needs its own full experiment (the
workflow plans ``full_1+rvt-b``; without it its rows are compared with ``full_1`` and a warning is logged if the
variant has a round 0 of its own), while one that shares round 0 with its base (``+no-tta``, ...) is compared
with the base's ``full_1``, the same model. ``gap closed %`` = 100 × (best round ≥ 1 − round 0) / (full −
round 0) of one split; the Markdown averages it over the splits.

The Markdown file also lists every self-training gate of the dataset (:func:`collect_gates`), with its split:
the pseudo-label precision and recall at the gate's IoU, the threshold and the decision, also for a round
that was not trained because its gate failed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import FormatError
from leod_core.data.splits import FULL_RATIO, SETTINGS
from leod_core.evaluation.detection import METRIC_KEYS
from leod_core.workflow import paths
from leod_core.workflow.paths import ExperimentName, format_ratio

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
#: A round's files, relative to its directory (:mod:`leod_core.workflow.paths`).
METRICS_FILE = Path(paths.METRICS_FILE)
GATE_FILE = Path(paths.GATE_FILE)
QUALITY_FILE = Path(paths.QUALITY_FILE)
QUALITY_KEYS = ("precision", "recall")
MAP_KEY = "AP"
#: The full-supervision experiment of the base model (``full_1``); ``full_1+{variant}`` is a variant's.
FULL_EXPERIMENT = ExperimentName("full", format_ratio(FULL_RATIO))
#: One experiment of a table, all its splits together.
EXPERIMENT_KEYS = ["setting", "ratio", "variant"]
SPLIT_COLUMN = "split"
#: One row of the CSV: an experiment's split.
ROW_KEYS = [*EXPERIMENT_KEYS, SPLIT_COLUMN]
ID_COLUMNS = ["dataset", *ROW_KEYS, "round"]
BASELINE_COLUMN = "round 0 (baseline)"
FULL_COLUMN = "full"
GAP_COLUMN = "gap closed %"
MISSING_MARK = "–"
GATE_COLUMNS = ("precision", "recall", "iou", "threshold", "passed", "num_frames")
_ROUND_RE = re.compile(r"^round(?P<round>\d+)$")


def write_test_metrics(path: PathLike, metrics: dict[str, float]) -> None:
    """Write ``metrics`` (name -> number) as the JSON object ``collect_results`` reads, atomically."""
    write_text_atomic(path, json.dumps({k: float(v) for k, v in metrics.items()}, indent=1, sort_keys=True) + "\n")


def collect_results(results_dir: PathLike) -> pd.DataFrame:
    """Long frame, one row per evaluated round: :data:`ID_COLUMNS`, ``experiment`` and the metrics.

    Metric columns are the numeric entries as stored (fractions); gate and pseudo-label columns are added
    where files exist. Raises :class:`FormatError` for an unreadable or malformed JSON file or a metrics
    file without ``AP``.
    """
    rows = []
    for metrics_path in sorted(Path(results_dir).glob(f"{paths.ANY_ROUND}/{paths.METRICS_FILE}")):
        row = _row_for(metrics_path)
        if row is not None:
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=ID_COLUMNS + ["experiment", MAP_KEY])
    df = pd.DataFrame(rows)
    return df.sort_values(ID_COLUMNS, key=sort_key).reset_index(drop=True)


def round_ids(round_dir: Path, found: Path) -> dict[str, Any] | None:
    """:data:`ID_COLUMNS` and ``experiment`` of ``{dataset}/{experiment}/round{r}``; None (with a logged warning
    naming the file ``found`` under it) for a directory that is not laid out so."""
    exp_dir = round_dir.parent
    rnd = _ROUND_RE.match(round_dir.name)
    if rnd is None:
        log.warning("skipping %s: not under {experiment}/round{r}", found)
        return None
    try:
        name = ExperimentName.parse(exp_dir.name)
    except ValueError as err:
        log.warning("skipping %s: %s", found, err)
        return None
    return {"dataset": exp_dir.parent.name, "setting": name.setting, "ratio": float(name.ratio),
            "variant": name.variant, SPLIT_COLUMN: name.split_offset, "round": int(rnd["round"]),
            "experiment": exp_dir.name}


def _row_for(metrics_path: Path) -> dict[str, Any] | None:
    round_dir = metrics_path.parent.parent
    row = round_ids(round_dir, metrics_path)
    if row is None:
        return None
    stopped_at = _failed_gate(round_dir.parent, row["round"])
    if stopped_at is not None:
        log.info("leaving out %s: the gate of round %d failed (a model left from an earlier run)", metrics_path,
                 stopped_at)
        return None
    metrics = {k: float(v) for k, v in read_json(metrics_path).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if MAP_KEY not in metrics:
        raise FormatError(metrics_path, f"no numeric {MAP_KEY!r} entry")
    row.update(metrics)
    if (round_dir / GATE_FILE).is_file():
        row.update({f"gate_{k}": v for k, v in _scalars(read_json(round_dir / GATE_FILE)).items()})
    if (round_dir / QUALITY_FILE).is_file():
        row.update(quality_columns(round_dir / QUALITY_FILE))
    return row


def _failed_gate(exp_dir: Path, round_: int) -> int | None:
    """The first round in 1..``round_`` of the experiment whose gate.json says it failed, else None."""
    for earlier in range(1, round_ + 1):
        gate_path = exp_dir / f"round{earlier}" / GATE_FILE
        if gate_path.is_file() and read_json(gate_path).get("passed") is False:
            return earlier
    return None


def collect_gates(results_dir: PathLike) -> pd.DataFrame:
    """One row per ``round{r}/gate.json`` under ``results_dir``: :data:`ID_COLUMNS` and :data:`GATE_COLUMNS`."""
    rows = []
    for gate_path in sorted(Path(results_dir).glob(f"{paths.ANY_ROUND}/{paths.GATE_FILE}")):
        ids = round_ids(gate_path.parent, gate_path)
        if ids is None:
            continue
        gate = read_json(gate_path)
        missing = [key for key in GATE_COLUMNS if key not in gate]
        if missing:
            raise FormatError(gate_path, f"missing {', '.join(missing)}")
        rows.append({**{key: ids[key] for key in ID_COLUMNS}, **{key: gate[key] for key in GATE_COLUMNS}})
    columns = ID_COLUMNS + list(GATE_COLUMNS)
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows, columns=columns).sort_values(ID_COLUMNS, key=sort_key, ignore_index=True)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FormatError(path, f"not a readable JSON file ({err})") from err
    if not isinstance(data, dict):
        raise FormatError(path, f"expected a JSON object, got {type(data).__name__}")
    return data


def _scalars(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool)) or v is None}


def quality_columns(path: Path) -> dict[str, float]:
    """``pl_precision@{thr}`` and ``pl_recall@{thr}`` of a ``quality.json`` (NaN where it has ``None``: no
    withheld ground truth to measure on, e.g. setting ``full``)."""
    data = read_json(path)
    out = {}
    for key in QUALITY_KEYS:
        per_thr = data.get(key, {})
        if not isinstance(per_thr, dict):
            raise FormatError(path, f"{key!r} must map IoU thresholds to numbers")
        for thr, value in per_thr.items():
            out[f"pl_{key}@{float(thr):g}"] = math.nan if value is None else float(value)
    return out


def sort_key(col: pd.Series) -> pd.Series:
    """``sort_values`` key: settings in ``SETTINGS`` order (unknown ones after, by name), others as they are."""
    if col.name == "setting":
        order = {s: i for i, s in enumerate(SETTINGS)}
        return col.map(lambda s: f"{order.get(s, len(order)):03d}{s}")
    return col


def round_column(round_: int) -> str:
    """The mAP column of a round: ``round 0 (baseline)``, ``round 1``, ..."""
    return BASELINE_COLUMN if round_ == 0 else f"round {round_}"


def class_ap_keys(columns) -> list[str]:
    """The per-class AP keys ``AP_{class}`` among ``columns``, sorted (not ``AP_50`` ... nor ``AP_50_{class}``)."""
    others = tuple(f"{key}_" for key in METRIC_KEYS if key != MAP_KEY)
    return sorted(c for c in columns
                  if c.startswith(f"{MAP_KEY}_") and c not in METRIC_KEYS and not c.startswith(others))


def split_table(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The CSV table of one dataset: one row per experiment and split (numbers in %, NaN where missing), see the
    module docstring."""
    sub = df[df["dataset"] == dataset]
    rounds = list(range(int(sub["round"].max()) + 1)) if len(sub) else [0]
    maps = _percent_per_round(sub, MAP_KEY, rounds).set_axis([round_column(r) for r in rounds], axis=1)
    per_class = {key: _percent_per_round(sub, key, rounds) for key in class_ap_keys(sub.columns)}
    wide = maps.assign(**{FULL_COLUMN: _full_maps(sub, maps.index.get_level_values("variant"))})
    wide[GAP_COLUMN] = gap_closed(wide, rounds)
    for r in rounds:
        for key, values in per_class.items():
            wide[f"round {r} {key}"] = values[r]
    return wide.reset_index().sort_values(ROW_KEYS, key=sort_key, ignore_index=True)


def _percent_per_round(sub: pd.DataFrame, key: str, rounds: list[int]) -> pd.DataFrame:
    """``key`` × 100 per split (index :data:`ROW_KEYS`) and round (columns); NaN where missing or negative (COCO's
    -1: undefined)."""
    wide = sub.pivot(index=ROW_KEYS, columns="round", values=key).reindex(columns=rounds).astype(float) * 100.0
    return wide.where(wide >= 0)


def gap_closed(wide: pd.DataFrame, rounds: list[int]) -> pd.Series:
    """``gap closed %`` per row of a table with the round columns and ``full`` (NaN where undefined)."""
    baseline = wide[BASELINE_COLUMN]
    best = wide[[round_column(r) for r in rounds[1:]]].max(axis=1, skipna=True)
    gap = (wide[FULL_COLUMN] - baseline).where(lambda g: g != 0)
    return 100.0 * (best - baseline) / gap


def _full_maps(sub: pd.DataFrame, variants) -> list[float]:
    """:func:`full_map` of each of ``variants`` (one lookup per variant)."""
    full = {variant: full_map(sub, variant) for variant in dict.fromkeys(variants)}
    return [full[variant] for variant in variants]


def full_map(sub: pd.DataFrame, variant: str = "") -> float:
    """mAP (%) of round 0 of ``full_1+{variant}`` in ``sub`` (one dataset's rows), else of ``full_1`` (see the
    module docstring); NaN if neither exists."""
    own = _round0_map(sub, replace(FULL_EXPERIMENT, variant=variant))
    if not variant or not math.isnan(own):
        return own
    if ((sub["variant"] == variant) & (sub["round"] == 0)).any():
        log.warning("variant %r has a round 0 of its own but there is no %s: its rows are compared with %s",
                    variant, replace(FULL_EXPERIMENT, variant=variant), FULL_EXPERIMENT)
    return _round0_map(sub, FULL_EXPERIMENT)


def _round0_map(sub: pd.DataFrame, experiment: ExperimentName) -> float:
    hit = sub[(sub["experiment"] == str(experiment)) & (sub["round"] == 0)]
    return float(hit[MAP_KEY].iloc[0]) * 100.0 if len(hit) else math.nan


def summary_table(splits: pd.DataFrame) -> pd.DataFrame:
    """The Markdown table's numbers from a :func:`split_table`: one row per experiment (index
    :data:`EXPERIMENT_KEYS`, in the table's order); for each round column, ``full`` and ``gap closed %`` the
    columns ``(column, "mean")``, ``(column, "std")`` (sample std, ddof=1; NaN for one split) and ``(column, "n")``
    (the splits with a value)."""
    columns = list(splits.columns[len(ROW_KEYS):splits.columns.get_loc(GAP_COLUMN) + 1])
    grouped = splits.groupby(EXPERIMENT_KEYS, sort=False)[columns]
    return grouped.agg(["mean", "std", "count"]).rename(columns={"count": "n"}, level=1)


def write_tables(df: pd.DataFrame, out_dir: PathLike, gates: pd.DataFrame | None = None) -> list[Path]:
    """Write ``{dataset}.csv`` and ``{dataset}.md`` for every dataset in ``df`` (the Markdown with the
    dataset's rows of ``gates``, from :func:`collect_gates`, if given); returns the paths."""
    out_dir = Path(out_dir)
    written = []
    for dataset in sorted(df["dataset"].unique()):
        table = split_table(df, dataset)
        csv_path, md_path = out_dir / f"{dataset}.csv", out_dir / f"{dataset}.md"
        write_text_atomic(csv_path, table.to_csv(index=False, na_rep=""))
        dataset_gates = gates[gates["dataset"] == dataset] if gates is not None else gates
        write_text_atomic(md_path, _markdown(summary_table(table), dataset) + _gates_markdown(dataset_gates))
        written += [csv_path, md_path]
    return written


def _markdown(summary: pd.DataFrame, dataset: str) -> str:
    keys = summary.index.to_frame(index=False)
    shown = pd.DataFrame({"setting": keys["setting"], "ratio": [f"{r * 100:g}%" for r in keys["ratio"]],
                          "variant": keys["variant"]})
    if not (shown["variant"] != "").any():
        shown = shown.drop(columns="variant")
    for col in summary.columns.get_level_values(0).unique():
        stats = summary[col]
        shown[col] = [_cell(mean, std, n, alone=col == FULL_COLUMN)
                      for mean, std, n in zip(stats["mean"], stats["std"], stats["n"])]
    align = ["left" if c in EXPERIMENT_KEYS else "right" for c in shown.columns]
    body = shown.to_markdown(index=False, disable_numparse=True, colalign=align)
    return (f"# {dataset}: test mAP (%) per self-training round\n\nMean ± sample standard deviation over the label "
            f"splits that have the value (n of them; one split: its value alone). `{FULL_COLUMN}`: round 0 of "
            f"`{FULL_EXPERIMENT}+variant` of the row's variant if it exists, else of `{FULL_EXPERIMENT}`.\n\n"
            f"{body}\n")


def _cell(mean: float, std: float, n: int, alone: bool) -> str:
    """A Markdown cell: ``mean ± std (n=k)``, the mean alone for one split or if ``alone``, "–" for none."""
    if n == 0:
        return MISSING_MARK
    if n == 1 or alone:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {std:.1f} (n={n})"


def _gates_markdown(gates: pd.DataFrame | None) -> str:
    """The gate section of a dataset's Markdown ("" without gates): precision and recall in percent."""
    if gates is None or gates.empty:
        return ""
    shown = pd.DataFrame({
        "setting": gates["setting"], "ratio": [f"{r * 100:g}%" for r in gates["ratio"]], "variant": gates["variant"],
        SPLIT_COLUMN: gates[SPLIT_COLUMN].astype(str), "round": gates["round"].astype(str),
        "pseudo-label precision": [_percent(p) for p in gates["precision"]],
        "recall": [_percent(r) for r in gates["recall"]],
        "at IoU": [f"{iou:g}" for iou in gates["iou"]],
        "threshold": [_percent(t) for t in gates["threshold"]],
        "frames": gates["num_frames"].astype(str),
        "decision": [_decision(passed, t) for passed, t in zip(gates["passed"], gates["threshold"])]})
    if not (shown["variant"] != "").any():
        shown = shown.drop(columns="variant")
    body = shown.to_markdown(index=False, disable_numparse=True)
    return ("\n## Self-training gates: round r is trained on its pseudo labels only if their precision "
            "reaches the threshold (not gated: a round before self_training.gate.from_round, or pseudo labels "
            f"without withheld ground truth to measure)\n\n{body}\n")


def _decision(passed: bool, threshold: float | None) -> str:
    """A gate's decision in words; a gate that did not decide (no threshold) let the round train."""
    return "stop" if not passed else "train (not gated)" if pd.isna(threshold) else "train"


def _percent(fraction: float | None) -> str:
    """A fraction in percent with one decimal; :data:`MISSING_MARK` for ``None``/NaN (not measured)."""
    return MISSING_MARK if pd.isna(fraction) else f"{100 * fraction:.1f}"
