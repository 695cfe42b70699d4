"""Unit tests of leod_core.workflow: wildcards, config -> job settings and CLI args, gate walk, small jobs."""
from __future__ import annotations

import copy
import dataclasses
import json
import shlex
from pathlib import Path

import pytest
import yaml

from leod_core.cli import build_parser
from leod_core.config import replace_fields
from leod_core.models.detector import RVTConfig
from leod_core.models.train_job import job_from_mapping
from leod_core.pseudo.shard_job import shard_sequences
from leod_core.pseudo.tracker import TrackerConfig
from leod_core.pseudo.tta import TTAConfig
from leod_core.workflow import (DOWNLOAD_SOURCE, Experiment, ExperimentName, ablation_by_default, ablation_experiments,
                                ablation_rounds, ablation_tables, check_config, check_ratio_wildcard, data_hint,
                                data_source, deep_merge, default_tables, download_archive, evaluate_cli_args,
                                finished_message, experiment_dir, experiment_rounds, experiments,
                                experiment_settings, format_ratio, job_config, label_quality_cli_args,
                                preprocess_cli_args, pseudo_label_cli_args, round0_variant, round_targets,
                                synth_cli_args, train_devices, train_job_config, video_cli_args)
from leod_core.workflow import jobs, paths
from leod_core.workflow.__main__ import main as workflow_main

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "workflow_config"


def load(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / name).read_text())


def with_defaults(config: dict) -> dict:
    """What the schema's defaults fill in (the Snakefile validates with defaults)."""
    config = deep_merge({"self_training": {"max_rounds": 1, "num_shards": 2, "gate": {"threshold": 0.85, "iou": 0.5}},
                         "device": "cpu", "threads": {"train": 8, "pseudo_label": 4, "evaluate": 4}}, config)
    return config


def paper_config() -> dict:
    """paper.yaml merged over config.yaml, as `--configfile workflow_config/paper.yaml` does."""
    return with_defaults(deep_merge(load("config.yaml"), load("paper.yaml")))


# ---------------------------------------------------------------------------------------------- wildcards
def test_ratio_formatting_is_canonical():
    assert [format_ratio(r) for r in (0.1, "0.10", 0.01, 1, 1e-5)] == ["0.1", "0.1", "0.01", "1", "0.00001"]
    with pytest.raises(ValueError, match="ratio '1.5' is not in"):
        format_ratio("1.5")


@pytest.mark.parametrize("ratio, setting, message", [
    ("abc", "wsod", "malformed ratio 'abc' is not a number in 'wsod_abc'"),
    ("1.5", "ssod", r"malformed ratio '1.5' is not in \(0, 1\] in 'ssod_1.5'"),
    ("0", "wsod", "malformed ratio '0' is not in"),
    ("0.10", "wsod", "use 'wsod_0.1'"),
    ("1e-2", "wsod", "use 'wsod_0.01'"),
    ("0.5", "full", "ratio must be 1"),
])
def test_a_malformed_ratio_wildcard_is_rejected_clearly(ratio, setting, message):
    with pytest.raises(ValueError, match=message):
        check_ratio_wildcard(ratio, setting)


def test_valid_ratio_wildcards():
    assert check_ratio_wildcard("0.2", "wsod") == 0.2
    assert check_ratio_wildcard("1", "full") == 1.0
    assert experiment_dir("gen1", "ssod", 0.02) == "results/gen1/ssod_0.02"
    assert experiment_dir("gen1", "wsod", 0.01, "no-tta") == "results/gen1/wsod_0.01+no-tta"


# ------------------------------------------------------------------------------------------ config checks
def test_check_config_names_the_problem():
    config = with_defaults(load("config.yaml"))
    check_config(config)
    bad = deep_merge(config, {"datasets": {"tables": config["datasets"]["synth"]}})
    with pytest.raises(ValueError, match="'tables' is reserved"):
        check_config(bad)
    bad = deep_merge(config, {"experiments": [{"dataset": "gen9", "setting": "wsod", "ratio": 0.1}]})
    with pytest.raises(ValueError, match="dataset 'gen9' is not configured"):
        check_config(bad)
    bad = deep_merge(config, {"experiments": [{"dataset": "synth", "setting": "full", "ratio": 0.5}]})
    with pytest.raises(ValueError, match="ratio must be 1"):
        check_config(bad)
    bad = deep_merge(config, {"datasets": {"synth": {"raw": {"path": "x"}}}})
    with pytest.raises(ValueError, match="exactly one of"):
        check_config(bad)


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    merged = deep_merge(base, {"a": {"c": [3]}, "e": {"f": 2}})
    assert merged == {"a": {"b": 1, "c": [3]}, "d": 1, "e": {"f": 2}}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}


# ------------------------------------------------------------------------------------- experiment settings
def test_default_experiment_settings_and_job_configs():
    config = with_defaults(load("config.yaml"))
    settings = experiment_settings(config, "synth", "wsod", "0.1")
    round0 = train_job_config(settings, 0)
    assert round0["model"] == {"size": "tiny", "num_classes": 2, "partition_split_32": 1,
                               "overrides": {"embed_dim": 16, "dim_head": 16}}
    assert round0["data"]["sequence_length"] == 5 and round0["optim"]["learning_rate"] == 2e-3
    round1 = train_job_config(settings, 1)
    assert round1["optim"]["max_steps"] == settings["self_train"]["optim"]["max_steps"]
    assert round1["model"] == round0["model"]
    assert job_config(settings, "pseudo", 1) == {"tta": {"sequence_length": 5, "batch_size": 4}, "tracker": {}}
    with pytest.raises(ValueError, match="round 0 has no pseudo labels"):
        job_config(settings, "pseudo", 0)
    with pytest.raises(ValueError, match="dataset 'gen1' is not configured"):
        experiment_settings(config, "gen1", "wsod", "0.1")


def test_paper_hyper_parameters_per_ratio_and_setting():
    config = paper_config()
    steps = {ratio: train_job_config(experiment_settings(config, "gen1", "wsod", ratio), 0)["optim"]["max_steps"]
             for ratio in ("0.01", "0.02", "0.05", "0.1", "0.03")}
    assert steps == {"0.01": 200_000, "0.02": 300_000, "0.05": 400_000, "0.1": 400_000, "0.03": 400_000}
    full = train_job_config(experiment_settings(config, "gen1", "full", "1"), 0)
    assert full["optim"] == {"learning_rate": 2e-4, "max_steps": 400_000}
    self1 = train_job_config(experiment_settings(config, "gen1", "ssod", "0.01"), 1)
    assert self1["optim"] == {"learning_rate": 5e-4, "max_steps": 150_000} and self1["model"]["size"] == "small"
    gen4_wsod = experiment_settings(config, "gen4", "wsod", "0.01")
    r0 = train_job_config(gen4_wsod, 0)
    assert r0["model"]["num_classes"] == 3 and r0["model"]["partition_split_32"] == 2
    assert r0["data"]["downsampled_by_2"] and r0["data"]["tflip_offset"] == -2 and r0["data"]["sequence_length"] == 10
    assert train_job_config(gen4_wsod, 2)["soft_ignore_bbox_thresh"] == [0.7, 0.55]
    assert job_config(gen4_wsod, "pseudo", 1)["tta"]["obj_thresh"] == [0.6, 0.5]
    assert "soft_ignore_bbox_thresh" not in train_job_config(experiment_settings(config, "gen4", "ssod", "0.01"), 1)
    assert experiment_settings(config, "gen4", "full", "1")["sequence_length"] == 5
    assert train_devices(gen4_wsod, 0) == 2
    assert train_devices(experiment_settings(config, "gen1", "wsod", "0.01"), 1) == 1


@pytest.mark.parametrize("config_name", ["config.yaml", "paper.yaml"])
def test_every_job_config_is_accepted_by_the_leod_cli(config_name):
    """The configs the rules write are valid `leod train` / `leod pseudo-label` configs (unknown keys raise)."""
    config = with_defaults(load("config.yaml")) if config_name == "config.yaml" else paper_config()
    for exp, round_ in experiment_rounds(config) + ablation_rounds(config):
        settings = experiment_settings(config, exp.dataset, exp.setting, exp.ratio, exp.variant)
        job = job_from_mapping(train_job_config(settings, round_), config_name)
        RVTConfig.for_size(job.model.size, job.model.num_classes, (64, 96), job.model.partition_split_32,
                           **job.model.overrides)
        if round_ >= 1:
            pseudo = job_config(settings, "pseudo", round_)
            replace_fields(TTAConfig(), pseudo["tta"], "tta")
            replace_fields(TrackerConfig(), pseudo["tracker"], "tracker")


SHARED_ROUND0 = ("no-tta", "no-tracker", "no-inpaint", "label-every-2", "hard")


def test_variants_are_overlays_over_the_experiment_settings():
    config = paper_config()

    def settings(variant: str = "") -> dict:
        return experiment_settings(config, "gen1", "wsod", "0.01", variant)

    base_tta = job_config(settings(), "pseudo", 1)["tta"]
    assert job_config(settings("no-tta"), "pseudo", 1)["tta"] == {**base_tta, "hflip": False, "tflip": False}
    assert job_config(settings("no-tracker"), "pseudo", 1)["tracker"] == {"min_track_len": 1, "inpaint": False}
    assert job_config(settings("no-inpaint"), "pseudo", 1)["tracker"] == {"inpaint": False}
    # the label-quality re-filter follows the tracker's length (LEOD reads one key), unless set itself
    assert label_quality_cli_args(settings()) == "--camera gen1"
    assert label_quality_cli_args(settings("no-tracker")) == "--camera gen1 --refilter-min-track-len 1"
    own = {**settings("no-tracker"), "label_quality": {"refilter_min_track_len": 0}}
    assert label_quality_cli_args(own) == "--camera gen1 --refilter-min-track-len 0"
    assert train_job_config(settings("label-every-2"), 1)["data"]["use_label_every"] == 2
    assert "use_label_every" not in train_job_config(settings("label-every-2"), 0)["data"]
    assert train_job_config(settings("hard"), 1)["pseudo_assignment"] == "hard"
    rvt_b = train_job_config(settings("rvt-b"), 0)
    assert rvt_b["model"]["size"] == "base" and rvt_b["optim"]["max_steps"] == 200_000   # overrides still apply
    assert job_from_mapping(train_job_config(settings("hard"), 1), "hard").pseudo_assignment == "hard"
    assert [round0_variant(config, "gen1", "wsod", "0.01", v) for v in (*SHARED_ROUND0, "rvt-b")] == [
        "", "", "", "", "", "rvt-b"]
    with pytest.raises(ValueError, match=r"unknown variant 'nope' \(known variants: hard, label-every-2, "
                                         r"no-inpaint, no-tracker, no-tta, rvt-b\)"):
        settings("nope")
    bad = deep_merge(config, {"experiments": [{"dataset": "gen1", "setting": "wsod", "ratio": 0.01, "variant": "x"}]})
    with pytest.raises(ValueError, match=r"experiments\[0\] \(gen1 wsod 0.01\+x\): unknown variant 'x'"):
        check_config(bad)


def test_ablation_experiments_bring_their_base_and_share_its_round_0():
    config = with_defaults(load("config.yaml"))
    found = ablation_experiments(config)
    assert [(exp.name, exp.round0_variant, exp.max_rounds) for exp in found] == [
        ("wsod_0.1+no-tta", "", 1), ("wsod_0.1+no-tracker", "", 1), ("wsod_0.1", "", 1)]
    assert ablation_tables(config) == ["results/tables/synth_ablation.md", "results/tables/synth_ablation.csv"]
    assert not ablation_by_default(config) and ablation_by_default(paper_config())
    passed = _gates({1: True})
    d = "results/synth/wsod_0.1"
    assert round_targets(found[0], 0, passed) == [f"{d}/round0/eval/test_metrics.json"]
    assert round_targets(found[0], 1, passed) == [f"{d}+no-tta/round1/gate.json",
                                                  f"{d}+no-tta/round1/eval/test_metrics.json"]
    paper = {exp.name: exp for exp in ablation_experiments(paper_config()) if exp.dataset == "gen1"}
    variants = ("", "+rvt-b", *(f"+{v}" for v in SHARED_ROUND0))
    assert set(paper) == {f"wsod_0.01{split}{v}" for split in ("", "-s1", "-s2") for v in variants}


def _schema_fields(node: dict, defs: dict) -> dict:
    if "$ref" in node:
        node = defs[node["$ref"].split("/")[-1]]
    return node.get("properties", {})


def test_schema_sections_mirror_the_typed_settings():
    """schema.yaml's train/pseudo sections list exactly the dataclass fields `leod` accepts."""
    from leod_core.models.lightning_module import OptimConfig
    from leod_core.models.loss import LossConfig
    from leod_core.models.train import TrainerConfig
    from leod_core.models.train_job import DataConfig, ModelChoice, TrainJob

    schema = load("schema.yaml")
    defs = schema["$defs"]

    def names(cls, skip=()):
        return {f.name for f in dataclasses.fields(cls)} - set(skip)

    train = defs["train_job"]["properties"]
    assert set(train) == names(TrainJob)
    for section, cls, skip in [("model", ModelChoice, ()), ("loss", LossConfig, ()), ("optim", OptimConfig, ()),
                               ("data", DataConfig, ()), ("trainer", TrainerConfig, ("extra_callbacks",))]:
        assert set(train[section]["properties"]) == names(cls, skip), section
    overrides = train["model"]["properties"]["overrides"]["properties"]
    assert set(overrides) == names(RVTConfig, ("size", "num_classes", "partition_split_32", "input_hw"))
    pseudo = defs["pseudo_job"]["properties"]
    assert set(pseudo["tta"]["properties"]) == names(TTAConfig)
    assert set(pseudo["tracker"]["properties"]) == names(TrackerConfig)
    synth = defs["dataset"]["properties"]["synth"]["properties"]
    assert set(synth) == {"seed", "height", "width", "duration_s", "num_train", "num_val", "num_test",
                          "min_object_px", "max_object_px", "initial_objects_mean", "min_initial_objects",
                          "arrival_rate_hz"}


# ------------------------------------------------------------------------------------------------ CLI args
def _parses(command: str, args: str, required: str) -> None:
    build_parser().parse_args([command, *shlex.split(required), *shlex.split(args)])


def test_generated_cli_args_are_accepted_by_leod():
    config = paper_config()
    gen4 = experiment_settings(config, "gen4", "wsod", "0.01")
    assert evaluate_cli_args(gen4, "cuda") == ("--camera gen4 --downsampled-by-2 --batch-size 8 --confidence-threshold 0.001 "
                                               "--sequence-length 10 --device cuda")
    _parses("evaluate", evaluate_cli_args(gen4, "cuda"), "--checkpoint m --data d --out o")
    _parses("pseudo-label", pseudo_label_cli_args(gen4, "cuda"),
            "--checkpoint m --data d --split s --out o --shard-list l")
    assert label_quality_cli_args(gen4) == "--camera gen4 --downsampled-by-2"
    _parses("label-quality", label_quality_cli_args({**gen4, "label_quality": {"refilter_min_track_len": 0}}),
            "--pseudo-data p --data d --split s --out o")
    _parses("visualize", video_cli_args(gen4, "cpu"), "--checkpoint m --data d --sequence s --out o.mp4")
    synth = with_defaults(load("config.yaml"))["datasets"]["synth"]
    _parses("synth", synth_cli_args(synth["synth"]), "--out o")
    assert synth_cli_args({"seed": 3, "duration_s": 2.5}) == "--duration-s 2.5 --seed 3"
    assert preprocess_cli_args({"camera": "gen4"}) == "--preset gen4"
    assert preprocess_cli_args({"camera": "gen1", "preprocess": {"preset": "gen1", "config": "x y.yaml"}}) == \
        "--preset gen1 --config 'x y.yaml'"


def test_data_hint_names_the_download():
    gen1 = paper_config()["datasets"]["gen1"]
    assert data_source(gen1) == DOWNLOAD_SOURCE and data_hint(gen1) == ""
    assert download_archive(gen1) == {"url": "https://download.ifi.uzh.ch/rpg/RVT/datasets/preprocessed/gen1.tar",
                                      "crc32": "5acab6f3"}
    linked = gen1 | {"preprocessed": {"path": "datasets/gen1"}}
    assert data_source(linked) == "preprocessed" and "gen1.tar (crc32 5acab6f3)" in data_hint(linked)
    with pytest.raises(ValueError, match="not downloaded"):
        download_archive(linked)
    raw = gen1 | {"raw": {"path": "results/raw/gen1"}}
    assert "train: https://download.ifi.uzh.ch/rpg/RVT/datasets/gen1_tar/train.tar (crc32 3d23bd30)" in data_hint(raw)
    assert data_hint(load("config.yaml")["datasets"]["synth"]) == ""


# -------------------------------------------------------------------------------------------- targets
def test_finished_message_names_the_tables_that_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = ["results/tables/gen1.md", "results/tables/gen1.csv", "results/tables/gen4.md"]
    assert "no table" in finished_message(tables)
    (tmp_path / "results/tables").mkdir(parents=True)
    for path in tables[:2]:
        (tmp_path / path).write_text("x")
    message = finished_message(tables)
    assert "Tables: results/tables/gen1.md (CSV next to them)" in message and "gen4" not in message


def _gates(passed: dict[int, bool]):
    def read_gate(round_):
        return {"passed": passed[round_]}
    return read_gate


def test_rounds_are_walked_through_the_gates():
    exp = Experiment("synth", "wsod", "0.1", 3)
    d = "results/synth/wsod_0.1"
    all_pass = _gates({1: True, 2: True, 3: True})
    assert round_targets(exp, 0, all_pass) == [f"{d}/round0/eval/test_metrics.json"]
    assert round_targets(exp, 2, all_pass) == [f"{d}/round2/gate.json", f"{d}/round2/eval/test_metrics.json"]
    second_fails = _gates({1: True, 2: False, 3: True})
    assert round_targets(exp, 1, second_fails) == [f"{d}/round1/gate.json", f"{d}/round1/eval/test_metrics.json"]
    assert round_targets(exp, 2, second_fails) == [f"{d}/round2/gate.json"]
    assert round_targets(exp, 3, second_fails) == []
    with pytest.raises(ValueError, match="not in 0..3"):
        round_targets(exp, 4, all_pass)


def test_experiment_names_carry_the_label_split_offset():
    assert str(ExperimentName("wsod", "0.01", 1, "rvt-b")) == "wsod_0.01-s1+rvt-b"
    assert ExperimentName.parse("ssod_0.05-s2") == ExperimentName("ssod", "0.05", 2)
    assert ExperimentName.parse("wsod_0.1+no-tta") == ExperimentName("wsod", "0.1", 0, "no-tta")
    assert experiment_dir("gen1", "wsod", 0.01, "rvt-b", split_offset=2) == "results/gen1/wsod_0.01-s2+rvt-b"
    for bad, message in (("wsod_0.01-s0", "unknown experiment suffix '-s0'"), ("wsod_0.01-x1", "'-x1'"),
                         ("wsod_0.01-s01", "'-s01'"), ("full_1-s1", "single split"),
                         ("wsod_0.010-s1", "not written canonically")):
        with pytest.raises(ValueError, match=message):
            ExperimentName.parse(bad)


def test_split_offsets_expand_every_experiment_but_full():
    config = paper_config()
    names = {exp.name for exp in experiments(config) if exp.dataset == "gen1" and not exp.variant}
    assert {"wsod_0.01", "wsod_0.01-s1", "wsod_0.01-s2", "ssod_0.1-s2", "full_1"} <= names
    assert not any(name.startswith("full_1-") for name in names)
    exp = next(e for e in experiments(config) if e.name == "wsod_0.02-s1+rvt-b")
    assert round_targets(exp, 0, _gates({})) == ["results/gen1/wsod_0.02-s1+rvt-b/round0/eval/test_metrics.json"]
    bad = copy.deepcopy(config)
    bad["experiments"] = [{"dataset": "gen1", "setting": "full", "ratio": 1, "split_offsets": [0, 1]}]
    with pytest.raises(ValueError, match=r"experiments\[0\] \(gen1 full 1\): .*single split"):
        check_config(bad)


def test_rounds_of_every_experiment_and_tables():
    config = paper_config()
    rounds = experiment_rounds(config)
    # RVT-S and RVT-B (+rvt-b) x 2 datasets x (16 experiments x 3 splits + full, one split) x rounds 0-2
    assert len(rounds) == 2 * 3 * (16 * 3 + 2)
    assert (Experiment("gen1", "full", "1", 2), 2) in rounds
    assert (Experiment("gen4", "full", "1", 2, "rvt-b", "rvt-b"), 0) in rounds
    assert (Experiment("gen4", "ssod", "0.05", 2, "rvt-b", "rvt-b", 2), 1) in rounds
    assert default_tables(config) == ["results/tables/gen1.md", "results/tables/gen1.csv",
                                      "results/tables/gen4.md", "results/tables/gen4.csv"]


# ---------------------------------------------------------------------------------------------- shards
def test_shard_list_matches_the_pseudo_label_jobs(small_dataset, tmp_path):
    listing = jobs.shard_list(small_dataset.root, small_dataset.split, 2, False)
    assert listing["num_shards"] == 2 and listing["num_sequences"] == 3
    capped = jobs.shard_list(small_dataset.root, small_dataset.split, 8, False)
    assert capped["num_shards"] == 3 and capped["requested_shards"] == 8 and all(capped["shards"])
    out = tmp_path / "shard_list.json"
    assert workflow_main(["shard-list", "--data", str(small_dataset.root), "--split", str(small_dataset.split),
                          "--num-shards", "2", "--out", str(out)]) == 0
    assert jobs.read_shard_count(out) == 2
    for k in range(2):
        assert listing["shards"][k] == shard_sequences(out, k)
    out.write_text(json.dumps({"num_shards": 2, "shards": [[]]}))
    with pytest.raises(ValueError, match="not a shard list"):
        jobs.read_shard_count(out)


def test_shard_list_options_come_from_self_training_and_the_camera():
    config = with_defaults(load("config.yaml"))
    config["self_training"]["num_shards"] = 4
    assert jobs.shard_list_cli_args(config, {"camera": "gen1"}) == "--num-shards 4"
    assert jobs.shard_list_cli_args(config, {"camera": "gen4"}) == "--num-shards 4 --downsampled-by-2"


def test_logs_and_benchmark_files_mirror_results_beside_the_benchmark_scripts():
    job = paths.ROUND_TEMPLATE.format(dataset="gen1", setting="wsod", ratio="0.01", offset="-s1", variant="+no-tta",
                                      round=1)
    assert paths.result_path(job) == paths.round_dir("gen1", "wsod", 0.01, 1, "no-tta", split_offset=1)
    assert paths.log_path(f"{job}/eval") == "logs/gen1/wsod_0.01-s1+no-tta/round1/eval.log"
    assert paths.benchmark_path(f"{job}/eval") == "logs/benchmarks/gen1/wsod_0.01-s1+no-tta/round1/eval.tsv"
    assert paths.round_place("gen1", "wsod_0.01-s1+no-tta", "1") == job
    assert paths.metrics_path("gen1", "wsod", 0.01, 1) == f"results/gen1/wsod_0.01/round1/{paths.METRICS_FILE}"
    assert not paths.BENCHMARKS_DIR.startswith("benchmarks")     # benchmarks/ holds the benchmark scripts
    with pytest.raises(ValueError, match="'benchmarks' is reserved"):
        check_config({**with_defaults(load("config.yaml")), "datasets": {"benchmarks": {"camera": "gen1"}}})


# ---------------------------------------------------------------------------------------------- resume
def test_resumable_state_is_kept_only_for_the_same_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    model, config = tmp_path / "model.ckpt", tmp_path / "config.yaml"
    model.write_bytes(b"weights-1")
    config.write_text("a: 1\n")
    state = Path("results/exp/round1/train_state")
    inputs = {"model": model, "config": config}
    assert jobs.prepare_resume(state, inputs) == "fresh"
    (state / "last.ckpt").write_text("progress")
    assert jobs.prepare_resume(state, inputs) == "resume"
    assert (state / "last.ckpt").is_file()
    model.write_bytes(b"weights-2")
    assert jobs.prepare_resume(state, inputs) == "reset"
    assert not (state / "last.ckpt").exists() and (state / jobs.STAMP_NAME).is_file()
    assert jobs.prepare_resume(state, inputs, extra="shard 1") == "reset"
    (state / jobs.STAMP_NAME).unlink()
    (state / "last.ckpt").write_text("unknown origin")
    assert jobs.prepare_resume(state, inputs, extra="shard 1") == "reset"
    with pytest.raises(ValueError, match="not under results"):
        jobs.prepare_resume(tmp_path / "elsewhere", inputs)
    assert workflow_main(["prepare-resume", "--dir", str(state), "--input", f"model={model}", "--extra",
                          "shard 1"]) == 0
    assert workflow_main(["prepare-resume", "--dir", str(state), "--input", "model"]) == 1


# ---------------------------------------------------------------------------------------------- user data
def test_link_data_links_user_data_or_explains_what_is_missing(tmp_path):
    source = tmp_path / "datasets/gen1"
    (source / "train/seq_a").mkdir(parents=True)
    (source / "val").mkdir()
    with pytest.raises(ValueError, match=r"val is empty; .*test is missing.*Download X"):
        jobs.link_data(source, tmp_path / "results/data/gen1", "preprocess_summary.json", "preprocessed",
                       hint="Download X")
    (source / "val/seq_b").mkdir()
    (source / "test/seq_c").mkdir(parents=True)
    out = tmp_path / "results/data/gen1"
    summary = jobs.link_data(source, out, "preprocess_summary.json", "preprocessed")
    assert summary["linked"] and summary["entries"] == {"train": 1, "val": 1, "test": 1}
    assert (out / "train").is_symlink() and (out / "train/seq_a").is_dir()
    assert json.loads((out / "preprocess_summary.json").read_text())["kind"] == "preprocessed"
    jobs.link_data(source, out, "preprocess_summary.json", "preprocessed")      # idempotent
    in_place = jobs.link_data(source, source, "summary.json", "raw")              # data already where it belongs
    assert not in_place["linked"] and (source / "summary.json").is_file()
    assert workflow_main(["link-data", "--kind", "raw", "--source", str(tmp_path / "nothing"), "--out",
                          str(tmp_path / "results/raw/x"), "--marker", "summary.json"]) == 1


def test_write_config_writes_yaml(tmp_path):
    out = tmp_path / "round0/train_config.yaml"
    assert workflow_main(["write-config", "--json", '{"optim": {"max_steps": 10}}', "--out", str(out)]) == 0
    assert yaml.safe_load(out.read_text()) == {"optim": {"max_steps": 10}}
    assert workflow_main(["write-config", "--json", "[1]", "--out", str(out)]) == 1
