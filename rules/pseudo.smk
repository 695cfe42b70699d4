"""Pseudo labels for round r >= 1, from round r-1's model: shard list (checkpoint) -> one pseudo-label job per
shard (1 GPU each; 4-view TTA + tracker) -> merge -> label quality -> gate (checkpoint; with rule no_drop it also
reads round r-1's label quality).

A shard job's declared output is its shard.json, written last: the shard directory of a killed job survives
and the rerun resumes it sequence by sequence; its .inputs.json makes a rerun with changed inputs (a new
model, other thresholds) start the shard afresh instead."""


checkpoint shard_list:
    input:
        data=DATA_MARKER,
        split=split_file,
    output:
        f"{ROUND}/pseudo/shard_list.json",
    params:
        args=shard_list_args,
    log:
        f"{LOG_ROUND}/pseudo/shard_list.log",
    benchmark:
        f"{BENCH_ROUND}/pseudo/shard_list.tsv"
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    localrule: True
    conda:
        LEOD_ENV
    shell:
        "python -m leod_core.workflow shard-list --data results/data/{wildcards.dataset} --split {input.split}"
        " {params.args} --out {output} > {log} 2>&1"


rule pseudo_label:
    input:
        model=previous_model,
        data=DATA_MARKER,
        split=split_file,
        shard_list=f"{ROUND}/pseudo/shard_list.json",
        config=f"{ROUND}/pseudo_config.yaml",
    output:
        manifest=f"{ROUND}/pseudo/shards/{{shard}}/shard.json",
    params:
        shard_dir=shard_dir_of,
        num_shards=listed_shard_count,
        args=pseudo_args,
    log:
        f"{LOG_ROUND}/pseudo/shards/{{shard}}.log",
    benchmark:
        f"{BENCH_ROUND}/pseudo/shards/{{shard}}.tsv"
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    threads: config["threads"]["pseudo_label"]
    resources:
        gpu=1,
    conda:
        LEOD_ENV
    shell:
        "(python -m leod_core.workflow prepare-resume --dir {params.shard_dir} --extra 'shard {wildcards.shard}'"
        " --input model={input.model} split={input.split} shard_list={input.shard_list} config={input.config}"
        " && OMP_NUM_THREADS={threads} leod --no-progress pseudo-label --checkpoint {input.model}"
        " --data results/data/{wildcards.dataset} --split {input.split} --out {params.shard_dir}"
        " --shard {wildcards.shard} --num-shards {params.num_shards} --config {input.config} {params.args}"
        ") > {log} 2>&1"


rule merge_pseudo:
    input:
        shards=shard_manifests,
        data=DATA_MARKER,
    output:
        directory(f"{ROUND}/pseudo/dataset"),
    params:
        shard_dirs=shard_dirs,
        num_shards=shard_count,
    log:
        f"{LOG_ROUND}/pseudo/merge.log",
    benchmark:
        f"{BENCH_ROUND}/pseudo/merge.tsv"
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    conda:
        LEOD_ENV
    shell:
        "leod --no-progress merge-shards --shards {params.shard_dirs} --num-shards {params.num_shards}"
        " --data results/data/{wildcards.dataset} --out {output} > {log} 2>&1"


rule label_quality:
    input:
        pseudo=f"{ROUND}/pseudo/dataset",
        data=DATA_MARKER,
        split=split_file,
    output:
        f"{ROUND}/pseudo/quality.json",
    params:
        args=quality_args,
    log:
        f"{LOG_ROUND}/pseudo/quality.log",
    benchmark:
        f"{BENCH_ROUND}/pseudo/quality.tsv"
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    conda:
        LEOD_ENV
    shell:
        "leod --no-progress label-quality --pseudo-data {input.pseudo} --data results/data/{wildcards.dataset}"
        " --split {input.split} --out {output} {params.args} > {log} 2>&1"


checkpoint gate:
    input:
        quality=f"{ROUND}/pseudo/quality.json",
        previous=previous_quality,
    output:
        report(f"{ROUND}/gate.json", caption="report/gate.rst", category="Gates"),
    params:
        args=gate_args,
    log:
        f"{LOG_ROUND}/gate.log",
    benchmark:
        f"{BENCH_ROUND}/gate.tsv"
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    localrule: True
    conda:
        LEOD_ENV
    shell:
        "python -m leod_core.workflow gate --quality {input.quality} --round {wildcards.round} {params.args}"
        " --out {output} > {log} 2>&1"
