"""Helpers for the Snakemake rules: paths and wildcards, config -> job settings and CLI arguments, the
targets walked through the gates, and the workflow's own small jobs (``python -m leod_core.workflow``).

The only place that knows the workflow's config layout; the library below it takes explicit arguments.
Nothing here imports Snakemake: the rules pass in what they need (e.g. how to read a gate checkpoint).
"""
from __future__ import annotations

from leod_core.workflow.paths import (RESERVED_NAMES, SELF_TRAINING_ROUND, WILDCARD_PATTERNS, ExperimentName,
                                      ablation_table_paths, check_offset_wildcard, check_ratio_wildcard, experiment_dir,
                                      format_ratio, gate_path, metrics_path, offset_suffix, round_dir, split_offset,
                                      table_paths, variant_name, variant_suffix)
from leod_core.workflow.settings import (CAMERA_TRAIN_DEFAULTS, DOWNLOAD_SOURCE, check_config, data_hint, data_source,
                                         dataset_config, datasets_with_source, deep_merge, download_archive,
                                         downsampled_by_2, evaluate_cli_args,
                                         experiment_settings, job_config, json_arg, label_quality_cli_args,
                                         name_pattern, preprocess_cli_args, pseudo_job_config,
                                         pseudo_label_cli_args, round0_variant, synth_cli_args, train_devices,
                                         train_job_config, variant_overlay, video_cli_args)
from leod_core.workflow.targets import (Experiment, ablation_by_default, ablation_datasets, ablation_experiments,
                                        ablation_rounds, ablation_tables, default_datasets, default_tables,
                                        experiment_rounds, experiments, finished_message, gate_failure_message,
                                        read_gate_file, round_targets)

__all__ = [
    "ablation_by_default", "ablation_datasets", "ablation_experiments", "ablation_rounds", "ablation_table_paths",
    "ablation_tables", "CAMERA_TRAIN_DEFAULTS", "DOWNLOAD_SOURCE", "check_config", "check_offset_wildcard",
    "check_ratio_wildcard",
    "data_hint", "data_source", "dataset_config", "datasets_with_source", "download_archive", "deep_merge",
    "default_datasets", "default_tables", "downsampled_by_2", "evaluate_cli_args", "Experiment", "experiment_dir",
    "ExperimentName", "offset_suffix", "split_offset",
    "experiment_rounds", "experiment_settings", "experiments", "finished_message", "format_ratio",
    "gate_failure_message", "gate_path", "job_config", "json_arg", "label_quality_cli_args", "metrics_path",
    "name_pattern", "preprocess_cli_args", "pseudo_job_config", "pseudo_label_cli_args", "read_gate_file",
    "RESERVED_NAMES", "round_dir", "round0_variant", "round_targets", "SELF_TRAINING_ROUND", "synth_cli_args",
    "table_paths", "train_devices", "train_job_config", "variant_name", "variant_overlay", "variant_suffix",
    "video_cli_args", "WILDCARD_PATTERNS",
]
