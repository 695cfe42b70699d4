"""Data stage: synthetic camera (or downloaded raw data) -> RVT preprocessed layout -> label split."""


rule synth_raw:
    output:
        "results/raw/{dataset}/summary.json",
    params:
        args=synth_args,
    log:
        "logs/raw/{dataset}/synth.log",
    benchmark:
        "benchmarks/raw/{dataset}/synth.tsv"
    threads: workflow.cores
    shell:
        "leod --no-progress synth --out results/raw/{wildcards.dataset} --workers {threads} {params.args} 2> {log}"


rule preprocess:
    input:
        "results/raw/{dataset}/summary.json",
    output:
        "results/data/{dataset}/preprocess_summary.json",
    params:
        args=preprocess_args,
    log:
        "logs/data/{dataset}/preprocess.log",
    benchmark:
        "benchmarks/data/{dataset}/preprocess.tsv"
    threads: workflow.cores
    shell:
        "leod --no-progress preprocess --raw results/raw/{wildcards.dataset} --out results/data/{wildcards.dataset}"
        " --workers {threads} {params.args} 2> {log}"


rule split:
    input:
        "results/data/{dataset}/preprocess_summary.json",
    output:
        "results/{dataset}/{setting}_{ratio}/split.json",
    params:
        sequence_length=sequence_length,
    log:
        "logs/{dataset}/{setting}_{ratio}/split.log",
    benchmark:
        "benchmarks/{dataset}/{setting}_{ratio}/split.tsv"
    shell:
        "leod split --data results/data/{wildcards.dataset} --setting {wildcards.setting}"
        " --ratio {wildcards.ratio} --sequence-length {params.sequence_length} --out {output} 2> {log}"
