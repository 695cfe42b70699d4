"""Result tables laid out like LEOD's paper: mAP per self-training round for every setting × ratio.

Files read under ``results_dir`` (the workflow's ``results/``)::

    {dataset}/{setting}_{ratio}[+{variant}]/round{r}/eval/test_metrics.json   # required per round
    {dataset}/{setting}_{ratio}[+{variant}]/round{r}/gate.json                 # optional
    {dataset}/{setting}_{ratio}[+{variant}]/round{r}/pseudo/quality.json       # optional

- ``test_metrics.json``: a JSON object of metric name -> number, as :func:`write_test_metrics` writes the
  dict of ``evaluate_detections`` (``AP``, ``AP_50``, ... fractions in [0, 1]). ``AP`` is the mAP.
- ``gate.json``: a JSON object; its top-level scalars become columns ``gate_{key}``. A round at or after a
  failed gate (``"passed": false``) is left out: its model is left over from an earlier run.
- ``quality.json``: pseudo-label quality of the labels round ``r`` trains on, see
  :data:`QUALITY_KEYS`: ``{"precision": {"0.5": p, ...}, "recall": {"0.5": r, ...}}`` with IoU thresholds
  as strings and fractions in [0, 1]; other keys are ignored. They become columns ``pl_precision@{thr}``
  and ``pl_recall@{thr}``.

Written tables (``{out_dir}/{dataset}.md`` and ``.csv``), one row per experiment (setting, ratio,
variant; sorted by setting as in ``SETTINGS``, then ratio, then variant), in mAP percent (AP × 100):
``round 0 (baseline)``, ``round 1`` … ``round N``, ``full`` (round 0 of the dataset's ``full_1``
experiment) and ``gap closed %`` = 100 × (best round ≥ 1 − round 0) / (full − round 0). A value that
does not exist is missing (empty in the CSV, "–" in Markdown), never 0.

The Markdown file also lists every self-training gate of the dataset (:func:`collect_gates`): the
pseudo-label precision and recall at the gate's IoU, the threshold and the decision, also for a round
that was not trained because its gate failed.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import FormatError
from leod_core.data.splits import SETTINGS

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
METRICS_FILE = Path("eval") / "test_metrics.json"
GATE_FILE = Path("gate.json")
QUALITY_FILE = Path("pseudo") / "quality.json"
QUALITY_KEYS = ("precision", "recall")
MAP_KEY = "AP"
FULL_EXPERIMENT = ("full", 1.0, "")
EXPERIMENT_KEYS = ["setting", "ratio", "variant"]
ID_COLUMNS = ["dataset", *EXPERIMENT_KEYS, "round"]
BASELINE_COLUMN = "round 0 (baseline)"
FULL_COLUMN = "full"
GAP_COLUMN = "gap closed %"
MISSING_MARK = "–"
GATE_COLUMNS = ("precision", "recall", "iou", "threshold", "passed", "num_frames")
_EXPERIMENT_RE = re.compile(r"^(?P<setting>[A-Za-z0-9-]+)_(?P<ratio>[^/_+]+)(?:\+(?P<variant>[^/]+))?$")
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
    for metrics_path in sorted(Path(results_dir).glob(f"*/*/round*/{METRICS_FILE.as_posix()}")):
        row = _row_for(metrics_path)
        if row is not None:
            rows.append(row)
    if not rows:
        return pd.DataFrame(columns=ID_COLUMNS + ["experiment", MAP_KEY])
    df = pd.DataFrame(rows)
    return df.sort_values(ID_COLUMNS, key=sort_key).reset_index(drop=True)


def round_ids(round_dir: Path, found: Path) -> dict[str, Any] | None:
    """:data:`ID_COLUMNS` and ``experiment`` of ``{dataset}/{setting}_{ratio}[+{variant}]/round{r}``; None (with
    a logged warning naming the file ``found`` under it) for a directory that is not laid out so."""
    exp_dir = round_dir.parent
    exp, rnd = _EXPERIMENT_RE.match(exp_dir.name), _ROUND_RE.match(round_dir.name)
    if exp is None or rnd is None:
        log.warning("skipping %s: not under {setting}_{ratio}[+variant]/round{r}", found)
        return None
    try:
        ratio = float(exp["ratio"])
    except ValueError:
        log.warning("skipping %s: ratio %r is not a number", found, exp["ratio"])
        return None
    return {"dataset": exp_dir.parent.name, "setting": exp["setting"], "ratio": ratio, "variant": exp["variant"] or "",
            "round": int(rnd["round"]), "experiment": exp_dir.name}


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
    for gate_path in sorted(Path(results_dir).glob(f"*/*/round*/{GATE_FILE.as_posix()}")):
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
    """``pl_precision@{thr}`` and ``pl_recall@{thr}`` of a ``quality.json``."""
    data = read_json(path)
    out = {}
    for key in QUALITY_KEYS:
        per_thr = data.get(key, {})
        if not isinstance(per_thr, dict):
            raise FormatError(path, f"{key!r} must map IoU thresholds to numbers")
        for thr, value in per_thr.items():
            out[f"pl_{key}@{float(thr):g}"] = float(value)
    return out


def sort_key(col: pd.Series) -> pd.Series:
    """``sort_values`` key: settings in ``SETTINGS`` order (unknown ones after, by name), others as they are."""
    if col.name == "setting":
        order = {s: i for i, s in enumerate(SETTINGS)}
        return col.map(lambda s: f"{order.get(s, len(order)):03d}{s}")
    return col


def paper_table(df: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Wide table of one dataset (numbers in mAP %, NaN where missing), see the module docstring."""
    sub = df[df["dataset"] == dataset]
    rounds = list(range(int(sub["round"].max()) + 1)) if len(sub) else [0]
    wide = sub.pivot(index=EXPERIMENT_KEYS, columns="round", values=MAP_KEY) * 100.0
    wide = wide.reindex(columns=rounds)
    wide.columns = [BASELINE_COLUMN if r == 0 else f"round {r}" for r in rounds]
    wide = wide.reset_index().sort_values(EXPERIMENT_KEYS, key=sort_key, ignore_index=True)
    baseline = wide[BASELINE_COLUMN]
    wide[FULL_COLUMN] = full_map(sub)
    best = wide[[f"round {r}" for r in rounds[1:]]].max(axis=1, skipna=True) if len(rounds) > 1 else math.nan
    gap = (wide[FULL_COLUMN] - baseline).where(lambda g: g != 0)
    wide[GAP_COLUMN] = 100.0 * (best - baseline) / gap
    return wide


def full_map(sub: pd.DataFrame) -> float:
    """mAP (%) of round 0 of the `full_1` experiment in `sub` (one dataset), NaN if absent."""
    setting, ratio, variant = FULL_EXPERIMENT
    hit = sub[(sub["setting"] == setting) & (sub["ratio"] == ratio) & (sub["variant"] == variant)
              & (sub["round"] == 0)]
    return float(hit[MAP_KEY].iloc[0]) * 100.0 if len(hit) else math.nan


def write_tables(df: pd.DataFrame, out_dir: PathLike, gates: pd.DataFrame | None = None) -> list[Path]:
    """Write ``{dataset}.csv`` and ``{dataset}.md`` for every dataset in ``df`` (the Markdown with the
    dataset's rows of ``gates``, from :func:`collect_gates`, if given); returns the paths."""
    out_dir = Path(out_dir)
    written = []
    for dataset in sorted(df["dataset"].unique()):
        table = paper_table(df, dataset)
        csv_path, md_path = out_dir / f"{dataset}.csv", out_dir / f"{dataset}.md"
        write_text_atomic(csv_path, table.to_csv(index=False, na_rep=""))
        dataset_gates = gates[gates["dataset"] == dataset] if gates is not None else gates
        write_text_atomic(md_path, _markdown(table, dataset) + _gates_markdown(dataset_gates))
        written += [csv_path, md_path]
    return written


def _markdown(table: pd.DataFrame, dataset: str) -> str:
    shown = table.copy()
    shown["ratio"] = [f"{r * 100:g}%" for r in shown["ratio"]]
    if not (shown["variant"] != "").any():
        shown = shown.drop(columns="variant")
    for col in shown.columns[shown.columns.get_loc("ratio") + 1:]:
        if col != "variant":
            shown[col] = [MISSING_MARK if pd.isna(v) else f"{v:.1f}" for v in shown[col]]
    align = ["left" if c in ("setting", "ratio", "variant") else "right" for c in shown.columns]
    body = shown.to_markdown(index=False, disable_numparse=True, colalign=align)
    return f"# {dataset}: test mAP (%) per self-training round\n\n{body}\n"


def _gates_markdown(gates: pd.DataFrame | None) -> str:
    """The gate section of a dataset's Markdown ("" without gates): precision and recall in percent."""
    if gates is None or gates.empty:
        return ""
    shown = pd.DataFrame({
        "setting": gates["setting"], "ratio": [f"{r * 100:g}%" for r in gates["ratio"]], "variant": gates["variant"],
        "round": gates["round"].astype(str),
        "pseudo-label precision": [f"{100 * p:.1f}" for p in gates["precision"]],
        "recall": [f"{100 * r:.1f}" for r in gates["recall"]],
        "at IoU": [f"{iou:g}" for iou in gates["iou"]],
        "threshold": [f"{100 * t:.1f}" for t in gates["threshold"]],
        "frames": gates["num_frames"].astype(str),
        "decision": ["train" if passed else "stop" for passed in gates["passed"]]})
    if not (shown["variant"] != "").any():
        shown = shown.drop(columns="variant")
    body = shown.to_markdown(index=False, disable_numparse=True)
    return ("\n## Self-training gates: round r is trained on its pseudo labels only if their precision "
            f"reaches the threshold\n\n{body}\n")
