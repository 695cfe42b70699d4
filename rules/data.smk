"""Data stage: synthetic camera, RVT's downloaded archive, user-provided raw / preprocessed data, or a folder of
the user's recordings -> RVT preprocessed layout -> split.

A dataset block names one source (`synth`, `raw`, `recordings` or `preprocessed`), or none and a
`download.preprocessed` archive; each source has its own rule, selected by the dataset wildcard's constraint.
Downloads resume (HTTP Range) and are checked against the configured crc32; user-provided preprocessed data is
linked as it is, raw data goes through `leod preprocess`, and a folder of recordings is first arranged (linked)
into the raw layout."""


rule synth_raw:
    output:
        "results/raw/{dataset}/summary.json",
    log:
        log_path("raw/{dataset}/synth"),
    benchmark:
        benchmark_path("raw/{dataset}/synth")
    wildcard_constraints:
        dataset=SYNTH_DATASETS,
    conda:
        LEOD_ENV
    threads: config["threads"]["data"]
    params:
        args=synth_args,
    shell:
        "leod --no-progress synth --out results/raw/{wildcards.dataset} --workers {threads} {params.args} > {log} 2>&1"


rule link_raw:
    output:
        "results/raw/{dataset}/summary.json",
    log:
        log_path("raw/{dataset}/link"),
    benchmark:
        benchmark_path("raw/{dataset}/link")
    wildcard_constraints:
        dataset=RAW_DATASETS,
    localrule: True
    conda:
        LEOD_ENV
    params:
        source=user_data_source,
        hint=user_data_hint,
    shell:
        "python -m leod_core.workflow link-data --kind raw --source {params.source:q}"
        " --out results/raw/{wildcards.dataset} --marker summary.json --hint={params.hint:q} > {log} 2>&1"


rule arrange_recordings:
    """A folder of recordings (flat: split by the holdout; or with train/ val/ test/) -> symbolic links in RVT's
    raw layout under results/raw/{dataset}/ and summary.json (leod_core/workflow/recordings.py), then preprocess.
    """
    output:
        "results/raw/{dataset}/summary.json",
    log:
        log_path("raw/{dataset}/arrange"),
    benchmark:
        benchmark_path("raw/{dataset}/arrange")
    wildcard_constraints:
        dataset=RECORDINGS_DATASETS,
    localrule: True
    conda:
        LEOD_ENV
    params:
        args=recordings_args,
    shell:
        "python -m leod_core.workflow arrange-recordings --out results/raw/{wildcards.dataset} {params.args}"
        " > {log} 2>&1"


rule download_preprocessed:
    """RVT's preprocessed archive -> results/downloads/{dataset}/ (kept across reruns: an interrupted
    download resumes), extracted once, then linked as results/data/{dataset}. A local rule: cluster login
    nodes usually have the internet access that compute nodes lack."""
    output:
        DATA_MARKER,
    log:
        log_path("data/{dataset}/download"),
    benchmark:
        benchmark_path("data/{dataset}/download")
    wildcard_constraints:
        dataset=DOWNLOADED_DATASETS,
    localrule: True
    conda:
        LEOD_ENV
    params:
        url=archive_url,
        crc32=archive_crc32,
        archive=archive_path,
        extracted="results/downloads/{dataset}/preprocessed",
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
    log:
        log_path("data/{dataset}/preprocess"),
    benchmark:
        benchmark_path("data/{dataset}/preprocess")
    wildcard_constraints:
        dataset=PREPROCESSED_HERE,
    conda:
        LEOD_ENV
    threads: config["threads"]["data"]
    params:
        args=preprocess_args,
    shell:
        "leod --no-progress preprocess --raw results/raw/{wildcards.dataset} --out results/data/{wildcards.dataset}"
        " --workers {threads} {params.args} > {log} 2>&1"


rule link_preprocessed:
    output:
        DATA_MARKER,
    log:
        log_path("data/{dataset}/link"),
    benchmark:
        benchmark_path("data/{dataset}/link")
    wildcard_constraints:
        dataset=PREPROCESSED_DATASETS,
    localrule: True
    conda:
        LEOD_ENV
    params:
        source=user_data_source,
        hint=user_data_hint,
    shell:
        "python -m leod_core.workflow link-data --kind preprocessed --source {params.source:q}"
        " --out results/data/{wildcards.dataset} --marker preprocess_summary.json --hint={params.hint:q} > {log} 2>&1"


rule sequence_index:
    input:
        DATA_MARKER,
    output:
        SEQUENCE_INDEX,
    log:
        log_path("data/{dataset}/sequence_index"),
    benchmark:
        benchmark_path("data/{dataset}/sequence_index")
    conda:
        LEOD_ENV
    shell:
        "python -m leod_core.workflow sequence-index --data results/data/{wildcards.dataset} --out {output}"
        " > {log} 2>&1"


rule split:
    input:
        split_sequence_index,
    output:
        f"{EXP}/split.json",
    log:
        log_path(f"{EXP_JOB}/split"),
    benchmark:
        benchmark_path(f"{EXP_JOB}/split")
    conda:
        LEOD_ENV
    params:
        sequence_length=split_sequence_length,
        offset=split_offset_of,
    shell:
        "leod split --sequence-index {input} --setting {wildcards.setting}"
        " --ratio {wildcards.ratio} --offset {params.offset} --sequence-length {params.sequence_length}"
        " --out {output} > {log} 2>&1"
