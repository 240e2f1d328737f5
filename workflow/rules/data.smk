# Data: one HDF5 file per (dataset, split), generated or imported from files, and
# normalisation statistics of training sets.


rule generate:
    output:
        dataset_file("{dataset}", "{split}"),
    log:
        "results/logs/data/{dataset}/{split}.log",
    benchmark:
        "results/benchmarks/data/{dataset}/{split}.tsv"
    wildcard_constraints:
        dataset=_names(GENERATED),
    conda:
        ENV
    threads: res("data", "threads")
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=runtime("data"),
    params:
        system=lambda wc: config["datasets"][wc.dataset]["system"],
        lo=lambda wc: config["datasets"][wc.dataset]["range"][0],
        hi=lambda wc: config["datasets"][wc.dataset]["range"][1],
        grid=lambda wc: config["datasets"][wc.dataset]["grid"],
        n_samples=lambda wc: config["datasets"][wc.dataset][wc.split],
        seed=config["data_seed"],
    shell:
        "pdetransfer generate --system {params.system} --range {params.lo} {params.hi}"
        " --split {wildcards.split} --n-samples {params.n_samples} --grid {params.grid}"
        " --seed {params.seed} --threads {threads} --out {output} > {log} 2>&1"


# A dataset from files: all three splits at once (one permutation splits a single file),
# checked and converted as `pdetransfer import` documents; the source files are inputs, so a
# changed file is imported again.
rule import_dataset:
    input:
        source_files,
    output:
        expand("results/data/{{dataset}}/{split}.h5", split=("train", "val", "test")),
    log:
        "results/logs/data/{dataset}/import.log",
    benchmark:
        "results/benchmarks/data/{dataset}/import.tsv"
    wildcard_constraints:
        dataset=_names(IMPORTED),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=runtime("data"),
    params:
        entry=lambda wc: json.dumps(config["datasets"][wc.dataset]),
        seed=config["data_seed"],
        out=lambda wc: f"results/data/{wc.dataset}",
    shell:
        "pdetransfer import --entry-json {params.entry:q} --dataset {wildcards.dataset}"
        " --seed {params.seed} --out-dir {params.out} --force --quiet > {log} 2>&1"


# A source file fetched by URL, kept only if its SHA-256 is the published one.
rule download:
    output:
        "{source}",
    log:
        "results/logs/download/{source}.log",
    wildcard_constraints:
        source=_names(DOWNLOADS),
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=runtime("data"),
    params:
        url=lambda wc: DOWNLOADS[wc.source]["url"],
        sha256=lambda wc: DOWNLOADS[wc.source]["checksum"],
    shell:
        "pdetransfer download --url {params.url:q} --sha256 {params.sha256}"
        " --out {output:q} > {log} 2>&1"


# The solver's own verification (layout, PDE residual, parameter range) of every file; the
# tables depend on these reports, so a study's results only exist for data that passed. A
# failed check shows its report and error (which say how to regenerate the file) on the
# console, since Snakemake deletes the report of a failed job.
rule check:
    input:
        dataset_file("{dataset}", "{split}"),
    output:
        results(layout.DATASET_CHECK),
    log:
        "results/logs/data/{dataset}/{split}.check.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=runtime("data"),
    shell:
        "pdetransfer check {input} > {output} 2> {log} || {{ cat {output} {log} >&2; exit 1; }}"


rule dataset_stats:
    input:
        dataset_file("{dataset}", "train"),
    output:
        results(layout.DATASET_STATS),
    log:
        "results/logs/data/{dataset}/stats.log",
    benchmark:
        "results/benchmarks/data/{dataset}/stats.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=runtime("data"),
    shell:
        "pdetransfer stats {input} --out {output} > {log} 2>&1"


rule mixed_stats:
    input:
        lambda wc: [dataset_file(ds, "train") for ds in STUDY.pretrain[wc.mixed]],
    output:
        results(layout.MIXED_STATS.format(pretrain="{mixed}")),
    log:
        "results/logs/pretrain/{mixed}/stats.log",
    benchmark:
        "results/benchmarks/pretrain/{mixed}/stats.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=res("data", "mem_mb"),
        runtime=runtime("data"),
    shell:
        "pdetransfer stats {input} --out {output} > {log} 2>&1"


# A readable card per dataset (what its files, stats and check reports say), as Markdown and
# as HTML for the report. It reads only finished, checked files, so it costs seconds.
rule card:
    input:
        unpack(card_inputs),
    output:
        md="results/data/{dataset}/card.md",
        html=report(
            "results/data/{dataset}/card.html",
            caption="../report/card.rst",
            category="Datasets",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "results/logs/data/{dataset}/card.log",
    localrule: True
    conda:
        ENV
    params:
        stats=lambda wc, input: f"--stats {input.stats}" if input.stats else "",
    shell:
        "pdetransfer card --name {wildcards.dataset} --data {input.data}"
        " --checks {input.checks} {params.stats} --out {output.md} --html {output.html}"
        " > {log} 2>&1"
