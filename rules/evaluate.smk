"""Evaluation: every trained round's model on the test split; tables and plots over all evaluated rounds; the
ablation tables (variants vs. their base: mAP, pseudo-label quality and time; `snakemake ablation`);
prediction videos on request (a target such as results/videos/synth/wsod_0.1/round1/<test sequence>.mp4)."""


rule evaluate:
    input:
        model=round_model,
        data=DATA_MARKER,
    output:
        f"{ROUND}/eval/test_metrics.json",
    params:
        args=evaluate_args,
    log:
        f"{LOG_ROUND}/eval.log",
    benchmark:
        f"{BENCH_ROUND}/eval.tsv"
    threads: config["threads"]["evaluate"]
    resources:
        gpu=1,
    conda:
        LEOD_ENV
    shell:
        "OMP_NUM_THREADS={threads} leod --no-progress evaluate --checkpoint {input.model}"
        " --data results/data/{wildcards.dataset} --split test --out {output} {params.args} > {log} 2>&1"


rule tables:
    input:
        *EXPERIMENT_TARGETS,
    output:
        *[report(path, caption="report/tables.rst", category="Tables") for path in TABLES],
        plots=report(directory("results/plots"), patterns=["{name}.png"], caption="report/plots.rst",
                     category="Plots"),
    params:
        out_dir=tables_dir,
    log:
        "logs/tables/tables.log",
    benchmark:
        "benchmarks/tables/tables.tsv"
    localrule: True
    conda:
        LEOD_ENV
    shell:
        "leod --no-progress tables --write paper --results results --out {params.out_dir} --plots {output.plots}"
        " > {log} 2>&1"


rule ablation_tables:
    input:
        *ABLATION_TARGETS,
    output:
        *[report(path, caption="report/ablation.rst", category="Tables") for path in ABLATION_TABLES],
    params:
        out_dir=tables_dir,
        datasets=" ".join(ABLATION_DATASETS),
    log:
        "logs/tables/ablation.log",
    benchmark:
        "benchmarks/tables/ablation.tsv"
    localrule: True
    conda:
        LEOD_ENV
    shell:
        "leod --no-progress tables --write ablation --datasets {params.datasets} --results results"
        " --benchmarks benchmarks --out {params.out_dir} > {log} 2>&1"


rule video:
    input:
        model=round_model,
        data=DATA_MARKER,
    output:
        f"results/videos/{{dataset}}/{EXPERIMENT_NAME}/round{{round}}/{{sequence}}.mp4",
    params:
        args=video_args,
    log:
        f"logs/videos/{{dataset}}/{EXPERIMENT_NAME}/round{{round}}/{{sequence}}.log",
    benchmark:
        f"benchmarks/videos/{{dataset}}/{EXPERIMENT_NAME}/round{{round}}/{{sequence}}.tsv"
    wildcard_constraints:
        sequence=r"[^/]+",
    threads: config["threads"]["evaluate"]
    resources:
        gpu=1,
    conda:
        LEOD_ENV
    shell:
        "OMP_NUM_THREADS={threads} leod --no-progress visualize --checkpoint {input.model}"
        " --data results/data/{wildcards.dataset} --split test --sequence {wildcards.sequence} --out {output}"
        " {params.args} > {log} 2>&1"
