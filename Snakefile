"""LEOD self-training loop. Thin: configuration, validation, rule files, default target."""

import os

from snakemake.utils import min_version, validate

from leod_core.data.cameras import CAMERA_FILES_ENV
from leod_core.workflow.settings import camera_files_env, check_renamed_settings

min_version("9.0")


configfile: "workflow_config/config.yaml"


check_renamed_settings(config)
validate(config, "workflow_config/schema.yaml")
# every job's leod knows the config's cameras
os.environ[CAMERA_FILES_ENV] = camera_files_env(config)


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/pseudo.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        *EXPERIMENT_TARGETS,
        TABLES,
        DEFAULT_ABLATION_TABLES,


rule ablation:
    input:
        ABLATION_TABLES,


onsuccess:
    print(finished_message(TABLES + ABLATION_TABLES))
