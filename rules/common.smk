"""Wildcard constraints, path prefixes and the thin adapters from wildcards + config to rule inputs and CLI
arguments. The logic lives in leod_core.workflow (unit-tested); these functions only bind it to `config` and
to the checkpoints."""

import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from leod_core.workflow import *  # the rules' helpers (its __all__)
from leod_core.workflow.jobs import GateConfig, needs_previous_quality
from leod_core.workflow.jobs import read_shard_count, shard_list_cli_args
from leod_core.workflow.paths import (
    BENCHMARKS_DIR,
    DATA_MARKER_TEMPLATE,
    EXPERIMENT_NAME_TEMPLATE,
    EXPERIMENT_TEMPLATE,
    GATE_FILE,
    METRICS_FILE,
    PLOTS_DIR,
    QUALITY_FILE,
    RESULTS_DIR,
    ROUND_TEMPLATE,
    SEQUENCE_INDEX_TEMPLATE,
    SHARD_LIST_FILE,
    SHARDS_DIR,
    benchmark_path,
    log_path,
    result_path,
)
from leod_core.workflow.locks import concurrent_run_message
from leod_core.workflow.round0 import downloaded_weights, released_round0
from leod_core.workflow.round0 import round0_dataset_constraint
from leod_core.workflow.settings import RECORDINGS_SOURCE, recordings_cli_args


wildcard_constraints:
    **WILDCARD_PATTERNS,


check_config(config)
# Experiments whose round 0 is imported from released weights (round0: in the config) instead of trained.
RELEASED_ROUND0 = released_round0(config)
DOWNLOADED_WEIGHTS = downloaded_weights(RELEASED_ROUND0)
IMPORTED_ROUND0_DATASET = round0_dataset_constraint(RELEASED_ROUND0, imported=True)
TRAINED_ROUND0_DATASET = round0_dataset_constraint(RELEASED_ROUND0, imported=False)

# Path templates (leod_core.workflow.paths, docs/layout.md). {offset}: empty (label split offset 0) or -s<k>;
# {variant}: empty, or a plus sign and a name (leod_core.workflow.paths.ExperimentName). A job's log and benchmark
# file: log_path(JOB) and benchmark_path(JOB), JOB its place below results/ (EXP_JOB, ROUND_JOB, ...).
EXPERIMENT_NAME = EXPERIMENT_NAME_TEMPLATE
EXP_JOB = EXPERIMENT_TEMPLATE
ROUND_JOB = ROUND_TEMPLATE
EXP = result_path(EXP_JOB)
ROUND = result_path(ROUND_JOB)
DATA_MARKER = DATA_MARKER_TEMPLATE
SEQUENCE_INDEX = SEQUENCE_INDEX_TEMPLATE
SHARD_LIST = f"{ROUND}/{SHARD_LIST_FILE}"
SHARD_DIR = f"{ROUND}/{SHARDS_DIR}/{{shard}}"
LEOD_ENV = "../envs/leod.yaml"

SYNTH_DATASETS = name_pattern(datasets_with_source(config, "synth"))
RAW_DATASETS = name_pattern(datasets_with_source(config, "raw"))
PREPROCESSED_DATASETS = name_pattern(datasets_with_source(config, "preprocessed"))
DOWNLOADED_DATASETS = name_pattern(datasets_with_source(config, DOWNLOAD_SOURCE))
RECORDINGS_DATASETS = name_pattern(datasets_with_source(config, RECORDINGS_SOURCE))
PREPROCESSED_HERE = name_pattern(
    datasets_with_source(config, "synth")
    + datasets_with_source(config, "raw")
    + datasets_with_source(config, RECORDINGS_SOURCE)
)


# ------------------------------------------------------------------------------------------------ data
def synth_args(wildcards):
    return synth_cli_args(dataset_config(config, wildcards.dataset)["synth"])


def recordings_args(wildcards):
    return recordings_cli_args(dataset_config(config, wildcards.dataset))


def preprocess_args(wildcards):
    return preprocess_cli_args(dataset_config(config, wildcards.dataset))


def user_data_source(wildcards):
    block = dataset_config(config, wildcards.dataset)
    return block[data_source(block)]["path"]


def archive_url(wildcards):
    return download_archive(dataset_config(config, wildcards.dataset))["url"]


def archive_crc32(wildcards):
    return download_archive(dataset_config(config, wildcards.dataset))["crc32"]


def archive_path(wildcards):
    return result_path(
        f"downloads/{wildcards.dataset}/{os.path.basename(archive_url(wildcards))}"
    )


def user_data_hint(wildcards):
    return data_hint(dataset_config(config, wildcards.dataset))


_LOCK_CHECKED = []


def refuse_a_concurrent_run():
    """Once per run that executes jobs (not a dry run, not inside a cluster job), while the DAG is built and
    before snakemake's incomplete-file check: stop with the lock message if another run holds the directory.
    """
    if (
        _LOCK_CHECKED
        or workflow.executor_plugin is None
        or workflow.dryrun
        or not workflow.is_main_process
        or not workflow.execution_settings.lock
    ):
        return
    _LOCK_CHECKED.append(True)
    message = concurrent_run_message(Path.cwd())
    if message:
        raise WorkflowError(message)


def split_sequence_index(wildcards):
    """The split's input, the dataset's sequence index (every experiment starts here); first checks that no other run holds the directory, then
    the target's dataset, ratio, split offset and variant so a malformed one fails clearly.
    """
    refuse_a_concurrent_run()
    dataset_config(config, wildcards.dataset)
    check_ratio_wildcard(wildcards.ratio, wildcards.setting)
    check_offset_wildcard(wildcards.offset, wildcards.setting)
    variant_of(wildcards)
    return SEQUENCE_INDEX.format(dataset=wildcards.dataset)


def variant_of(wildcards):
    """The target's variant name ("" for none); a clear error listing the known ones for an unknown name."""
    name = variant_name(wildcards.variant)
    variant_overlay(config, name)
    return name


def settings_of(wildcards):
    return experiment_settings(
        config,
        wildcards.dataset,
        wildcards.setting,
        wildcards.ratio,
        variant_of(wildcards),
    )


def round0_variant_of(wildcards):
    """The {variant} whose split and round-0 model the target's experiment uses (the base's, "", unless the
    variant changes round 0)."""
    return variant_suffix(
        round0_variant(
            config,
            wildcards.dataset,
            wildcards.setting,
            wildcards.ratio,
            variant_of(wildcards),
        )
    )


def split_file(wildcards):
    """The experiment's label split (the base experiment's for a variant that shares round 0)."""
    return f"{EXP}/split.json".format(
        **{**wildcards, "variant": round0_variant_of(wildcards)}
    )


def own_split_file(wildcards):
    """Round 0's split; a clear error for a variant whose round 0 is the base experiment's."""
    if round0_variant_of(wildcards) != wildcards.variant:
        raise ValueError(
            f"variant {variant_of(wildcards)!r} does not change round 0: its round-0 model is "
            f"{model_of(wildcards, 0)}"
        )
    return split_file(wildcards)


def released_weights(wildcards):
    """The released weights that the experiment's round 0 imports (import_round0 runs only for these)."""
    return RELEASED_ROUND0[(wildcards.dataset, EXPERIMENT_NAME.format(**wildcards))]


def released_weights_file(wildcards):
    return released_weights(wildcards).local_path


def released_weights_checksum(wildcards):
    return released_weights(wildcards).checksum_args()


def weights_url(wildcards):
    return DOWNLOADED_WEIGHTS[wildcards.file].source


def weights_checksum(wildcards):
    return DOWNLOADED_WEIGHTS[wildcards.file].checksum_args()


def model_of(wildcards, round_):
    """Round ``round_``'s model.ckpt (round 0: the base experiment's for a variant that shares it)."""
    variant = round0_variant_of(wildcards) if int(round_) == 0 else wildcards.variant
    return f"{EXP}/round{round_}/model.ckpt".format(**{**wildcards, "variant": variant})


def round_model(wildcards):
    return model_of(wildcards, wildcards.round)


def split_sequence_length(wildcards):
    return settings_of(wildcards)["sequence_length"]


def split_offset_of(wildcards):
    return split_offset(wildcards.offset)


# ------------------------------------------------------------------------------------------- training
def job_config_json(wildcards):
    return json_arg(
        job_config(settings_of(wildcards), wildcards.kind, int(wildcards.round))
    )


def output_dir(wildcards, output):
    return os.path.dirname(output.model)


def train_state_dir(wildcards, output):
    return os.path.join(os.path.dirname(output.model), "train_state")


def train_gpus(wildcards):
    return train_devices(settings_of(wildcards), int(wildcards.round))


def read_gate_checkpoint(dataset, setting, ratio, offset, variant, round_):
    """A round's gate decision ({offset}: empty or -s<k>; {variant}: empty or plus-name); raises (and so schedules
    the gate) until the gate checkpoint has run."""
    path = checkpoints.gate.get(
        dataset=dataset,
        setting=setting,
        ratio=ratio,
        offset=offset,
        variant=variant,
        round=str(round_),
    ).output[0]
    return read_gate_file(path)


def passed_gate(wildcards):
    """Round r >= 1 trains only if its gate passed: its gate.json once the gate checkpoint has run (a clear
    error if it failed); until then the gate checkpoint's target, so that it is scheduled. Rounds before
    self_training.gate.from_round always train and do not wait for their gate."""
    round_ = int(wildcards.round)
    if round_ < GATE.from_round:
        return []
    gate = read_gate_checkpoint(
        wildcards.dataset,
        wildcards.setting,
        wildcards.ratio,
        wildcards.offset,
        wildcards.variant,
        round_,
    )
    path = f"{ROUND}/{GATE_FILE}".format(**wildcards)
    if not gate["passed"]:
        raise ValueError(gate_failure_message(gate, path, round_))
    return path


# ------------------------------------------------------------------------------------------ pseudo labels
def previous_model(wildcards):
    return model_of(wildcards, int(wildcards.round) - 1)


def init_weights(wildcards):
    """The previous round's model if self-training rounds start from it (self_training.init), else nothing."""
    return (
        [previous_model(wildcards)]
        if config["self_training"]["init"] == "previous_round"
        else []
    )


def init_weights_args(wildcards, input):
    return f"--init-weights {input.init[0]}" if input.init else ""


def init_weights_resume_input(wildcards, input):
    return f"init={input.init[0]}" if input.init else ""


def shard_list_args(wildcards):
    return shard_list_cli_args(config, settings_of(wildcards))


def shard_dir_of(wildcards, output):
    return os.path.dirname(output.manifest)


def shard_count(wildcards):
    """How many shards the shard_list checkpoint made (it alone decides which sequences each one labels)."""
    return read_shard_count(checkpoints.shard_list.get(**wildcards).output[0])


def pseudo_args(wildcards):
    return pseudo_label_cli_args(settings_of(wildcards), config["device"])


def shard_manifests(wildcards):
    """Every shard's shard.json, once the shard_list checkpoint has decided how many there are."""
    return [
        f"{SHARD_DIR}/shard.json".format(**wildcards, shard=k)
        for k in range(shard_count(wildcards))
    ]


def shard_dirs(wildcards, input):
    return " ".join(os.path.dirname(path) for path in input.shards)


def quality_args(wildcards):
    return label_quality_cli_args(settings_of(wildcards))


GATE = GateConfig(**config["self_training"]["gate"])


def previous_quality(wildcards):
    """Round r-1's quality.json where round r's gate compares with it (rule no_drop), else nothing."""
    round_ = int(wildcards.round)
    if not needs_previous_quality(GATE, round_):
        return []
    return [f"{ROUND}/{QUALITY_FILE}".format(**{**wildcards, "round": round_ - 1})]


def gate_args(wildcards):
    """The gate's settings (self_training.gate) and round r-1's quality.json where the gate reads it. A function of
    the wildcards only, so Snakemake knows the values when it builds the DAG and reruns the gate when they change.
    """
    previous = "".join(
        f" --previous-quality {path}" for path in previous_quality(wildcards)
    )
    return f"--rule {GATE.rule} --threshold {GATE.threshold} --iou {GATE.iou} --from-round {GATE.from_round}{previous}"


# ------------------------------------------------------------------------------------------- evaluation
def evaluate_args(wildcards):
    return evaluate_cli_args(settings_of(wildcards), config["device"])


def video_args(wildcards):
    return video_cli_args(settings_of(wildcards), config["device"])


def tables_dir(wildcards, output):
    return os.path.dirname(output[0])


def round_targets_function(exp, round_):
    """Input function of one round's final files, walked through the experiment's gates. One function per
    (experiment, round): an unfinished gate holds back only the rounds after it."""

    def read_gate(gate_round):
        return read_gate_checkpoint(
            exp.dataset,
            exp.setting,
            exp.ratio,
            offset_suffix(exp.split_offset),
            variant_suffix(exp.variant),
            gate_round,
        )

    def round_files(wildcards):
        return round_targets(exp, round_, read_gate, GATE.from_round)

    round_files.__name__ = f"targets_{exp.dataset}_{exp.name}_round{round_}".replace(
        "-", "_"
    ).replace("+", "_")
    return round_files


EXPERIMENT_TARGETS = [
    round_targets_function(exp, round_) for exp, round_ in experiment_rounds(config)
]
TABLES = default_tables(config)
ABLATION_TARGETS = [
    round_targets_function(exp, round_) for exp, round_ in ablation_rounds(config)
]
ABLATION_DATASETS = ablation_datasets(config)
ABLATION_TABLES = ablation_tables(config)
DEFAULT_ABLATION_TABLES = ABLATION_TABLES if ablation_by_default(config) else []
