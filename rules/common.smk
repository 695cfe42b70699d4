"""Wildcard constraints and thin adapters from config to CLI arguments (logic in leod_core.workflow)."""
from leod_core.workflow import WILDCARD_PATTERNS, default_targets, preprocess_cli_args, synth_cli_args


wildcard_constraints:
    **WILDCARD_PATTERNS,


def synth_args(wildcards):
    return synth_cli_args(config["datasets"][wildcards.dataset]["synth"])


def preprocess_args(wildcards):
    return preprocess_cli_args(config["datasets"][wildcards.dataset]["preprocess"])


def sequence_length(wildcards):
    return config["datasets"][wildcards.dataset]["sequence_length"]
