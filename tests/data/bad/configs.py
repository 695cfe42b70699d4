"""Bad configuration: workflow-config overlays as the Snakefile loads them, ``leod --config`` files, and the
targets (wildcards of a requested path, gate files) the workflow's rules compute settings from."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import yaml
from snakemake.utils import validate
from snakemake_interface_common.exceptions import WorkflowError

from leod_core.workflow.settings import check_config, deep_merge, experiment_settings
from leod_core.workflow.targets import read_gate_file

from .common import FILES, BadCase, Call, Pristine, leod_call, preprocess_call, watched_dir

CONFIGS = FILES / "configs"
REPO = Path(__file__).resolve().parents[3]
WORKFLOW_CONFIG = REPO / "workflow_config" / "config.yaml"
WORKFLOW_SCHEMA = REPO / "workflow_config" / "schema.yaml"


# ------------------------------------------------------------------------------------------------ configs
def load_workflow_config(overlay: Path) -> dict:
    """What the Snakefile does with ``--configfile overlay``: merge it over ``config.yaml``, validate against
    ``schema.yaml`` (defaults filled in), then :func:`check_config` (``rules/common.smk``)."""
    config = deep_merge(yaml.safe_load(WORKFLOW_CONFIG.read_text()), yaml.safe_load(overlay.read_text()))
    validate(config, str(WORKFLOW_SCHEMA))
    check_config(config)
    return config


def default_workflow_config() -> dict:
    """The embedded default config, validated as the Snakefile does."""
    config = yaml.safe_load(WORKFLOW_CONFIG.read_text())
    validate(config, str(WORKFLOW_SCHEMA))
    return config


def workflow_overlay(name: str) -> Callable[[Path, Pristine], Call]:
    return lambda work, pristine: Call(run=lambda: load_workflow_config(CONFIGS / name))


def preprocess_with_config(name: str) -> Callable[[Path, Pristine], Call]:
    return lambda work, pristine: preprocess_call(work, pristine.raw, "--config", str(CONFIGS / name))


def train_with_config(name: str) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        out = watched_dir(work / "round0")
        return leod_call(["train", "--data", str(pristine.data), "--split", str(work / "split.json"),
                          "--out", str(out), "--config", str(CONFIGS / name)], out)
    return build


# ------------------------------------------------------------------------------------------------ targets
def target(dataset: str, setting: str, ratio: str, variant: str = "") -> Callable[[Path, Pristine], Call]:
    """The settings of target ``results/{dataset}/{setting}_{ratio}[+{variant}]/...``, as the rules' input
    functions compute them from the wildcards."""
    def build(work: Path, pristine: Pristine) -> Call:
        return Call(run=lambda: experiment_settings(default_workflow_config(), dataset, setting, ratio, variant))
    return build


def gate_case(text: str) -> Callable[[Path, Pristine], Call]:
    def build(work: Path, pristine: Pristine) -> Call:
        path = work / "gate.json"
        path.write_text(text)
        return Call(run=lambda: read_gate_file(path))
    return build


# -------------------------------------------------------------------------------------------------- cases
CONFIG_CASES = [
    # configs: the workflow config as the Snakefile loads it, leod --config files
    BadCase("workflow-config-typo-top-level", "configs", workflow_overlay("workflow_typo_top_level.yaml"),
            WorkflowError, r"'experiment' was unexpected"),
    BadCase("workflow-config-typo-nested", "configs", workflow_overlay("workflow_typo_nested.yaml"),
            WorkflowError, r"'sequence_lenght' was unexpected"),
    BadCase("workflow-config-malformed-ratio", "configs", workflow_overlay("workflow_malformed_ratio.yaml"),
            WorkflowError, r"'0\.1x' is not of type 'number'"),
    BadCase("workflow-config-ratio-above-one", "configs", workflow_overlay("workflow_ratio_above_one.yaml"),
            WorkflowError, r"1\.5 is greater than the maximum of 1"),
    BadCase("workflow-config-wrong-type", "configs", workflow_overlay("workflow_wrong_type.yaml"),
            WorkflowError, r"'two' is not of type 'integer'"),
    BadCase("workflow-config-unconfigured-dataset", "configs",
            workflow_overlay("workflow_unconfigured_dataset.yaml"), ValueError,
            r"experiments\[0\] \(gen9 wsod 0\.1\): dataset 'gen9' is not configured"),
    BadCase("workflow-config-unknown-variant", "configs", workflow_overlay("workflow_unknown_variant.yaml"),
            ValueError, r"ablation\.experiments\[0\] .*unknown variant 'no-such-variant' \(known variants:"),
    BadCase("workflow-config-full-below-one", "configs", workflow_overlay("workflow_full_below_one.yaml"),
            ValueError, r"experiments\[0\] \(synth full 0\.5\): setting 'full' keeps every label"),
    BadCase("preprocess-config-typo", "configs", preprocess_with_config("preprocess_typo.yaml"), ValueError,
            r"preprocess_typo\.yaml: unknown setting 'nbin'"),
    BadCase("preprocess-config-wrong-type", "configs", preprocess_with_config("preprocess_wrong_type.yaml"),
            ValueError, r"PreprocessConfig\.nbins must be int, got 'ten'"),
    BadCase("preprocess-config-nested-wrong-type", "configs",
            preprocess_with_config("preprocess_nested_wrong_type.yaml"), ValueError,
            r"BoxFilterConfig\.min_box_diag must be float, got 'big'"),
    BadCase("train-config-typo", "configs", train_with_config("train_typo.yaml"), ValueError,
            r"train_typo\.yaml\.optim: unknown setting 'lr'"),
    BadCase("config-yaml-syntax-error", "configs", preprocess_with_config("syntax_error.yaml"),
            yaml.parser.ParserError, r'syntax_error\.yaml", line \d+'),
    BadCase("config-not-a-mapping", "configs", preprocess_with_config("not_a_mapping.yaml"), ValueError,
            r"not_a_mapping\.yaml: expected a mapping of settings"),
    # targets: what the rules compute from a requested path's wildcards, and the gate they read
    BadCase("target-unknown-dataset", "targets", target("gen9", "wsod", "0.1"), ValueError,
            r"dataset 'gen9' is not configured \(configured: synth\)"),
    BadCase("target-malformed-ratio", "targets", target("synth", "wsod", "abc"), ValueError,
            r"malformed ratio 'abc' is not a number in 'wsod_abc'"),
    BadCase("target-ratio-above-one", "targets", target("synth", "ssod", "1.5"), ValueError,
            r"malformed ratio '1\.5' is not in \(0, 1\] in 'ssod_1\.5'"),
    BadCase("target-non-canonical-ratio", "targets", target("synth", "wsod", "0.10"), ValueError,
            r"ratio '0\.10' is not written canonically: use 'wsod_0\.1'"),
    BadCase("target-full-below-one", "targets", target("synth", "full", "0.5"), ValueError,
            r"setting 'full' keeps every label: its ratio must be 1"),
    BadCase("target-unknown-variant", "targets", target("synth", "wsod", "0.1", "no-such"), ValueError,
            r"unknown variant 'no-such' \(known variants: .*no-tta"),
    BadCase("gate-truncated-json", "targets", gate_case('{"passed": tr'), ValueError,
            r"gate\.json: not a gate decision: not valid JSON"),
    BadCase("gate-not-boolean", "targets", gate_case('{"passed": "yes"}'), ValueError,
            r"gate\.json: not a gate decision \(needs a boolean 'passed'\)"),
]
