# Tables and plots. They read only metrics and summaries, so changing a plot (or its rule)
# never retrains anything; the study file carries the resolved config to the commands.


localrules:
    study,
    aggregate,
    plot_error_vs_n,
    plot_error_vs_size,
    plot_ood,
    plot_mixed,
    plot_gallery,


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
        runs=run_outputs(),
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
    log:
        "results/logs/aggregate.log",
    benchmark:
        "results/benchmarks/aggregate.tsv"
    conda:
        ENV
    shell:
        "pdetransfer aggregate --study {input.study} --results results"
        " --runs-csv {output.runs} --summary-csv {output.summary}"
        " --efficiency-csv {output.efficiency} > {log} 2>&1"


rule plot_error_vs_n:
    input:
        study="results/study.json",
        summary="results/tables/summary.csv",
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
