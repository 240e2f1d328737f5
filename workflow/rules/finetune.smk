# Downstream training on the first N examples (a seeded permutation) of a downstream train
# set, once per learning rate and seed. Fine-tuning starts from a pre-trained checkpoint (its
# normalisation travels with it); scratch runs start from random weights, depend on no
# pre-training and are shared by every experiment with the same downstream dataset.
#
# sweep.pack (default true): one job per cell (pretrain, size, downstream, N / size,
# downstream, N), rules finetune_cell and scratch_cell, trains all its learning rates x seeds
# in one process and writes every member's model.pt and train.json at the paths of the
# per-run rules, so a single run's target still works (it rebuilds its cell; members that had
# finished are re-emitted from their final.pt, not retrained). sweep.pack false: one job per
# run, rules finetune and scratch. Exactly one of the two rule sets exists, so exactly one
# rule produces each path.
#
# The four rules are one definition: the mode sets the first input, sweep.pack the name, the
# paths, the --lr/--seed/--out flags and the resources (common.smk: job_dir, job_files,
# member_flags, out_flag, train_resource). `use rule` cannot share it: its base rule would
# exist, under one name, in both settings.

# What a mode's training starts from: its flag and file.
TRAIN_START = {
    "finetune": ("--init", "results/pretrain/{pretrain}/{size}/model.pt"),
    "scratch": ("--stats", "results/data/{downstream}/stats.json"),
}

for mode, cell in CELLS.items():

    rule:
        name:
            f"{mode}_cell" if PACK else mode
        input:
            start=TRAIN_START[mode][1],
            data="results/data/{downstream}/train.h5",
            val="results/data/{downstream}/val.h5",
        output:
            models=job_files(cell, "model.pt"),
            summaries=job_files(cell, "train.json"),
        log:
            log_file(job_dir(cell), "logs", "train.log"),
        benchmark:
            log_file(job_dir(cell), "benchmarks", "train.tsv")
        conda:
            ENV
        threads: res("train", "threads")
        resources:
            gpu=train_resource("gpu"),
            cpus_per_gpu=res("train", "threads"),  # per process: one per GPU, a pack is one
            mem_mb=train_resource("mem_mb"),
            runtime=train_resource("runtime"),
        params:
            start=TRAIN_START[mode][0],
            model=lambda wc: config["sizes"][wc.size],
            members=member_flags,
            out=out_flag(cell),
            recipe=train_flags("downstream"),
            every=config["training"]["checkpoint_every"],
        shell:
            "pdetransfer launch --gpus {resources.gpu} -- train {params.start} {input.start}"
            " --data {input.data} --val {input.val} --model {params.model}"
            " --n-train {wildcards.n} {params.members} {params.recipe}"
            " --checkpoint-every {params.every} --threads {threads} {params.out} > {log} 2>&1"
