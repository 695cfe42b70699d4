"""PNG plots of the collected results (the long frame of :func:`tables.collect_results`), Agg only.

- ``{dataset}_map.png``: test mAP (%) per round, one line per experiment (setting × ratio [+ variant]),
  the full-supervision mAP (``full_1`` round 0) as a dashed horizontal line.
- ``{dataset}_pseudo_quality.png``: pseudo-label precision and recall (%) of the labels each round trains
  on (``pl_precision@{thr}`` / ``pl_recall@{thr}`` columns, from ``round{r}/pseudo/quality.json``), one
  colour per experiment and one line style per IoU threshold. Written only if such columns exist.

Every figure is ``FIGSIZE_IN`` × ``DPI`` = 960 × 600 px and written atomically.
"""
from __future__ import annotations

import os
from itertools import cycle
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from leod_core.data.atomic import atomic_path
from leod_core.evaluation.tables import (EXPERIMENT_KEYS, FULL_EXPERIMENT, MAP_KEY, QUALITY_KEYS, full_map,
                                         sort_key)

PathLike = str | os.PathLike
FIGSIZE_IN = (9.6, 6.0)
DPI = 100
LINESTYLES = ("-", "--", ":", "-.")


def write_plots(df: pd.DataFrame, out_dir: PathLike) -> list[Path]:
    """Write the plots of every dataset in ``df`` to ``out_dir``; returns the written paths."""
    out_dir = Path(out_dir)
    written = []
    for dataset in sorted(df["dataset"].unique()):
        sub = df[df["dataset"] == dataset]
        written.append(plot_map_per_round(sub, out_dir / f"{dataset}_map.png", dataset))
        if _quality_columns(sub):
            written.append(plot_pseudo_quality(sub, out_dir / f"{dataset}_pseudo_quality.png", dataset))
    return written


def plot_map_per_round(sub: pd.DataFrame, path: PathLike, dataset: str) -> Path:
    """Test mAP (%) against round for one dataset's rows."""
    fig = _figure()
    ax = fig.add_subplot()
    for label, colour, exp in _experiments(sub):
        ax.plot(exp["round"], exp[MAP_KEY] * 100.0, marker="o", color=colour, label=label)
    full = full_map(sub)
    if full == full:  # not NaN
        ax.axhline(full, color="black", linestyle="--", linewidth=1, label=f"{FULL_EXPERIMENT[0]} supervision")
    _finish(ax, f"{dataset}: test mAP per round", "mAP (%)")
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
                if col in exp and exp[col].notna().any():
                    rows = exp[exp[col].notna()]
                    ax.plot(rows["round"], rows[col] * 100.0, marker="o", color=colour, linestyle=styles[thr],
                            label=f"{label}, IoU {thr}")
        _finish(ax, f"{dataset}: pseudo-label {key}", f"{key} (%)")
    return _save(fig, path)


def _experiments(sub: pd.DataFrame):
    """(label, colour, rows sorted by round) per experiment, in table order; colours fixed by that order."""
    keys = sub[EXPERIMENT_KEYS].drop_duplicates().sort_values(EXPERIMENT_KEYS, key=sort_key)
    for i, (setting, ratio, variant) in enumerate(keys.itertuples(index=False)):
        exp = sub[(sub["setting"] == setting) & (sub["ratio"] == ratio) & (sub["variant"] == variant)]
        label = f"{setting} {ratio * 100:g}%" + (f" +{variant}" if variant else "")
        yield label, f"C{i % 10}", exp.sort_values("round")


def _quality_columns(sub: pd.DataFrame) -> list[str]:
    return [c for c in sub.columns if c.startswith("pl_") and "@" in c and sub[c].notna().any()]


def _figure() -> Figure:
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(ax, title: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _save(fig: Figure, path: PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path
