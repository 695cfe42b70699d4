"""Data stage: synthetic camera, RVT's downloaded archive, or user-provided raw / preprocessed data -> RVT
preprocessed layout -> split.

A dataset block names one source (`synth`, `raw` or `preprocessed`), or none and a `download.preprocessed`
archive; each source has its own rule, selected by the dataset wildcard's constraint. Downloads resume
(HTTP Range) and are checked against the configured crc32; user-provided preprocessed data is linked as it
is, raw data goes through `leod preprocess`."""


rule synth_raw:
    output:
        "results/raw/{dataset}/summary.json",
    params:
        args=synth_args,
    log:
        "logs/raw/{dataset}/synth.log",
    benchmark:
        "benchmarks/raw/{dataset}/synth.tsv"
    wildcard_constraints:
        dataset=SYNTH_DATASETS,
    threads: config["threads"]["data"]
    conda:
        LEOD_ENV
    shell:
        "leod --no-progress synth --out results/raw/{wildcards.dataset} --workers {threads} {params.args} > {log} 2>&1"


rule link_raw:
    output:
        "results/raw/{dataset}/summary.json",
    params:
        source=user_data_source,
        hint=user_data_hint,
    log:
        "logs/raw/{dataset}/link.log",
    benchmark:
        "benchmarks/raw/{dataset}/link.tsv"
    wildcard_constraints:
        dataset=RAW_DATASETS,
    localrule: True
    conda:
        LEOD_ENV
    shell:
        "python -m leod_core.workflow link-data --kind raw --source {params.source:q}"
        " --out results/raw/{wildcards.dataset} --marker summary.json --hint={params.hint:q} > {log} 2>&1"


rule download_preprocessed:
    """RVT's preprocessed archive -> results/downloads/{dataset}/ (kept across reruns: an interrupted
    download resumes), extracted once, then linked as results/data/{dataset}. A local rule: cluster login
    nodes usually have the internet access that compute nodes lack."""
    output:
        DATA_MARKER,
    params:
        url=archive_url,
        crc32=archive_crc32,
        archive=archive_path,
        extracted="results/downloads/{dataset}/preprocessed",
    log:
        "logs/data/{dataset}/download.log",
    benchmark:
        "benchmarks/data/{dataset}/download.tsv"
    wildcard_constraints:
        dataset=DOWNLOADED_DATASETS,
    localrule: True
    conda:
        LEOD_ENV
    shell:
        "(leod --no-progress download --url {params.url:q} --crc32 {params.crc32} --archive {params.archive:q}"
        " --out {params.extracted:q} && python -m leod_core.workflow link-data --kind preprocessed"
        " --source {params.extracted:q} --out results/data/{wildcards.dataset} --marker preprocess_summary.json"
        ") > {log} 2>&1"


rule preprocess:
    input:
        "results/raw/{dataset}/summary.json",
    output:
        DATA_MARKER,
    params:
        args=preprocess_args,
    log:
        "logs/data/{dataset}/preprocess.log",
    benchmark:
        "benchmarks/data/{dataset}/preprocess.tsv"
    wildcard_constraints:
        dataset=PREPROCESSED_HERE,
    threads: config["threads"]["data"]
    conda:
        LEOD_ENV
    shell:
        "leod --no-progress preprocess --raw results/raw/{wildcards.dataset} --out results/data/{wildcards.dataset}"
        " --workers {threads} {params.args} > {log} 2>&1"


rule link_preprocessed:
    output:
        DATA_MARKER,
    params:
        source=user_data_source,
        hint=user_data_hint,
    log:
        "logs/data/{dataset}/link.log",
    benchmark:
        "benchmarks/data/{dataset}/link.tsv"
    wildcard_constraints:
        dataset=PREPROCESSED_DATASETS,
    localrule: True
    conda:
        LEOD_ENV
    shell:
        "python -m leod_core.workflow link-data --kind preprocessed --source {params.source:q}"
        " --out results/data/{wildcards.dataset} --marker preprocess_summary.json --hint={params.hint:q} > {log} 2>&1"


rule split:
    input:
        split_data_marker,
    output:
        f"{EXP}/split.json",
    params:
        sequence_length=split_sequence_length,
        offset=split_offset_of,
    log:
        f"{LOG_EXP}/split.log",
    benchmark:
        f"{BENCH_EXP}/split.tsv"
    conda:
        LEOD_ENV
    shell:
        "leod split --data results/data/{wildcards.dataset} --setting {wildcards.setting}"
        " --ratio {wildcards.ratio} --offset {params.offset} --sequence-length {params.sequence_length}"
        " --out {output} > {log} 2>&1"
