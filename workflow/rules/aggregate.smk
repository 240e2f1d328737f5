# Tables and plots. They read only metrics and summaries, so changing a plot (or its rule)
# never retrains anything; the study file carries the resolved config to the commands.


localrules:
    study,
    aggregate,
    partial,
    plot_error_vs_n,
    plot_error_vs_size,
    plot_ood,
    plot_mixed,
    plot_gallery,
    track,


rule study:
    output:
        "results/study.json",
    log:
        "results/logs/study.log",
    conda:
        ENV
    params:
        config=json.dumps(config),
    shell:
        "pdetransfer study --config-json {params.config:q} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        study="results/study.json",
        runs=study_run_outputs,  # with sweep.refine, the runs refinement added too
        checks=data_checks(),
    output:
        runs=report(
            "results/tables/runs.csv",
            caption="../report/runs.rst",
            category="Tables",
        ),
        summary=report(
            "results/tables/summary.csv",
            caption="../report/summary.rst",
            category="Tables",
        ),
        efficiency=report(
            "results/tables/data_efficiency.csv",
            caption="../report/data_efficiency.rst",
            category="Tables",
        ),
        fits=report(
            "results/tables/scaling_fits.csv",
            caption="../report/scaling_fits.rst",
            category="Tables",
        ),
        modes=report(
            "results/tables/mode_comparison.csv",
            caption="../report/modes.rst",
            category="Tables",
        ),
        thresholds=report(
            "results/tables/mode_threshold.csv",
            caption="../report/modes.rst",
            category="Tables",
        ),
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        ENV
    shell:
        "pdetransfer aggregate --study {input.study} --results results"
        " --runs-csv {output.runs} --summary-csv {output.summary}"
        " --efficiency-csv {output.efficiency} --fits-csv {output.fits}"
        " --modes-csv {output.modes} --thresholds-csv {output.thresholds} > {log} 2>&1"


# `snakemake partial`: the tables of the runs finished so far, under results/partial/tables,
# with missing.csv listing per cell what is not. The rule has neither input nor output, so
# Snakemake always runs it when asked and never schedules anything for it (no run, no study
# file: it records its own, so results/study.json and the full tables stay untouched).
rule partial:
    log:
        "results/logs/partial.log",
    conda:
        ENV
    params:
        config=json.dumps(config),
        out="results/partial",
    shell:
        "(pdetransfer study --config-json {params.config:q} --out {params.out}/study.json"
        " && pdetransfer aggregate --partial --study {params.out}/study.json --results results"
        " --runs-csv {params.out}/tables/runs.csv --summary-csv {params.out}/tables/summary.csv"
        " --efficiency-csv {params.out}/tables/data_efficiency.csv"
        " --fits-csv {params.out}/tables/scaling_fits.csv"
        " --missing-csv {params.out}/tables/missing.csv) > {log} 2>&1"


rule plot_error_vs_n:
    input:
        study="results/study.json",
        summary="results/tables/summary.csv",
        fits="results/tables/scaling_fits.csv",
    output:
        png=report(
            "results/plots/error_vs_n/{experiment}/{downstream}.png",
            caption="../report/error_vs_n.rst",
            category="Error vs N",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "downstream": "{downstream}"},
        ),
        svg="results/plots/error_vs_n/{experiment}/{downstream}.svg",
    log:
        "results/logs/plots/error_vs_n/{experiment}/{downstream}.log",
    conda:
        ENV
    shell:
        "pdetransfer plot error-vs-n --study {input.study} --summary {input.summary}"
        " --fits {input.fits}"
        " --experiment {wildcards.experiment} --downstream {wildcards.downstream}"
        " --out {output.png} {output.svg} > {log} 2>&1"


rule plot_error_vs_size:
    input:
        study="results/study.json",
        summary="results/tables/summary.csv",
    output:
        png=report(
            "results/plots/error_vs_size/{experiment}.png",
            caption="../report/error_vs_size.rst",
            category="Error vs model size",
            labels={"experiment": "{experiment}"},
        ),
        svg="results/plots/error_vs_size/{experiment}.svg",
    log:
        "results/logs/plots/error_vs_size/{experiment}.log",
    conda:
        ENV
    shell:
        "pdetransfer plot error-vs-size --study {input.study} --summary {input.summary}"
        " --experiment {wildcards.experiment} --out {output.png} {output.svg} > {log} 2>&1"


rule plot_ood:
    input:
        study="results/study.json",
        summary="results/tables/summary.csv",
    output:
        png=report(
            "results/plots/ood/{experiment}.png",
            caption="../report/ood.rst",
            category="OOD series",
            labels={"experiment": "{experiment}"},
        ),
        svg="results/plots/ood/{experiment}.svg",
    log:
        "results/logs/plots/ood/{experiment}.log",
    conda:
        ENV
    shell:
        "pdetransfer plot ood --study {input.study} --summary {input.summary}"
        " --experiment {wildcards.experiment} --out {output.png} {output.svg} > {log} 2>&1"


rule plot_mixed:
    input:
        study="results/study.json",
        summary="results/tables/summary.csv",
    output:
        png=report(
            "results/plots/mixed/{experiment}.png",
            caption="../report/mixed.rst",
            category="Mixed physics",
            labels={"experiment": "{experiment}"},
        ),
        svg="results/plots/mixed/{experiment}.svg",
    log:
        "results/logs/plots/mixed/{experiment}.log",
    conda:
        ENV
    shell:
        "pdetransfer plot mixed --study {input.study} --summary {input.summary}"
        " --experiment {wildcards.experiment} --out {output.png} {output.svg} > {log} 2>&1"


rule plot_gallery:
    input:
        study="results/study.json",
        runs=gallery_inputs,
    output:
        png=report(
            "results/plots/gallery/{downstream}.png",
            caption="../report/gallery.rst",
            category="Gallery",
            labels={"downstream": "{downstream}"},
        ),
        svg="results/plots/gallery/{downstream}.svg",
    log:
        "results/logs/plots/gallery/{downstream}.log",
    conda:
        ENV
    shell:
        "pdetransfer plot gallery --study {input.study} --results results"
        " --downstream {wildcards.downstream}"
        " --out {output.png} {output.svg} > {log} 2>&1"


# `snakemake track`: every run of the study into an MLflow store (tracking.uri, or the SQLite
# file results/tracking/mlflow.db), after the runs and from one process on the machine that
# runs Snakemake: many jobs writing one SQLite file at once is a known failure. It needs the
# [track] extra (or, with --sdm conda, its own environment, envs/track.yaml). The store is not
# an output (Snakemake deletes outputs before a rerun; a rerun must update the store instead).
rule track:
    input:
        study="results/study.json",
        runs=run_outputs(),
        pretrain=pretrain_outputs(),
    output:
        "results/tracking/export.json",
    log:
        "results/logs/track.log",
    conda:
        TRACK_ENV
    shell:
        "pdetransfer track --study {input.study} --results results --out {output} > {log} 2>&1"
