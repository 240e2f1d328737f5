# Tables and plots, the study's own outputs: below results/, or results/studies/<study>/ for a
# named study (pdetransfer.layout.study_root). They read only metrics and summaries, so
# changing a plot (or its rule) never retrains anything; the study file carries the resolved
# config to the commands.


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
        STUDY_FILE,
    log:
        study_log("study.log"),
    conda:
        ENV
    params:
        config=json.dumps(config),
    shell:
        "pdetransfer study --config-json {params.config:q} --out {output} > {log} 2>&1"


rule aggregate:
    input:
        study=STUDY_FILE,
        runs=study_run_outputs,  # with sweep.refine, the runs refinement added too
        checks=data_checks(),
        tests=test_files(),
    output:
        runs=report(
            table("runs.csv"),
            caption="../report/runs.rst",
            category="Tables",
        ),
        summary=report(
            table("summary.csv"),
            caption="../report/summary.rst",
            category="Tables",
        ),
        efficiency=report(
            table("data_efficiency.csv"),
            caption="../report/data_efficiency.rst",
            category="Tables",
        ),
        fits=report(
            table("scaling_fits.csv"),
            caption="../report/scaling_fits.rst",
            category="Tables",
        ),
        modes=report(
            table("mode_comparison.csv"),
            caption="../report/modes.rst",
            category="Tables",
        ),
        thresholds=report(
            table("mode_threshold.csv"),
            caption="../report/modes.rst",
            category="Tables",
        ),
        crossover=report(
            table("mode_crossover.csv"),
            caption="../report/modes.rst",
            category="Tables",
        ),
        sizes=table("size_gain.csv"),
        compute=table("compute.csv"),
        bins=report(
            table("error_bins.csv"),
            caption="../report/error_bins.rst",
            category="Tables",
        ),
        forgetting=report(
            table("forgetting.csv"),
            caption="../report/forgetting.rst",
            category="Tables",
        ),
        mixed=report(
            table("mixed_comparison.csv"),
            caption="../report/mixed_comparison.rst",
            category="Tables",
        ),
    log:
        study_log("aggregate.log"),
    benchmark:
        study_out(f"{layout.BENCHMARKS_DIR}/aggregate.tsv")
    conda:
        ENV
    shell:
        "pdetransfer aggregate --study {input.study} --results results"
        " --runs-csv {output.runs} --summary-csv {output.summary}"
        " --efficiency-csv {output.efficiency} --fits-csv {output.fits}"
        " --modes-csv {output.modes} --thresholds-csv {output.thresholds}"
        " --crossover-csv {output.crossover} --size-csv {output.sizes}"
        " --compute-csv {output.compute}"
        " --bins-csv {output.bins} --forgetting-csv {output.forgetting}"
        " --mixed-csv {output.mixed} > {log} 2>&1"


# `snakemake partial`: the tables of the runs finished so far, under the study's partial/tables
# (results/partial/tables, or results/studies/<study>/partial/tables for a named study), with
# missing.csv listing per cell what is not. The rule has neither input nor output, so
# Snakemake always runs it when asked and never schedules anything for it (no run, no study
# file: it records its own, so the study file and the full tables stay untouched).
rule partial:
    log:
        study_log("partial.log"),
    conda:
        ENV
    params:
        config=json.dumps(config),
        out=study_out(layout.PARTIAL_DIR),
    shell:
        "(pdetransfer study --config-json {params.config:q} --out {params.out}/study.json"
        " && pdetransfer aggregate --partial --study {params.out}/study.json --results results"
        " --runs-csv {params.out}/tables/runs.csv --summary-csv {params.out}/tables/summary.csv"
        " --efficiency-csv {params.out}/tables/data_efficiency.csv"
        " --fits-csv {params.out}/tables/scaling_fits.csv"
        " --missing-csv {params.out}/tables/missing.csv) > {log} 2>&1"


rule plot_error_vs_n:
    input:
        study=STUDY_FILE,
        summary=table("summary.csv"),
        fits=table("scaling_fits.csv"),
    output:
        png=report(
            plot("error_vs_n/{experiment}/{downstream}.png"),
            caption="../report/error_vs_n.rst",
            category="Error vs N",
            subcategory="{experiment}",
            labels={"experiment": "{experiment}", "downstream": "{downstream}"},
        ),
        svg=plot("error_vs_n/{experiment}/{downstream}.svg"),
    log:
        study_log("plots/error_vs_n/{experiment}/{downstream}.log"),
    conda:
        ENV
    shell:
        "pdetransfer plot error-vs-n --study {input.study} --summary {input.summary}"
        " --fits {input.fits}"
        " --experiment {wildcards.experiment} --downstream {wildcards.downstream}"
        " --out {output.png} {output.svg} > {log} 2>&1"


rule plot_error_vs_size:
    input:
        study=STUDY_FILE,
        summary=table("summary.csv"),
    output:
        png=report(
            plot("error_vs_size/{experiment}.png"),
            caption="../report/error_vs_size.rst",
            category="Error vs model size",
            labels={"experiment": "{experiment}"},
        ),
        svg=plot("error_vs_size/{experiment}.svg"),
    log:
        study_log("plots/error_vs_size/{experiment}.log"),
    conda:
        ENV
    shell:
        "pdetransfer plot error-vs-size --study {input.study} --summary {input.summary}"
        " --experiment {wildcards.experiment} --out {output.png} {output.svg} > {log} 2>&1"


rule plot_ood:
    input:
        study=STUDY_FILE,
        summary=table("summary.csv"),
    output:
        png=report(
            plot("ood/{experiment}.png"),
            caption="../report/ood.rst",
            category="OOD series",
            labels={"experiment": "{experiment}"},
        ),
        svg=plot("ood/{experiment}.svg"),
    log:
        study_log("plots/ood/{experiment}.log"),
    conda:
        ENV
    shell:
        "pdetransfer plot ood --study {input.study} --summary {input.summary}"
        " --experiment {wildcards.experiment} --out {output.png} {output.svg} > {log} 2>&1"


rule plot_mixed:
    input:
        study=STUDY_FILE,
        summary=table("summary.csv"),
    output:
        png=report(
            plot("mixed/{experiment}.png"),
            caption="../report/mixed.rst",
            category="Mixed physics",
            labels={"experiment": "{experiment}"},
        ),
        svg=plot("mixed/{experiment}.svg"),
    log:
        study_log("plots/mixed/{experiment}.log"),
    conda:
        ENV
    shell:
        "pdetransfer plot mixed --study {input.study} --summary {input.summary}"
        " --experiment {wildcards.experiment} --out {output.png} {output.svg} > {log} 2>&1"


rule plot_gallery:
    input:
        study=STUDY_FILE,
        runs=gallery_inputs,
    output:
        png=report(
            plot("gallery/{downstream}.png"),
            caption="../report/gallery.rst",
            category="Gallery",
            labels={"downstream": "{downstream}"},
        ),
        svg=plot("gallery/{downstream}.svg"),
    log:
        study_log("plots/gallery/{downstream}.log"),
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
        study=STUDY_FILE,
        runs=run_outputs(),
        pretrain=pretrain_outputs(),
    output:
        study_out(layout.TRACKING_EXPORT),
    log:
        study_log("track.log"),
    conda:
        TRACK_ENV
    shell:
        "pdetransfer track --study {input.study} --results results --out {output} > {log} 2>&1"
