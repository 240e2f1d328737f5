# pdetransfer: pre-train -> fine-tune scaling and transfer study of neural operators.
#   snakemake --cores all                      the study of config/config.yaml
#   snakemake --cores all --configfile config/paper.yaml --profile <cluster profile>
#   snakemake --report results/report.html     HTML report with every table and plot


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        TABLES,
        plot_targets(),
