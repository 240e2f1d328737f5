# Downstream training on the first N examples (a seeded permutation) of a downstream train
# set, once per learning rate and seed, one rule per mode that trains (pdetransfer.modes).
# Fine-tuning starts from a pre-trained checkpoint (its normalisation travels with it);
# scratch runs start from random weights, depend on no pre-training and are shared by every
# experiment with the same downstream dataset.
#
# The rule of a mode has the mode's name whatever sweep.pack is. sweep.pack (default true):
# one job per cell (pretrain, size, downstream, N / size, downstream, N) trains all its
# learning rates x seeds in one process and writes every member's model.pt and train.json at
# the paths of its runs, so a single run's target still works (it rebuilds its cell; members
# that had finished are re-emitted from their final.pt, not retrained). sweep.pack false: one
# job per run. The mode sets the start and the paths, sweep.pack the paths, the --lr/--seed/
# --out flags and the resources (common.smk: JOBS, member_flags, out_flag, train_resource).

for mode in TRAINING_MODES:

    rule:
        name:
            mode.train_rule
        input:
            start=JOBS.start(mode)[1],
            data=dataset_file("{downstream}", "train"),
            val=dataset_file("{downstream}", "val"),
        output:
            models=JOBS.files(mode, "model.pt"),
            summaries=JOBS.files(mode, "train.json"),
        log:
            JOBS.log(mode, "logs", "train.log"),
        benchmark:
            JOBS.log(mode, "benchmarks", "train.tsv")
        conda:
            ENV
        threads: res("train", "threads")
        resources:
            gpu=train_resource("gpu"),
            cpus_per_gpu=res("train", "threads"),  # per process: one per GPU, a pack is one
            mem_mb=train_resource("mem_mb"),
            runtime=train_resource("runtime"),
        params:
            start=JOBS.start(mode)[0],
            trainable=trainable_flags(mode),
            model=lambda wc: STUDY.model(wc.size)[1],
            architecture=lambda wc: STUDY.model(wc.size)[0],
            members=member_flags,
            out=out_flag(mode),
            recipe=train_flags("downstream"),
            every=config["training"]["checkpoint_every"],
        shell:
            "pdetransfer launch --gpus {resources.gpu} -- train {params.start} {input.start}"
            " {params.trainable}"
            " --data {input.data} --val {input.val}"
            " --model {params.model} --architecture {params.architecture}"
            " --n-train {wildcards.n} {params.members} {params.recipe}"
            " --checkpoint-every {params.every} --threads {threads} {params.out} > {log} 2>&1"
