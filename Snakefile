# pdetransfer: pre-train -> fine-tune scaling and transfer study of neural operators.
#   snakemake --cores all                      the study of config/config.yaml
#   snakemake --cores all --configfile config/paper.yaml --profile <cluster profile>
#   snakemake --report results/report.html     HTML report with every table and plot

from snakemake.utils import min_version

# 9.19 reads a profile's profile.yaml (workflow/profiles/slurm); 9.20 reads runtimes given to
# --set-resources or a profile as minutes (9.16.3-9.19 took them as seconds).
min_version("9.20")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/aggregate.smk"


rule all:
    default_target: True
    input:
        TABLES,
        plot_targets(),
        data_cards(),
