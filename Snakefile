"""LEOD self-training loop. Thin: configuration, validation, rule files, default target."""
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "workflow_config/config.yaml"


validate(config, "workflow_config/schema.yaml")


report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/pseudo.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        *EXPERIMENT_TARGETS,
        TABLES,
        DEFAULT_ABLATION_TABLES,
    default_target: True


rule ablation:
    input:
        ABLATION_TABLES,


onsuccess:
    print(finished_message(TABLES + ABLATION_TABLES))
