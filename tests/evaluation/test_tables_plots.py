"""Result tables and plots from a tree of metric files."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from leod_core.data.formats import FormatError
from leod_core.evaluation import plots
from leod_core.evaluation.ablation import PRECISION_COLUMN, TIME_COLUMN, ablation_table, collect_ablation
from leod_core.evaluation.tables import (BASELINE_COLUMN, FULL_COLUMN, GAP_COLUMN, collect_gates, collect_results,
                                         split_table, summary_table, write_tables, write_test_metrics)

# experiment -> mAP (fraction) per round
MAPS = {"wsod_0.01": [0.30, 0.36, 0.38], "wsod_0.02": [0.34, 0.39], "full_1": [0.46]}
QUALITY = {("wsod_0.01", 1): (0.61, 0.42), ("wsod_0.01", 2): (0.66, 0.47), ("wsod_0.02", 1): (0.64, 0.45)}


def write_gate(round_dir: Path, precision: float, recall: float, passed: bool) -> None:
    round_dir.mkdir(parents=True, exist_ok=True)
    (round_dir / "gate.json").write_text(json.dumps({
        "passed": passed, "precision": precision, "recall": recall, "iou": 0.5, "threshold": 0.6,
        "num_frames": 120, "reason": "precision vs threshold"}))


def make_tree(root: Path, dataset: str = "gen1") -> Path:
    for exp, maps in MAPS.items():
        for r, ap in enumerate(maps):
            round_dir = root / dataset / exp / f"round{r}"
            write_test_metrics(round_dir / "eval" / "test_metrics.json", {
                "AP": ap, "AP_50": ap + 0.2, "AP_car": ap + 0.05, "AP_pedestrian": ap - 0.05, "AP_50_car": 0.9})
            if (exp, r) in QUALITY:
                p, rec = QUALITY[exp, r]
                (round_dir / "pseudo").mkdir(parents=True)
                (round_dir / "pseudo" / "quality.json").write_text(json.dumps(
                    {"precision": {"0.25": p + 0.1, "0.5": p, "0.75": p - 0.2},
                     "recall": {"0.25": rec + 0.1, "0.5": rec, "0.75": rec - 0.2}}))
                write_gate(round_dir, p, rec, passed=True)
    write_gate(root / dataset / "wsod_0.02" / "round2", 0.52, 0.4, passed=False)  # stopped: no metrics
    (root / "tables").mkdir(exist_ok=True)  # unrelated folders are ignored
    return root


def test_collect_results_long_frame(tmp_path):
    df = collect_results(make_tree(tmp_path))
    assert len(df) == 6
    assert df[["setting", "ratio", "round"]].values.tolist() == [
        ["wsod", 0.01, 0], ["wsod", 0.01, 1], ["wsod", 0.01, 2], ["wsod", 0.02, 0], ["wsod", 0.02, 1],
        ["full", 1.0, 0]]
    row = df[(df["experiment"] == "wsod_0.01") & (df["round"] == 2)].iloc[0]
    assert row["AP"] == pytest.approx(0.38) and row["AP_50"] == pytest.approx(0.58)
    assert row["pl_precision@0.5"] == pytest.approx(0.66) and row["pl_recall@0.75"] == pytest.approx(0.27)
    assert row["gate_passed"] is True or row["gate_passed"] == 1
    assert math.isnan(df[(df["experiment"] == "wsod_0.01") & (df["round"] == 0)].iloc[0]["pl_precision@0.5"])


def test_split_table_rows_columns_numbers_and_missing_round(tmp_path):
    table = split_table(collect_results(make_tree(tmp_path)), "gen1")
    assert list(table.columns) == ["setting", "ratio", "variant", "split", BASELINE_COLUMN, "round 1", "round 2",
                                   FULL_COLUMN, GAP_COLUMN] + [f"round {r} AP_{c}" for r in range(3)
                                                               for c in ("car", "pedestrian")]
    assert table["split"].tolist() == [0, 0, 0]
    assert table[["setting", "ratio"]].values.tolist() == [["wsod", 0.01], ["wsod", 0.02], ["full", 1.0]]
    first, second, full = table.iloc[0], table.iloc[1], table.iloc[2]
    assert [first[BASELINE_COLUMN], first["round 1"], first["round 2"]] == pytest.approx([30, 36, 38])
    assert math.isnan(second["round 2"])  # missing, not zero
    assert first[FULL_COLUMN] == pytest.approx(46) and second[FULL_COLUMN] == pytest.approx(46)
    assert first[GAP_COLUMN] == pytest.approx(100 * (38 - 30) / (46 - 30))
    assert second[GAP_COLUMN] == pytest.approx(100 * (39 - 34) / (46 - 34))
    assert math.isnan(full[GAP_COLUMN]) and math.isnan(full["round 1"])
    assert [first["round 2 AP_car"], first["round 2 AP_pedestrian"]] == pytest.approx([43, 33])
    assert math.isnan(second["round 2 AP_car"])


def test_write_tables_csv_and_markdown(tmp_path):
    df = collect_results(make_tree(tmp_path / "results"))
    paths = write_tables(df, tmp_path / "results" / "tables")
    assert sorted(p.name for p in paths) == ["gen1.csv", "gen1.md"]
    csv = pd.read_csv(tmp_path / "results" / "tables" / "gen1.csv")
    assert len(csv) == 3
    assert math.isnan(csv.loc[1, "round 2"]) and csv.loc[1, "round 1"] == pytest.approx(39)
    md = (tmp_path / "results" / "tables" / "gen1.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 3
    assert "| wsod" in lines[3] and "2%" in lines[3] and "–" in lines[3] and "0.0" not in lines[3]
    assert "38.0" in lines[2] and "50.0" in lines[2]  # round 2 and gap closed of wsod 1 %
    assert not list((tmp_path / "results" / "tables").glob(".*tmp*"))


def test_gates_are_listed_with_the_table_also_for_stopped_rounds(tmp_path):
    root = make_tree(tmp_path / "results")
    gates = collect_gates(root)
    assert list(zip(gates["ratio"], gates["round"], gates["passed"])) == [
        (0.01, 1, True), (0.01, 2, True), (0.02, 1, True), (0.02, 2, False)]
    write_tables(collect_results(root), tmp_path / "tables", gates)
    md = (tmp_path / "tables" / "gen1.md").read_text()
    section = md.split("## Self-training gates", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    assert len(rows) == 4
    assert "| 2%" in rows[3] and "52.0" in rows[3] and "40.0" in rows[3] and "60.0" in rows[3]
    assert rows[3].rstrip(" |").endswith("stop") and rows[0].rstrip(" |").endswith("train")


def test_rounds_at_or_after_a_failed_gate_are_left_out(tmp_path):
    root = make_tree(tmp_path)
    write_gate(root / "gen1" / "wsod_0.01" / "round1", 0.3, 0.2, passed=False)
    df = collect_results(root)
    assert sorted(df[df["experiment"] == "wsod_0.01"]["round"]) == [0]
    assert sorted(df[df["experiment"] == "wsod_0.02"]["round"]) == [0, 1]


def test_a_gate_without_its_numbers_is_a_format_error(tmp_path):
    root = make_tree(tmp_path)
    (root / "gen1" / "wsod_0.01" / "round1" / "gate.json").write_text(json.dumps({"passed": True}))
    with pytest.raises(FormatError, match="missing precision, recall"):
        collect_gates(root)


def test_missing_full_experiment_gives_missing_gap(tmp_path):
    make_tree(tmp_path)
    for f in (tmp_path / "gen1" / "full_1").rglob("*.json"):
        f.unlink()
    table = split_table(collect_results(tmp_path), "gen1")
    assert table[FULL_COLUMN].isna().all() and table[GAP_COLUMN].isna().all()


def test_variant_and_bad_json(tmp_path):
    make_tree(tmp_path)
    write_test_metrics(tmp_path / "gen1" / "wsod_0.01+no-tta" / "round0" / "eval" / "test_metrics.json", {"AP": 0.2})
    table = split_table(collect_results(tmp_path), "gen1")
    assert table["variant"].tolist() == ["", "no-tta", "", ""]
    bad = tmp_path / "gen1" / "wsod_0.02" / "round1" / "eval" / "test_metrics.json"
    bad.write_text("[1, 2")
    with pytest.raises(FormatError, match="test_metrics.json"):
        collect_results(tmp_path)


def test_plots_exist_with_expected_pixel_size(tmp_path):
    df = collect_results(make_tree(tmp_path / "results"))
    paths = plots.write_plots(df, tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["gen1_label_efficiency.png", "gen1_map.png", "gen1_pseudo_quality.png"]
    width, height = (round(s * plots.DPI) for s in plots.FIGSIZE_IN)
    for path in paths:
        image = matplotlib.image.imread(path)
        assert image.shape[:2] == (height, width)


def test_metrics_file_without_ap_is_an_error(tmp_path):
    make_tree(tmp_path)
    write_test_metrics(tmp_path / "gen1" / "ssod_0.05" / "round0" / "eval" / "test_metrics.json", {"AP_50": 0.5})
    with pytest.raises(FormatError, match="'AP'"):
        collect_results(tmp_path)


def test_leod_tables_cli(tmp_path, caplog):
    from leod_core.cli import main
    results = make_tree(tmp_path / "results")
    assert main(["tables", "--results", str(results), "--out", str(tmp_path / "tables"),
                 "--plots", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "tables/gen1.md").is_file() and (tmp_path / "tables/gen1.csv").is_file()
    assert (tmp_path / "plots/gen1_map.png").is_file()
    assert main(["tables", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "t2"),
                 "--plots", str(tmp_path / "p2")]) == 1
    assert "no round*/eval/test_metrics.json found" in caplog.text


def write_maps(root: Path, maps: dict[str, list[float]], dataset: str = "gen1") -> Path:
    """``round{r}/eval/test_metrics.json`` with mAP ``maps[exp][r]`` (fractions) for each experiment directory."""
    for exp, values in maps.items():
        for r, ap in enumerate(values):
            if ap is not None:
                write_test_metrics(root / dataset / exp / f"round{r}" / "eval" / "test_metrics.json", {"AP": ap})
    return root


SPLIT_MAPS = {"wsod_0.01-s1": [0.32, 0.35, 0.41], "wsod_0.01-s2": [0.29, 0.37]}   # beside make_tree's offset 0


def test_splits_are_rows_of_the_csv_and_mean_std_n_in_the_markdown(tmp_path):
    root = write_maps(make_tree(tmp_path / "results"), SPLIT_MAPS)
    write_test_metrics(root / "gen1" / "wsod_0.01-s1" / "round0" / "eval" / "test_metrics.json",
                       {"AP": 0.32, "AP_car": 0.4, "AP_pedestrian": -1.0})       # COCO: undefined
    write_gate(root / "gen1" / "wsod_0.01-s1" / "round1", 0.7, 0.5, passed=True)
    splits = split_table(collect_results(root), "gen1")
    assert splits[["ratio", "split"]].values.tolist() == [[0.01, 0], [0.01, 1], [0.01, 2], [0.02, 0], [1.0, 0]]
    assert splits.loc[1, "round 0 AP_car"] == pytest.approx(40) and math.isnan(splits.loc[1, "round 0 AP_pedestrian"])
    gaps = [100 * (38 - 30) / (46 - 30), 100 * (41 - 32) / (46 - 32), 100 * (37 - 29) / (46 - 29)]
    assert splits[GAP_COLUMN][:3].tolist() == pytest.approx(gaps)

    summary = summary_table(splits)
    wsod1 = summary.loc[("wsod", 0.01, "")]
    assert [wsod1[(BASELINE_COLUMN, stat)] for stat in ("mean", "std", "n")] == pytest.approx(
        [statistics.mean([30, 32, 29]), statistics.stdev([30, 32, 29]), 3])
    assert [wsod1[("round 2", stat)] for stat in ("mean", "std", "n")] == pytest.approx([39.5, 2.1213203, 2])
    assert wsod1[(GAP_COLUMN, "mean")] == pytest.approx(statistics.mean(gaps))   # per split, then averaged
    assert wsod1[(FULL_COLUMN, "mean")] == pytest.approx(46)

    write_tables(collect_results(root), tmp_path / "tables", collect_gates(root))
    md = (tmp_path / "tables" / "gen1.md").read_text()
    table, gates = md.split("## Self-training gates")
    rows = [line for line in table.splitlines() if line.startswith("| wsod") or line.startswith("| full")]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert cells[0] == ["wsod", "1%", "30.3 ± 1.5 (n=3)", "36.0 ± 1.0 (n=3)", "39.5 ± 2.1 (n=2)", "46.0",
                        f"{statistics.mean(gaps):.1f} ± {statistics.stdev(gaps):.1f} (n=3)"]
    assert cells[1] == ["wsod", "2%", "34.0", "39.0", "–", "46.0", "41.7"]   # one split: the value alone
    gate_rows = [[c.strip() for c in row.strip("|").split("|")] for row in gates.splitlines() if row.startswith("| ")]
    assert [row[:4] for row in gate_rows[1:]] == [["wsod", "1%", "0", "1"], ["wsod", "1%", "0", "2"],
                                                  ["wsod", "1%", "1", "1"], ["wsod", "2%", "0", "1"],
                                                  ["wsod", "2%", "0", "2"]]
    assert gate_rows[0][2] == "split"
    assert len(pd.read_csv(tmp_path / "tables" / "gen1.csv")) == 5


def test_full_and_gap_closed_come_from_the_full_experiment_of_the_same_model(tmp_path, caplog):
    """RVT-S rows against full_1 (40 %), RVT-B rows against full_1+rvt-b (50 %); a variant sharing round 0 with
    the base (no round 0 of its own, no full experiment) against full_1."""
    root = write_maps(tmp_path, {"full_1": [0.40], "full_1+rvt-b": [0.50], "wsod_0.01": [0.30, 0.35],
                                 "wsod_0.01+rvt-b": [0.36, 0.42], "wsod_0.01+no-tta": [None, 0.34]})
    table = split_table(collect_results(root), "gen1").set_index(["setting", "variant"])
    assert table.loc[("wsod", ""), FULL_COLUMN] == pytest.approx(40)
    assert table.loc[("wsod", ""), GAP_COLUMN] == pytest.approx(100 * (35 - 30) / (40 - 30))
    assert table.loc[("wsod", "rvt-b"), FULL_COLUMN] == pytest.approx(50)
    assert table.loc[("wsod", "rvt-b"), GAP_COLUMN] == pytest.approx(100 * (42 - 36) / (50 - 36))
    assert table.loc[("full", "rvt-b"), FULL_COLUMN] == pytest.approx(50)
    assert table.loc[("wsod", "no-tta"), FULL_COLUMN] == pytest.approx(40)
    assert math.isnan(table.loc[("wsod", "no-tta"), GAP_COLUMN])   # its round 0 is the base's
    assert "no full_1+" not in caplog.text and "rvt-b" not in caplog.text

    (root / "gen1" / "full_1+rvt-b" / "round0" / "eval" / "test_metrics.json").unlink()
    table = split_table(collect_results(root), "gen1").set_index(["setting", "variant"])
    assert table.loc[("wsod", "rvt-b"), FULL_COLUMN] == pytest.approx(40)
    assert "variant 'rvt-b' has a round 0 of its own but there is no full_1+rvt-b" in caplog.text
    assert "'no-tta'" not in caplog.text


def test_full_1_rounds_are_shown_and_full_stays_its_round_0(tmp_path):
    root = write_maps(tmp_path, {"full_1": [0.46, 0.48, 0.49], "ssod_0.05": [0.30, 0.33]})
    table = split_table(collect_results(root), "gen1").set_index("setting")
    assert table.loc["ssod", FULL_COLUMN] == pytest.approx(46) and table.loc["full", FULL_COLUMN] == pytest.approx(46)
    assert table.loc["ssod", GAP_COLUMN] == pytest.approx(100 * 3 / 16)
    assert [table.loc["full", c] for c in (BASELINE_COLUMN, "round 1", "round 2")] == pytest.approx([46, 48, 49])
    assert math.isnan(table.loc["full", GAP_COLUMN])


@pytest.mark.parametrize("name", ["wsod_0.010", "wsod_0.01-s0", "wsod_0.01-s01", "wsod_0.01-x1", "full_1-s1",
                                  "full_0.5", "wsod"])
def test_an_unparseable_experiment_directory_is_skipped_with_a_warning(tmp_path, caplog, name):
    root = write_maps(tmp_path, {"wsod_0.01": [0.3], name: [0.5]})
    write_gate(root / "gen1" / name / "round1", 0.7, 0.5, passed=True)
    df = collect_results(root)
    assert df["experiment"].tolist() == ["wsod_0.01"]
    assert collect_gates(root).empty
    assert f"skipping {root / 'gen1' / name}" in caplog.text


def test_label_efficiency_series_and_figure_with_two_splits(tmp_path):
    root = write_maps(tmp_path / "results", {
        "wsod_0.01": [0.30, 0.36], "wsod_0.01-s1": [0.32, 0.40], "wsod_0.02": [0.34, 0.39], "wsod_0.02-s1": [0.36],
        "ssod_0.01": [0.31], "full_1": [0.46, 0.47], "wsod_0.01+rvt-b": [0.5], "full_1+rvt-b": [0.6]})
    df = collect_results(root)
    series = plots.label_efficiency_series(df)
    assert series[["setting", "round", "ratio", "n"]].values.tolist() == [
        ["wsod", 0, 0.01, 2], ["wsod", 0, 0.02, 2], ["wsod", 0, 1.0, 1], ["wsod", 1, 0.01, 2], ["wsod", 1, 0.02, 1],
        ["wsod", 1, 1.0, 1], ["ssod", 0, 0.01, 1], ["ssod", 0, 1.0, 1], ["ssod", 1, 1.0, 1]]
    assert series["mean"].tolist() == pytest.approx([31, 35, 46, 38, 39, 47, 31, 46, 47])
    assert series["std"][[0, 1, 3]].tolist() == pytest.approx([math.sqrt(2), math.sqrt(2), math.sqrt(8)])
    assert series["std"][[2, 4, 5, 6, 7, 8]].isna().all()
    paths = plots.write_plots(df, tmp_path / "plots")
    path = tmp_path / "plots" / "gen1_label_efficiency.png"
    assert path in paths
    width, height = (round(s * plots.DPI) for s in plots.FIGSIZE_IN)
    assert matplotlib.image.imread(path).shape[:2] == (height, width)


# ------------------------------------------------------------------------------------------------ ablation
VARIANTS = {"no-tta": (0.33, 0.55, 0.40), "no-tracker": (0.31, 0.50, 0.45)}   # mAP, PL precision, PL recall
BENCHMARK_HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def make_ablation_tree(root: Path) -> tuple[Path, Path]:
    """make_tree's gen1 plus two round-1 variants of wsod_0.01 and a failed-gate variant; Snakemake benchmark
    files of no-tta's two pseudo-labelling shards (12.5 s + 7.5 s)."""
    results, benchmarks = make_tree(root / "results"), root / "benchmarks"
    for variant, (ap, precision, recall) in VARIANTS.items():
        round_dir = results / "gen1" / f"wsod_0.01+{variant}" / "round1"
        write_test_metrics(round_dir / "eval" / "test_metrics.json", {"AP": ap, "AP_50": ap + 0.2, "AP_75": ap - 0.1})
        (round_dir / "pseudo").mkdir(parents=True)
        (round_dir / "pseudo" / "quality.json").write_text(json.dumps(
            {"precision": {"0.5": precision}, "recall": {"0.5": recall}}))
    stopped = results / "gen1" / "wsod_0.01+hard" / "round1"
    (stopped / "pseudo").mkdir(parents=True)
    (stopped / "pseudo" / "quality.json").write_text(json.dumps({"precision": {"0.5": 0.2}, "recall": {"0.5": 0.1}}))
    write_gate(stopped, 0.2, 0.1, passed=False)
    shards = benchmarks / "gen1" / "wsod_0.01+no-tta" / "round1" / "pseudo" / "shards"
    shards.mkdir(parents=True)
    for shard, seconds in enumerate((12.5, 7.5)):
        (shards / f"{shard}.tsv").write_text(f"{BENCHMARK_HEADER}{seconds}\t0:00:{seconds:02.0f}" + "\t1" * 8 + "\n")
    return results, benchmarks


def test_ablation_table_has_the_variants_as_rows(tmp_path):
    results, benchmarks = make_ablation_tree(tmp_path)
    table = ablation_table(collect_ablation(results, benchmarks), "gen1")
    assert table[["ratio", "round", "variant"]].values.tolist() == [
        [0.01, 1, ""], [0.01, 1, "hard"], [0.01, 1, "no-tracker"], [0.01, 1, "no-tta"], [0.01, 2, ""]]
    rows = table.set_index(["round", "variant"])
    assert rows.loc[(1, "no-tta"), "mAP"] == pytest.approx(33.0)
    assert rows.loc[(1, "no-tta"), "AP75"] == pytest.approx(23.0)
    assert rows.loc[(1, ""), PRECISION_COLUMN] == pytest.approx(61.0) and rows.loc[(1, "no-tracker"), "recall"] == 45.0
    assert rows.loc[(1, "no-tta"), TIME_COLUMN] == pytest.approx(20.0)
    assert math.isnan(rows.loc[(1, ""), TIME_COLUMN]) and math.isnan(rows.loc[(1, "hard"), "mAP"])   # gate failed
    assert rows.loc[(1, "hard"), PRECISION_COLUMN] == pytest.approx(20.0)


def test_leod_tables_writes_the_ablation_markdown_and_csv(tmp_path):
    from leod_core.cli import main

    results, benchmarks = make_ablation_tree(tmp_path)
    out = tmp_path / "tables"
    assert main(["tables", "--write", "ablation", "--datasets", "gen1", "gen4", "--results", str(results),
                 "--benchmarks", str(benchmarks), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["gen1_ablation.csv", "gen1_ablation.md", "gen4_ablation.csv",
                                                     "gen4_ablation.md"]
    markdown = (out / "gen1_ablation.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| wsod")]
    assert [line.split("|")[5].strip() for line in lines] == ["(base)", "hard", "no-tracker", "no-tta", "(base)"]
    assert {line.split("|")[4].strip() for line in lines} == {"0"}   # the split
    assert lines[3].rstrip(" |").endswith("20.0") and "–" in lines[1]
    assert len(pd.read_csv(out / "gen1_ablation.csv")) == 5
    assert "No variant" in (out / "gen4_ablation.md").read_text()
    assert pd.read_csv(out / "gen4_ablation.csv").empty


def test_ablation_rows_per_split(tmp_path):
    results, benchmarks = make_ablation_tree(tmp_path)
    write_maps(results, {"wsod_0.01-s1": [0.31, 0.35], "wsod_0.01-s1+no-tta": [None, 0.37]})
    table = ablation_table(collect_ablation(results, benchmarks), "gen1")
    assert table[["round", "split", "variant"]].values.tolist() == [
        [1, 0, ""], [1, 0, "hard"], [1, 0, "no-tracker"], [1, 0, "no-tta"], [1, 1, ""], [1, 1, "no-tta"], [2, 0, ""]]
    assert table["mAP"][4:6].tolist() == pytest.approx([35, 37])
