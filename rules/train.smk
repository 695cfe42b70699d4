"""Training: round 0 on the label split (hard anchor assignment), round r >= 1 on round r's pseudo dataset
(LEOD's soft assignment), the latter only if round r's gate passed.

`train_state/` (last.ckpt every trainer.checkpoint_every_n_steps) is deliberately not a declared output:
Snakemake never deletes it, so a killed training job resumes from it when rerun."""


rule job_config:
    output:
        f"{ROUND}/{{kind}}_config.yaml",
    log:
        log_path(f"{ROUND_JOB}/{{kind}}_config"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/{{kind}}_config")
    wildcard_constraints:
        kind="train|pseudo",
    localrule: True
    conda:
        LEOD_ENV
    params:
        config=job_config_json,
    shell:
        "python -m leod_core.workflow write-config --json {params.config} --out {output} > {log} 2>&1"


rule train_round0:
    input:
        data=DATA_MARKER,
        split=own_split_file,
        config=f"{ROUND}/train_config.yaml",
    output:
        model=f"{ROUND}/model.ckpt",
    log:
        log_path(f"{ROUND_JOB}/train"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/train")
    wildcard_constraints:
        round="0",
        dataset=TRAINED_ROUND0_DATASET,
    conda:
        LEOD_ENV
    threads: config["threads"]["train"]
    resources:
        gpu=train_gpus,
    params:
        out_dir=output_dir,
        state_dir=train_state_dir,
    shell:
        "(python -m leod_core.workflow prepare-resume --dir {params.state_dir}"
        " --input data={input.data} split={input.split} config={input.config}"
        " && OMP_NUM_THREADS={threads} leod --no-progress train --data results/data/{wildcards.dataset}"
        " --split {input.split} --config {input.config} --out {params.out_dir}) > {log} 2>&1"


rule import_round0:
    """Round 0 of an experiment with `round0: {weights: ...}`: RVT's / LEOD's released checkpoint imported into the
    experiment's model (its size and class count must match; the checkpoint's pickled objects never run).
    """
    input:
        weights=released_weights_file,
        data=DATA_MARKER,
        config=f"{ROUND}/train_config.yaml",
    output:
        model=f"{ROUND}/model.ckpt",
    log:
        log_path(f"{ROUND_JOB}/import"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/import")
    wildcard_constraints:
        round="0",
        dataset=IMPORTED_ROUND0_DATASET,
    conda:
        LEOD_ENV
    params:
        checksum=released_weights_checksum,
    shell:
        "leod --no-progress import-checkpoint --checkpoint {input.weights:q} {params.checksum}"
        " --config {input.config} --data results/data/{wildcards.dataset} --out {output.model} > {log} 2>&1"


rule download_round0_weights:
    """Released weights given by URL -> results/downloads/weights/ (resumable, checksum-checked, kept across reruns).
    A local rule, like the dataset downloads: login nodes have the internet access compute nodes lack.
    """
    output:
        "results/downloads/weights/{file}",  # {file}: the URL's host and path
    log:
        log_path("downloads/weights/{file}"),
    benchmark:
        benchmark_path("downloads/weights/{file}")
    wildcard_constraints:
        file=r".+",
    localrule: True
    conda:
        LEOD_ENV
    params:
        url=weights_url,
        checksum=weights_checksum,
    shell:
        "leod --no-progress download --url {params.url:q} {params.checksum} --archive {output:q} > {log} 2>&1"


rule train_self:
    input:
        pseudo=f"{ROUND}/pseudo/dataset",
        config=f"{ROUND}/train_config.yaml",
        gate=passed_gate,
        init=init_weights,
    output:
        model=f"{ROUND}/model.ckpt",
    log:
        log_path(f"{ROUND_JOB}/train"),
    benchmark:
        benchmark_path(f"{ROUND_JOB}/train")
    wildcard_constraints:
        round=SELF_TRAINING_ROUND,
    conda:
        LEOD_ENV
    threads: config["threads"]["train"]
    resources:
        gpu=train_gpus,
    params:
        out_dir=output_dir,
        state_dir=train_state_dir,
        init=init_weights_args,
        init_input=init_weights_resume_input,
    shell:
        "(python -m leod_core.workflow prepare-resume --dir {params.state_dir}"
        " --input pseudo={input.pseudo}/pseudo_summary.json config={input.config} {params.init_input}"
        " && OMP_NUM_THREADS={threads} leod --no-progress train --pseudo-data {input.pseudo}"
        " --config {input.config} --out {params.out_dir} {params.init}) > {log} 2>&1"
