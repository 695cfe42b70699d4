"""Workflow helpers, config schema and the Snakemake DAG of the data stage."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from leod_core.workflow import default_targets, experiment_dir, format_ratio, preprocess_cli_args, synth_cli_args

REPO = Path(__file__).resolve().parents[2]


def test_ratio_formatting_is_canonical():
    assert [format_ratio(r) for r in (0.1, "0.10", 0.01, 1, 1e-5)] == ["0.1", "0.1", "0.01", "1", "0.00001"]
    with pytest.raises(ValueError, match="ratio '1.5' is not in"):
        format_ratio("1.5")


def test_targets_and_cli_args_from_config():
    config = yaml.safe_load((REPO / "workflow_config/config.yaml").read_text())
    assert default_targets(config) == ["results/synth/wsod_0.1/split.json"]
    assert experiment_dir("gen1", "ssod", 0.02) == "results/gen1/ssod_0.02"
    args = synth_cli_args({"seed": 3, "duration_s": 2.5})
    assert args == "--duration-s 2.5 --seed 3"
    assert preprocess_cli_args({"preset": "gen4", "config": "x.yaml"}) == "--preset gen4 --config x.yaml"


def dry_run(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(["snakemake", "-n", "--cores", "1", "--directory", str(workdir),
                           "--snakefile", str(REPO / "Snakefile"), *extra],
                          capture_output=True, text=True, cwd=REPO)


@pytest.fixture
def workdir(tmp_path) -> Path:
    shutil.copytree(REPO / "workflow_config", tmp_path / "workflow_config")
    return tmp_path


def test_dry_run_plans_the_data_stage(workdir):
    result = dry_run(workdir)
    assert result.returncode == 0, result.stderr
    for rule in ("synth_raw", "preprocess", "split", "all"):
        assert rule in result.stdout


def test_new_ratio_is_just_a_target(workdir):
    result = dry_run(workdir, "results/synth/ssod_0.25/split.json")
    assert result.returncode == 0, result.stderr
    assert "ratio=0.25" in result.stdout and "setting=ssod" in result.stdout


def test_config_typo_is_an_error_naming_the_key(workdir):
    cfg = workdir / "workflow_config/config.yaml"
    cfg.write_text(cfg.read_text().replace("sequence_length:", "sequence_lenght: 5\n    sequence_length:"))
    result = dry_run(workdir)
    assert result.returncode != 0
    assert "sequence_lenght" in result.stdout + result.stderr


@pytest.mark.slow
def test_data_stage_runs_end_to_end_on_a_shrunk_default(workdir):
    cfg_path = workdir / "workflow_config/config.yaml"
    config = yaml.safe_load(cfg_path.read_text())
    config["datasets"]["synth"]["synth"].update(duration_s=2.0, num_train=3, num_val=1, num_test=1)
    cfg_path.write_text(yaml.safe_dump(config))
    result = subprocess.run(["snakemake", "--cores", "2", "--directory", str(workdir), "--snakefile",
                             str(REPO / "Snakefile"), "results/synth/ssod_0.5/split.json", "results/synth/wsod_0.1/split.json"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    from leod_core.data.splits import read_split
    wsod = read_split(workdir / "results/synth/wsod_0.1/split.json")
    ssod = read_split(workdir / "results/synth/ssod_0.5/split.json")
    assert wsod.num_sequences == ssod.num_sequences == 3
    assert ssod.num_labeled_sequences == 2          # round(3 * 0.5) = 2, k = 1
    assert all(frames for frames in wsod.labeled_frames.values())
    for rule_log in ("raw/synth/synth.log", "data/synth/preprocess.log"):
        assert (workdir / "logs" / rule_log).stat().st_size > 0
    assert (workdir / "benchmarks/data/synth/preprocess.tsv").is_file()
