"""PNG plots of the collected results (the long frame of :func:`tables.collect_results`), Agg only.

- ``{dataset}_map.png``: test mAP (%) per round, one line per experiment (setting × ratio [+ variant]): the mean
  over its label splits with the sample std (ddof=1) as error bars where several splits exist; the
  full-supervision mAP (``full_1`` round 0) as a dashed horizontal line.
- ``{dataset}_label_efficiency.png`` (:func:`label_efficiency_series`): test mAP (%) against the label ratio
  (log axis, ticks at the ratios present), one panel per setting of :data:`PANEL_SETTINGS` (WSOD, SSOD) and one
  line per round, the mean over the splits with ± std error bars where several splits exist (and a band between
  neighbouring such points); ``full_1``'s rounds
  (self-training on 100 % labels) are the points at 100 % of every panel and its round 0 the dashed horizontal
  line. Only the base model's rows (no variant); missing points are left out.
- ``{dataset}_pseudo_quality.png``: pseudo-label precision and recall (%) of the labels each round trains
  on (``pl_precision@{thr}`` / ``pl_recall@{thr}`` columns, from ``round{r}/pseudo/quality.json``; the mean
  over the splits), one colour per experiment and one line style per IoU threshold. Written only if such
  columns exist.

Every figure is ``FIGSIZE_IN`` × ``DPI`` = 960 × 600 px and written atomically.
"""
from __future__ import annotations

import math
import os
from itertools import cycle
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leod_core.data.atomic import atomic_path
from leod_core.data.splits import SETTINGS
from leod_core.evaluation.tables import (EXPERIMENT_KEYS, FULL_EXPERIMENT, MAP_KEY, QUALITY_KEYS, full_map,
                                         round_column, sort_key)

PathLike = str | os.PathLike
FIGSIZE_IN = (9.6, 6.0)
DPI = 100
LINESTYLES = ("-", "--", ":", "-.")
#: Settings with fewer labels than ``full``: the panels of the label-efficiency figure.
PANEL_SETTINGS = tuple(s for s in SETTINGS if s != FULL_EXPERIMENT.setting)
SERIES_KEYS = ["setting", "round", "ratio"]


def write_plots(df: pd.DataFrame, out_dir: PathLike) -> list[Path]:
    """Write the plots of every dataset in ``df`` to ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    written = []
    for dataset in sorted(df["dataset"].unique()):
        sub = df[df["dataset"] == dataset]
        written.append(plot_map_per_round(sub, out_dir / f"{dataset}_map.png", dataset))
        written.append(plot_label_efficiency(sub, out_dir / f"{dataset}_label_efficiency.png", dataset))
        if _quality_columns(sub):
            written.append(plot_pseudo_quality(sub, out_dir / f"{dataset}_pseudo_quality.png", dataset))
    return written


def plot_map_per_round(sub: pd.DataFrame, path: PathLike, dataset: str) -> Path:
    """Test mAP (%) against round for one dataset's rows."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, colour, exp in _experiments(sub):
        stats = _per_round(exp, MAP_KEY)
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"], marker="o", capsize=3, color=colour, label=label)
    _full_line(ax, full_map(sub))
    _finish_rounds(ax, f"{dataset}: test mAP per round", "mAP (%)")
    return _save(fig, path)


def label_efficiency_series(sub: pd.DataFrame) -> pd.DataFrame:
    """The points of the label-efficiency figure of one dataset's rows: one row per panel ``setting`` (of
    :data:`PANEL_SETTINGS`), ``round`` and ``ratio`` (fraction) with the ``mean``, ``std`` (ddof=1, NaN for one
    split) and ``n`` over the splits of the base model's mAP (%); ``full_1``'s rounds are in every panel at ratio 1.
    Sorted by setting (as in ``SETTINGS``), round, ratio."""
    base = sub[sub["variant"] == ""]
    full = base[base["setting"] == FULL_EXPERIMENT.setting]
    points = pd.concat([pd.concat([base[base["setting"] == setting], full]).assign(setting=setting)
                        for setting in PANEL_SETTINGS])
    points = points.assign(mAP=points[MAP_KEY].astype(float) * 100.0)
    stats = points.groupby(SERIES_KEYS)["mAP"].agg(["mean", "std", "count"]).rename(columns={"count": "n"})
    return stats.reset_index().sort_values(SERIES_KEYS, key=sort_key, ignore_index=True)


def plot_label_efficiency(sub: pd.DataFrame, path: PathLike, dataset: str) -> Path:
    """Test mAP (%) against label ratio, one panel per setting of :data:`PANEL_SETTINGS`, one line per round."""
    series = label_efficiency_series(sub)
    full = full_map(sub)
    fig = _figure()
    axes = fig.subplots(1, len(PANEL_SETTINGS), sharey=True, squeeze=False)[0]
    for ax, setting in zip(axes, PANEL_SETTINGS):
        panel = series[series["setting"] == setting]
        for round_, points in panel.groupby("round"):
            percent, colour = points["ratio"] * 100.0, f"C{round_ % 10}"
            ax.errorbar(percent, points["mean"], yerr=points["std"], marker="o", capsize=3, color=colour,
                        label=round_column(round_))
            ax.fill_between(percent, points["mean"] - points["std"], points["mean"] + points["std"], color=colour,
                            alpha=0.2, linewidth=0)
        _full_line(ax, full)
        _ratio_axis(ax, sorted(panel["ratio"].unique()))
        _finish(ax, f"{dataset}: {setting.upper()}", "labels", "mAP (%)")
    return _save(fig, path)


def plot_pseudo_quality(sub: pd.DataFrame, path: PathLike, dataset: str) -> Path:
    """Pseudo-label precision and recall (%) against round, one panel each."""
    fig = _figure()
    thresholds = sorted({c.split("@", 1)[1] for c in _quality_columns(sub)}, key=float)
    styles = dict(zip(thresholds, cycle(LINESTYLES)))
    for i, key in enumerate(QUALITY_KEYS):
        ax = fig.add_subplot(1, len(QUALITY_KEYS), i + 1)
        for label, colour, exp in _experiments(sub):
            for thr in thresholds:
                col = f"pl_{key}@{thr}"
                if col in exp:
                    stats = _per_round(exp, col)
                    if len(stats):
                        ax.plot(stats.index, stats["mean"], marker="o", color=colour, linestyle=styles[thr],
                                label=f"{label}, IoU {thr}")
        _finish_rounds(ax, f"{dataset}: pseudo-label {key}", f"{key} (%)")
    return _save(fig, path)


def _experiments(sub: pd.DataFrame):
    """(label, colour, rows of all its splits) per experiment, in table order; colours fixed by that order."""
    keys = sub[EXPERIMENT_KEYS].drop_duplicates().sort_values(EXPERIMENT_KEYS, key=sort_key)
    for i, (setting, ratio, variant) in enumerate(keys.itertuples(index=False)):
        exp = sub[(sub["setting"] == setting) & (sub["ratio"] == ratio) & (sub["variant"] == variant)]
        label = f"{setting} {ratio * 100:g}%" + (f" +{variant}" if variant else "")
        yield label, f"C{i % 10}", exp


def _per_round(exp: pd.DataFrame, col: str) -> pd.DataFrame:
    """``mean`` and ``std`` (ddof=1) over the splits of ``col`` × 100 per round (the index), rounds without a value
    left out."""
    return (exp.groupby("round")[col].agg(["mean", "std"]).astype(float) * 100.0).dropna(subset=["mean"])


def _quality_columns(sub: pd.DataFrame) -> list[str]:
    return [c for c in sub.columns if c.startswith("pl_") and "@" in c and sub[c].notna().any()]


def _figure() -> Figure:
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _full_line(ax, full: float) -> None:
    """The full-supervision mAP (%) as a dashed horizontal line, if it exists."""
    if not math.isnan(full):
        ax.axhline(full, color="black", linestyle="--", linewidth=1, label=f"{FULL_EXPERIMENT} round 0")


def _ratio_axis(ax, ratios: list[float]) -> None:
    """A log x axis with one tick per label ratio in ``ratios`` (fractions), labelled in percent."""
    ax.set_xscale("log")
    ax.set_xticks([r * 100.0 for r in ratios], labels=[f"{r * 100:g}%" for r in ratios])
    ax.minorticks_off()


def _finish_rounds(ax, title: str, ylabel: str) -> None:
    _finish(ax, title, "round", ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)


def _finish(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _save(fig: Figure, path: PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
