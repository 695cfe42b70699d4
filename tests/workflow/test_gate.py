"""The self-training gate: rules, from_round, unmeasurable pseudo labels, the gate command, the config schema, and
the paper config walked through the rounds."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate
from snakemake_interface_common.exceptions import WorkflowError

from leod_core.evaluation.tables import GATE_COLUMNS, collect_gates, collect_results, write_tables, write_test_metrics
from leod_core.workflow import Experiment, deep_merge, experiments, gate_failure_message, round_targets
from leod_core.workflow import jobs
from leod_core.workflow.__main__ import main as workflow_main
from leod_core.workflow.jobs import GateConfig, gate_decision, needs_previous_quality

CONFIG_DIR = Path(__file__).resolve().parents[2] / "workflow_config"
THRESHOLD = GateConfig(threshold=0.85, iou=0.5, rule="threshold", from_round=1)
NO_DROP = GateConfig(threshold=0.85, iou=0.5, rule="no_drop", from_round=2)


def quality(precision, recall=0.6):
    """A quality.json object of `leod label-quality` (precision None: no withheld ground truth)."""
    return {"precision": {"0.25": 0.99, "0.5": precision, "0.75": 0.1}, "recall": {"0.5": recall},
            "per_class": {"car": {"precision": {"0.5": precision}}, "pedestrian": {"precision": {"0.5": None}}},
            "num_frames": 12}


def load_config(*names: str) -> dict:
    """config.yaml with ``names`` merged over it and the schema's defaults filled in, as the Snakefile does."""
    config = {}
    for name in ("config.yaml", *names):
        config = deep_merge(config, yaml.safe_load((CONFIG_DIR / name).read_text()))
    validate(config, str(CONFIG_DIR / "schema.yaml"))
    return config


# ---------------------------------------------------------------------------------------------- rules
def test_threshold_rule_passes_iff_precision_reaches_the_threshold():
    assert gate_decision(quality(0.85), 1, THRESHOLD)["passed"] is True
    gate = gate_decision(quality(0.84), 1, THRESHOLD)
    assert gate["passed"] is False and gate["decided"] is True and gate["rule"] == "threshold"
    assert gate["precision"] == 0.84 and gate["threshold"] == 0.85 and gate["iou"] == 0.5 and gate["round"] == 1
    assert gate["recall"] == 0.6 and gate["num_frames"] == 12
    assert gate["per_class_precision"] == {"car": 0.84, "pedestrian": None}
    assert "0.8400 < threshold 0.85" in gate["reason"]
    loose = GateConfig(threshold=0.9, iou=0.25, rule="threshold", from_round=1)
    assert gate_decision(quality(0.5), 1, loose)["passed"] is True  # precision@0.25 is 0.99
    assert gate_decision(quality(0.0), 1, GateConfig(0.0, 0.5, "threshold", 1))["passed"] is True


@pytest.mark.parametrize("gate", [THRESHOLD, NO_DROP, GateConfig(0.85, 0.5, "threshold", 3)])
def test_rounds_before_from_round_always_train_and_keep_their_numbers(gate):
    for round_ in range(1, gate.from_round):
        decision = gate_decision(quality(0.1, recall=0.2), round_, gate)
        assert decision["passed"] is True and decision["decided"] is False and decision["threshold"] is None
        assert decision["precision"] == 0.1 and decision["recall"] == 0.2 and decision["from_round"] == gate.from_round
        assert f"round {round_} < self_training.gate.from_round {gate.from_round}: always trained" in decision["reason"]
    decided = gate_decision(quality(0.1), gate.from_round, gate, previous=quality(0.2))
    assert decided["passed"] is False and decided["decided"] is True


def test_no_drop_compares_with_the_previous_rounds_pseudo_labels():
    assert gate_decision(quality(0.80), 2, NO_DROP, previous=quality(0.80))["passed"] is True
    assert gate_decision(quality(0.50), 3, NO_DROP, previous=quality(0.45))["passed"] is True
    drop = gate_decision(quality(0.80), 2, NO_DROP, previous=quality(0.82))
    assert drop["passed"] is False and drop["threshold"] == 0.82
    assert "0.8000 < round 1's precision 0.8200 (rule no_drop)" in drop["reason"]
    with pytest.raises(ValueError, match="round 1's pseudo labels, which were not given"):
        gate_decision(quality(0.8), 2, NO_DROP)
    round_one = GateConfig(0.85, 0.5, "no_drop", 1)   # the schema refuses this config (see below)
    with pytest.raises(ValueError, match=r"which do not exist; set self_training.gate.from_round >= 2"):
        gate_decision(quality(0.8), 1, round_one, previous=quality(0.8))
    assert [needs_previous_quality(NO_DROP, r) for r in (1, 2, 3)] == [False, True, True]
    assert not needs_previous_quality(THRESHOLD, 2)


@pytest.mark.parametrize("gate", [THRESHOLD, NO_DROP])
def test_unmeasurable_pseudo_labels_train_without_a_decision(gate):
    """Setting full withholds no ground truth: precision None. LEOD has no gate, so such rounds train."""
    decision = gate_decision(quality(None, recall=None), 2, gate, previous=quality(None))
    assert decision["passed"] is True and decision["decided"] is False and decision["threshold"] is None
    assert "the gate cannot decide" in decision["reason"] and decision["precision"] is None


def test_gate_decision_rejects_bad_settings_and_quality():
    with pytest.raises(ValueError, match="no precision at IoU 0.6"):
        gate_decision(quality(0.9), 1, GateConfig(0.5, 0.6, "threshold", 1))
    with pytest.raises(ValueError, match="self_training.gate.threshold must be in"):
        gate_decision(quality(0.9), 1, GateConfig(1.5, 0.5, "threshold", 1))
    with pytest.raises(ValueError, match="self_training.gate.rule 'higher'"):
        gate_decision(quality(0.9), 1, GateConfig(0.5, 0.5, "higher", 1))


@pytest.mark.parametrize("precision, round_, gate", [(0.9, 1, THRESHOLD), (0.1, 1, THRESHOLD), (0.9, 1, NO_DROP),
                                                     (None, 1, THRESHOLD), (0.5, 2, NO_DROP)])
def test_every_gate_json_has_the_table_columns(precision, round_, gate):
    decision = gate_decision(quality(precision), round_, gate, previous=quality(0.6))
    assert set(GATE_COLUMNS) <= set(decision)


# --------------------------------------------------------------------------------------------- command
def test_gate_command_writes_gate_json(tmp_path):
    (tmp_path / "quality.json").write_text(json.dumps(quality(0.7)))
    (tmp_path / "previous.json").write_text(json.dumps(quality(0.75)))
    common = ["--quality", str(tmp_path / "quality.json"), "--threshold", "0.5", "--iou", "0.5"]
    out = tmp_path / "round1/gate.json"
    assert workflow_main(["gate", *common, "--round", "1", "--rule", "threshold", "--from-round", "1",
                          "--out", str(out)]) == 0
    gate = json.loads(out.read_text())
    assert gate["passed"] is True and gate["precision"] == 0.7 and gate["quality"].endswith("quality.json")
    assert workflow_main(["gate", *common, "--round", "2", "--rule", "no_drop", "--from-round", "2",
                          "--previous-quality", str(tmp_path / "previous.json"), "--out", str(out)]) == 0
    gate = json.loads(out.read_text())
    assert gate["passed"] is False and gate["threshold"] == 0.75 and gate["previous_quality"].endswith("previous.json")
    (tmp_path / "bad.json").write_text(json.dumps({"precision": {}}))
    assert workflow_main(["gate", "--quality", str(tmp_path / "bad.json"), "--threshold", "0.5", "--iou", "0.5",
                          "--round", "1", "--rule", "threshold", "--from-round", "1",
                          "--out", str(tmp_path / "x.json")]) == 1
    assert not (tmp_path / "x.json").exists()


def test_failure_message_names_the_settings_that_would_train_the_round():
    message = gate_failure_message({"reason": "0.5 < 0.85", "rule": "threshold"}, "r/round2/gate.json", 2)
    assert "round 2 is not trained" in message and "lower self_training.gate.threshold" in message
    assert "raise self_training.gate.from_round above 2" in message
    assert "set self_training.gate.rule to threshold" in gate_failure_message({"rule": "no_drop"}, "g.json", 3)


# ---------------------------------------------------------------------------------------------- config
def test_schema_fills_the_gate_defaults_and_needs_from_round_2_for_no_drop(tmp_path):
    config = yaml.safe_load((CONFIG_DIR / "config.yaml").read_text())
    del config["self_training"]["gate"]
    validate(config, str(CONFIG_DIR / "schema.yaml"))
    assert config["self_training"]["gate"] == {"rule": "threshold", "threshold": 0.85, "iou": 0.5, "from_round": 1}
    config["self_training"]["gate"] = {"rule": "no_drop"}
    with pytest.raises(WorkflowError, match=r"1 is less than the minimum of 2(.|\n)*from_round"):
        validate(config, str(CONFIG_DIR / "schema.yaml"))
    config["self_training"]["gate"] = {"rule": "no_drop", "from_round": 2}
    validate(config, str(CONFIG_DIR / "schema.yaml"))


def test_gate_config_mirrors_the_schema():
    gate = yaml.safe_load((CONFIG_DIR / "schema.yaml").read_text())["properties"]["self_training"]["properties"]["gate"]
    assert set(gate["properties"]) == {field.name for field in dataclasses.fields(GateConfig)}
    assert tuple(gate["properties"]["rule"]["enum"]) == jobs.GATE_RULES


def test_embedded_default_gates_round_1():
    gate = GateConfig(**load_config()["self_training"]["gate"])
    assert (gate.rule, gate.from_round, gate.threshold) == ("threshold", 1, 0.4)


def simulated_gates(gate: GateConfig, precision_per_round: dict[int, float | None]):
    """``read_gate`` of :func:`round_targets` over the gate.json objects that simulated pseudo-label
    precisions give (each round's decision as the gate checkpoint makes it)."""
    def read_gate(round_):
        previous = quality(precision_per_round[round_ - 1]) if needs_previous_quality(gate, round_) else None
        return gate_decision(quality(precision_per_round[round_]), round_, gate, previous)
    return read_gate


def test_paper_config_trains_round_1_at_precision_083_and_stops_before_round_2():
    config = load_config("paper.yaml")
    gate = GateConfig(**config["self_training"]["gate"])
    exp = next(e for e in experiments(config)
               if (e.dataset, e.setting, e.ratio, e.variant, e.split_offset) == ("gen1", "wsod", "0.01", "", 0))
    assert exp.max_rounds == 2
    read_gate = simulated_gates(gate, {1: 0.83, 2: 0.83})
    for from_round in (1, gate.from_round):  # read every gate, or skip those before from_round as the Snakefile does
        round1 = round_targets(exp, 1, read_gate, from_round)
        assert [path.split("/", 3)[-1] for path in round1] == ["round1/gate.json", "round1/eval/test_metrics.json"]
        round2 = round_targets(exp, 2, read_gate, from_round)
        assert [path.split("/", 3)[-1] for path in round2] == ["round2/gate.json"]
    assert read_gate(1)["decided"] is False and read_gate(2)["reason"] == "precision@0.5 0.8300 < threshold 0.85"


def test_rounds_before_from_round_do_not_wait_for_their_gate():
    exp = Experiment("synth", "wsod", "0.1", 3)
    decisions = {2: {"passed": True}, 3: {"passed": False}}

    def read_gate(round_):     # a gate checkpoint that has not run raises (and so schedules it)
        if round_ not in decisions:
            raise LookupError(f"gate {round_} is not known yet")
        return decisions[round_]

    assert round_targets(exp, 1, read_gate, from_round=2)[-1].endswith("round1/eval/test_metrics.json")
    assert round_targets(exp, 2, read_gate, from_round=2)[-1].endswith("round2/eval/test_metrics.json")
    assert round_targets(exp, 3, read_gate, from_round=2)[-1].endswith("round3/gate.json")
    with pytest.raises(LookupError, match="gate 1"):
        round_targets(exp, 1, read_gate, from_round=1)


def test_full_supervision_self_trains_through_unmeasurable_gates():
    config = load_config("paper.yaml")
    gate = GateConfig(**config["self_training"]["gate"])
    full = [e for e in experiments(config) if e.setting == "full" and e.max_rounds >= 1]
    assert full, "paper.yaml has no self-training full experiment"
    read_gate = simulated_gates(gate, {0: None, 1: None, 2: None})
    for round_ in range(1, full[0].max_rounds + 1):
        assert round_targets(full[0], round_, read_gate)[-1].endswith(f"round{round_}/eval/test_metrics.json")


# ---------------------------------------------------------------------------------------------- tables
def test_tables_list_gates_that_did_not_decide(tmp_path):
    exp = tmp_path / "gen1" / "full_1"
    for round_ in (0, 1):
        write_test_metrics(exp / f"round{round_}" / "eval" / "test_metrics.json", {"AP": 0.4 + 0.01 * round_})
    (exp / "round1" / "pseudo").mkdir(parents=True)
    (exp / "round1" / "pseudo" / "quality.json").write_text(json.dumps(quality(None, recall=None)))
    jobs.write_gate(exp / "round1" / "pseudo" / "quality.json", 1, THRESHOLD, exp / "round1" / "gate.json")
    write_tables(collect_results(tmp_path), tmp_path / "tables", collect_gates(tmp_path))
    section = (tmp_path / "tables" / "gen1.md").read_text().split("## Self-training gates", 1)[1]
    row = [line for line in section.splitlines() if line.startswith("|")][2]
    assert row.rstrip(" |").endswith("train (not gated)") and "–" in row
