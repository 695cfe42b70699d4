"""Ablation tables: every variant (``{setting}_{ratio}[-s{k}]+{variant}``, a named config overlay) beside its base
experiment (``{setting}_{ratio}[-s{k}]``), per self-training round and label split.

Files read::

    {results_dir}/{dataset}/{experiment}/round{r}/pseudo/quality.json         # r >= 1: the round's pseudo labels
    {results_dir}/{dataset}/{experiment}/round{r}/eval/test_metrics.json      # as tables.collect_results reads it
    {benchmarks_dir}/{dataset}/{experiment}/round{r}/pseudo/shards/*.tsv      # Snakemake benchmark files

``{benchmarks_dir}`` is the workflow's ``logs/benchmarks`` (:data:`leod_core.workflow.paths.BENCHMARKS_DIR`).

- ``quality.json``: see :mod:`leod_core.evaluation.tables`; precision and recall at IoU :data:`QUALITY_IOU`.
- a benchmark file: tab-separated, a header and one row per run, column ``s`` = the job's wall-clock seconds.
  The pseudo-labelling time of a round is the sum over its shard jobs (GPU-seconds on a GPU cluster).

Written (``{out_dir}/{dataset}_ablation.md`` and ``.csv``): one row per (setting, ratio, round >= 1, split,
variant) of every setting and ratio that has at least one variant, the base first (variant ``""``, "(base)" in
Markdown); splits are not averaged (``split`` is the label split's offset ``k``, 0 without ``-s{k}``):
``mAP``, ``AP50``, ``AP75`` (test split, %), ``pseudo-label precision`` and ``recall`` (%), ``pseudo-label
time (s)``. A value that does not exist (a round whose gate failed has no mAP) is missing, never 0.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import FormatError
from leod_core.evaluation.tables import (ID_COLUMNS, MISSING_MARK, QUALITY_FILE, SPLIT_COLUMN, PathLike,
                                         collect_results, quality_columns, round_ids, sort_key)
from leod_core.workflow.paths import ANY_ROUND, SHARD_BENCHMARKS, round_place

#: IoU of the pseudo-label precision and recall shown (the gate's default).
QUALITY_IOU = 0.5
#: Column of a Snakemake benchmark file holding the wall-clock seconds.
SECONDS_COLUMN = "s"
#: Test metrics shown (``test_metrics.json`` key -> column), in percent.
METRIC_COLUMNS = {"AP": "mAP", "AP_50": "AP50", "AP_75": "AP75"}
PRECISION_COLUMN = "pseudo-label precision"
RECALL_COLUMN = "recall"
TIME_COLUMN = "pseudo-label time (s)"
TABLE_KEYS = ["setting", "ratio", "round", SPLIT_COLUMN, "variant"]
BASE_NAME = "(base)"


def pseudo_label_seconds(benchmarks_dir: PathLike, dataset: str, experiment: str, round_: int) -> float:
    """Sum of the ``s`` column of a round's pseudo-labelling benchmark files; NaN if there are none."""
    files = sorted((Path(benchmarks_dir) / round_place(dataset, experiment, round_)).glob(SHARD_BENCHMARKS))
    if not files:
        return float("nan")
    total = 0.0
    for path in files:
        try:
            total += float(pd.read_csv(path, sep="\t")[SECONDS_COLUMN].sum())
        except (OSError, ValueError, KeyError, pd.errors.ParserError) as err:
            raise FormatError(path, f"not a Snakemake benchmark file with an {SECONDS_COLUMN!r} column ({err})") \
                from err
    return total


def collect_pseudo_rounds(results_dir: PathLike, benchmarks_dir: PathLike) -> pd.DataFrame:
    """One row per round >= 1 with pseudo labels (``quality.json``): :data:`ID_COLUMNS`, precision and recall at
    :data:`QUALITY_IOU` (fractions) and the pseudo-labelling seconds."""
    precision, recall = f"pl_precision@{QUALITY_IOU:g}", f"pl_recall@{QUALITY_IOU:g}"
    rows = []
    for path in sorted(Path(results_dir).glob(f"{ANY_ROUND}/{QUALITY_FILE.as_posix()}")):
        ids = round_ids(path.parent.parent, path)
        if ids is None or ids["round"] < 1:
            continue
        quality = quality_columns(path)
        seconds = pseudo_label_seconds(benchmarks_dir, ids["dataset"], ids["experiment"], ids["round"])
        rows.append({**{key: ids[key] for key in ID_COLUMNS}, PRECISION_COLUMN: quality.get(precision),
                     RECALL_COLUMN: quality.get(recall), TIME_COLUMN: seconds})
    return pd.DataFrame(rows, columns=ID_COLUMNS + [PRECISION_COLUMN, RECALL_COLUMN, TIME_COLUMN])


def collect_ablation(results_dir: PathLike, benchmarks_dir: PathLike) -> pd.DataFrame:
    """Every round >= 1 (evaluated, or with pseudo labels): :data:`ID_COLUMNS`, the test metrics of
    :data:`METRIC_COLUMNS` and the pseudo-label columns (fractions and seconds, NaN where missing)."""
    results = collect_results(results_dir)
    present = [key for key in METRIC_COLUMNS if key in results.columns]
    evaluated = results.loc[results["round"] >= 1, ID_COLUMNS + present].rename(columns=METRIC_COLUMNS)
    pseudo = collect_pseudo_rounds(results_dir, benchmarks_dir)
    merged = _typed_ids(pseudo).merge(_typed_ids(evaluated), on=ID_COLUMNS, how="outer")
    merged = merged.reindex(columns=ID_COLUMNS + list(METRIC_COLUMNS.values()) + [PRECISION_COLUMN, RECALL_COLUMN,
                                                                                   TIME_COLUMN])
    return merged.sort_values(ID_COLUMNS, key=sort_key, ignore_index=True)


def _typed_ids(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its :data:`ID_COLUMNS` typed (an empty frame's columns are untyped, which a merge rejects)."""
    return df.astype({"dataset": str, "setting": str, "ratio": float, "variant": str, SPLIT_COLUMN: int,
                      "round": int})


def datasets_with_variants(ablation: pd.DataFrame) -> list[str]:
    """Datasets of ``ablation`` that hold at least one variant."""
    return sorted(ablation.loc[ablation["variant"] != "", "dataset"].unique())


def ablation_table(ablation: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """The rows of ``dataset`` whose setting and ratio have a variant, :data:`TABLE_KEYS` first, numbers in %."""
    sub = ablation[ablation["dataset"] == dataset]
    with_variant = sub.loc[sub["variant"] != "", ["setting", "ratio"]].drop_duplicates()
    table = sub.merge(with_variant, on=["setting", "ratio"])
    percent = list(METRIC_COLUMNS.values()) + [PRECISION_COLUMN, RECALL_COLUMN]
    table = table[TABLE_KEYS + percent + [TIME_COLUMN]].copy()
    table[percent] = table[percent].astype(float) * 100.0
    return table.sort_values(TABLE_KEYS, key=sort_key, ignore_index=True)


def write_ablation_tables(ablation: pd.DataFrame, out_dir: PathLike, datasets: list[str]) -> list[Path]:
    """Write ``{dataset}_ablation.csv`` and ``.md`` for each of ``datasets`` (also for one without variants: a
    header only / a sentence saying so); returns the paths."""
    out_dir = Path(out_dir)
    written = []
    for dataset in datasets:
        table = ablation_table(ablation, dataset)
        csv_path, md_path = out_dir / f"{dataset}_ablation.csv", out_dir / f"{dataset}_ablation.md"
        write_text_atomic(csv_path, table.to_csv(index=False, na_rep=""))
        write_text_atomic(md_path, _markdown(table, dataset))
        written += [csv_path, md_path]
    return written


def _markdown(table: pd.DataFrame, dataset: str) -> str:
    title = (f"# {dataset}: ablation, each variant beside its base (test mAP %, pseudo-label precision / recall % "
             f"at IoU {QUALITY_IOU:g}, pseudo-labelling time)\n\n")
    if table.empty:
        return title + "No variant has been evaluated or pseudo-labelled yet.\n"
    shown = table.copy()
    shown["ratio"] = [f"{r * 100:g}%" for r in shown["ratio"]]
    shown[["round", SPLIT_COLUMN]] = shown[["round", SPLIT_COLUMN]].astype(str)
    shown["variant"] = [v or BASE_NAME for v in shown["variant"]]
    for col in shown.columns[len(TABLE_KEYS):]:
        shown[col] = [MISSING_MARK if pd.isna(v) else f"{v:.1f}" for v in shown[col]]
    align = ["left"] * len(TABLE_KEYS) + ["right"] * (len(shown.columns) - len(TABLE_KEYS))
    return title + shown.to_markdown(index=False, disable_numparse=True, colalign=align) + "\n"
