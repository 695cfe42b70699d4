"""Evaluation: every trained round's model on the test split; tables and plots over all evaluated rounds; the
ablation tables (variants vs. their base: mAP, pseudo-label quality and time; `snakemake ablation`);
prediction videos on request (a target such as results/videos/synth/wsod_0.1/round1/<test sequence>.mp4).
"""


rule evaluate:
    input:
        model=round_model,
        data=DATA_MARKER,
    output:
        f"{ROUND}/{METRICS_FILE}",
    log:
        log_path(f"{ROUND_JOB}/eval"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/eval")
    conda:
        LEOD_ENV
    threads: config["threads"]["evaluate"]
    resources:
        gpu=1,
    params:
        args=evaluate_args,
    shell:
        "OMP_NUM_THREADS={threads} leod --no-progress evaluate --checkpoint {input.model}"
        " --data results/data/{wildcards.dataset} --split test --out {output} {params.args} > {log} 2>&1"


rule tables:
    input:
        *EXPERIMENT_TARGETS,
    output:
        *[
            report(path, caption="report/tables.rst", category="Tables")
            for path in TABLES
        ],
        plots=report(
            directory(PLOTS_DIR),
            patterns=["{name}.png"],
            caption="report/plots.rst",
            category="Plots",
        ),
    log:
        log_path("tables/tables"),
    benchmark:
        benchmark_path("tables/tables")
    localrule: True
    conda:
        LEOD_ENV
    params:
        out_dir=tables_dir,
    shell:
        f"leod --no-progress tables --write paper --results {RESULTS_DIR} --out {{params.out_dir}}"
        " --plots {output.plots} > {log} 2>&1"


rule ablation_tables:
    input:
        *ABLATION_TARGETS,
    output:
        *[
            report(path, caption="report/ablation.rst", category="Tables")
            for path in ABLATION_TABLES
        ],
    log:
        log_path("tables/ablation"),
    benchmark:
        benchmark_path("tables/ablation")
    localrule: True
    conda:
        LEOD_ENV
    params:
        out_dir=tables_dir,
        datasets=" ".join(ABLATION_DATASETS),
    shell:
        f"leod --no-progress tables --write ablation --datasets {{params.datasets}} --results {RESULTS_DIR}"
        f" --benchmarks {BENCHMARKS_DIR} --out {{params.out_dir}} > {{log}} 2>&1"


rule video:
    input:
        model=round_model,
        data=DATA_MARKER,
    output:
        result_path(f"videos/{ROUND_JOB}/{{sequence}}.mp4"),
    log:
        log_path(f"videos/{ROUND_JOB}/{{sequence}}"),
    benchmark:
        benchmark_path(f"videos/{ROUND_JOB}/{{sequence}}")
    wildcard_constraints:
        sequence=r"[^/]+",
    conda:
        LEOD_ENV
    threads: config["threads"]["evaluate"]
    resources:
        gpu=1,
    params:
        args=video_args,
    shell:
        "OMP_NUM_THREADS={threads} leod --no-progress visualize --checkpoint {input.model}"
        " --data results/data/{wildcards.dataset} --split test --sequence {wildcards.sequence} --out {output}"
        " {params.args} > {log} 2>&1"
