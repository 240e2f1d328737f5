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
#
# Runs refinement adds to a cell (sweep.refine) have their own rule, <mode>_added, with the
# same command: one job per rate and cap of a cell when packed (every seed), else one per run,
# its --max-steps the cap its paths name (common.smk: ADDED, added_member_flags, ...).

for mode in TRAINING_MODES:
    for jobs, name, members, out, budget in (
        (
            JOBS,
            mode.train_rule,
            member_flags,
            out_flag(mode),
            train_flags("downstream"),
        ),
        (
            ADDED,
            mode.added_train_rule,
            added_member_flags,
            added_out_flag(mode),
            added_recipe,
        ),
    ):

        rule:
            name:
                name
            input:
                start=jobs.start(mode)[1],
                data=dataset_file("{downstream}", "train"),
                val=dataset_file("{downstream}", "val"),
            output:
                models=jobs.files(mode, "model.pt"),
                summaries=jobs.files(mode, "train.json"),
            log:
                jobs.log(mode, "logs", "train.log"),
            benchmark:
                jobs.log(mode, "benchmarks", "train.tsv")
            conda:
                ENV
            threads: res("train", "threads")
            resources:
                gpu=train_resource("gpu", jobs),
                cpus_per_gpu=res("train", "threads"),  # per process: one per GPU, a pack is one
                mem_mb=train_resource("mem_mb", jobs),
                runtime=train_resource("runtime", jobs),
            params:
                start=jobs.start(mode)[0],
                trainable=trainable_flags(mode),
                model=lambda wc: STUDY.model(wc.size)[1],
                architecture=lambda wc: STUDY.model(wc.size)[0],
                members=members,
                out=out,
                recipe=budget,
                every=config["training"]["checkpoint_every"],
            shell:
                "pdetransfer launch --gpus {resources.gpu} -- train {params.start} {input.start}"
                " {params.trainable}"
                " --data {input.data} --val {input.val}"
                " --model {params.model} --architecture {params.architecture}"
                " --n-train {wildcards.n} {params.members} {params.recipe}"
                " --checkpoint-every {params.every} --threads {threads} {params.out} > {log} 2>&1"
