"""Pseudo labels for round r >= 1, from round r-1's model: shard list (checkpoint; the one place that assigns
the sequences to shards) -> one pseudo-label job per shard, reading its sequences from the list (1 GPU each; 4-view
TTA + tracker) -> merge, checked against the list -> label quality -> gate (checkpoint; with rule no_drop it also
reads round r-1's label quality).

A shard job's declared output is its shard.json, written last: the shard directory of a killed job survives
and the rerun resumes it sequence by sequence; its .inputs.json makes a rerun with changed inputs (a new
model, other thresholds) start the shard afresh instead."""


checkpoint shard_list:
    input:
        sequence_index=SEQUENCE_INDEX,
        split=split_file,
    output:
        SHARD_LIST,
    log:
        log_path(f"{ROUND_JOB}/pseudo/shard_list"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/pseudo/shard_list")
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    localrule: True
    conda:
        LEOD_ENV
    params:
        args=shard_list_args,
    shell:
        "python -m leod_core.workflow shard-list --data results/data/{wildcards.dataset} --split {input.split}"
        " --sequence-index {input.sequence_index} {params.args} --out {output} > {log} 2>&1"


rule pseudo_label:
    input:
        model=previous_model,
        data=DATA_MARKER,
        split=split_file,
        shard_list=SHARD_LIST,
        config=f"{ROUND}/pseudo_config.yaml",
    output:
        manifest=f"{SHARD_DIR}/shard.json",
    log:
        log_path(f"{ROUND_JOB}/{SHARDS_DIR}/{{shard}}"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/{SHARDS_DIR}/{{shard}}")
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    conda:
        LEOD_ENV
    threads: config["threads"]["pseudo_label"]
    resources:
        gpu=1,
    params:
        shard_dir=shard_dir_of,
        args=pseudo_args,
    shell:
        "(python -m leod_core.workflow prepare-resume --dir {params.shard_dir} --extra 'shard {wildcards.shard}'"
        " --input model={input.model} split={input.split} shard_list={input.shard_list} config={input.config}"
        " && OMP_NUM_THREADS={threads} leod --no-progress pseudo-label --checkpoint {input.model}"
        " --data results/data/{wildcards.dataset} --split {input.split} --out {params.shard_dir}"
        " --shard-list {input.shard_list} --shard {wildcards.shard} --config {input.config} {params.args}"
        ") > {log} 2>&1"


rule merge_pseudo:
    input:
        shards=shard_manifests,
        shard_list=SHARD_LIST,
        data=DATA_MARKER,
    output:
        directory(f"{ROUND}/pseudo/dataset"),
    log:
        log_path(f"{ROUND_JOB}/pseudo/merge"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/pseudo/merge")
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    conda:
        LEOD_ENV
    params:
        shard_dirs=shard_dirs,
    shell:
        "leod --no-progress merge-shards --shard-list {input.shard_list} --shards {params.shard_dirs}"
        " --data results/data/{wildcards.dataset} --out {output} > {log} 2>&1"


rule label_quality:
    input:
        pseudo=f"{ROUND}/pseudo/dataset",
        data=DATA_MARKER,
        split=split_file,
    output:
        f"{ROUND}/{QUALITY_FILE}",
    log:
        log_path(f"{ROUND_JOB}/pseudo/quality"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/pseudo/quality")
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    conda:
        LEOD_ENV
    params:
        args=quality_args,
    shell:
        "leod --no-progress label-quality --pseudo-data {input.pseudo} --data results/data/{wildcards.dataset}"
        " --split {input.split} --out {output} {params.args} > {log} 2>&1"


checkpoint gate:
    input:
        quality=f"{ROUND}/{QUALITY_FILE}",
        previous=previous_quality,
    output:
        report(f"{ROUND}/{GATE_FILE}", caption="report/gate.rst", category="Gates"),
    log:
        log_path(f"{ROUND_JOB}/gate"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/gate")
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    localrule: True
    conda:
        LEOD_ENV
    params:
        args=gate_args,
    shell:
        "python -m leod_core.workflow gate --quality {input.quality} --round {wildcards.round} {params.args}"
        " --out {output} > {log} 2>&1"
