# Downstream training on the first N examples (a seeded permutation) of a downstream train
# set, once per learning rate and seed. Fine-tuning starts from a pre-trained checkpoint (its
# normalisation travels with it); scratch runs start from random weights, depend on no
# pre-training and are shared by every experiment with the same downstream dataset.
#
# sweep.pack (default true): one job per cell (pretrain, size, downstream, N / size,
# downstream, N) trains all its learning rates x seeds in one process and writes every
# member's model.pt and train.json at the paths of the per-run rules, so a single run's
# target still works (it rebuilds its cell; members that had finished are re-emitted from
# their final.pt, not retrained). sweep.pack false: one job per run. Exactly one of the two
# rule sets exists, so exactly one rule produces each path.

if config["sweep"]["pack"]:

    rule finetune_cell:
        input:
            init="results/pretrain/{pretrain}/{size}/model.pt",
            data="results/data/{downstream}/train.h5",
            val="results/data/{downstream}/val.h5",
        output:
            models=cell_files(FINETUNE_CELL, "model.pt"),
            summaries=cell_files(FINETUNE_CELL, "train.json"),
        log:
            "results/logs/runs/finetune/{pretrain}/{size}/{downstream}/n{n}/train.log",
        benchmark:
            "results/benchmarks/runs/finetune/{pretrain}/{size}/{downstream}/n{n}/train.tsv"
        conda:
            ENV
        threads: res("train", "threads")
        resources:
            gpu=cell_resource("gpu"),
            cpus_per_gpu=res("train", "threads"),  # the pack is one process on one GPU
            mem_mb=cell_resource("mem_mb"),
            runtime=cell_resource("runtime"),
        params:
            model=lambda wc: config["sizes"][wc.size],
            pattern=lambda wc: member_pattern(FINETUNE_CELL, wc),
            lrs=" ".join(STUDY.lrs),
            seeds=" ".join(str(s) for s in STUDY.seeds),
            recipe=train_flags("downstream"),
            every=config["training"]["checkpoint_every"],
        shell:
            "pdetransfer launch --gpus {resources.gpu} -- train"
            " --init {input.init} --data {input.data} --val {input.val}"
            " --model {params.model} --n-train {wildcards.n} --lr {params.lrs}"
            " --seed {params.seeds} {params.recipe} --checkpoint-every {params.every}"
            " --threads {threads} --out-pattern '{params.pattern}' > {log} 2>&1"

    rule scratch_cell:
        input:
            data="results/data/{downstream}/train.h5",
            val="results/data/{downstream}/val.h5",
            stats="results/data/{downstream}/stats.json",
        output:
            models=cell_files(SCRATCH_CELL, "model.pt"),
            summaries=cell_files(SCRATCH_CELL, "train.json"),
        log:
            "results/logs/runs/scratch/{size}/{downstream}/n{n}/train.log",
        benchmark:
            "results/benchmarks/runs/scratch/{size}/{downstream}/n{n}/train.tsv"
        conda:
            ENV
        threads: res("train", "threads")
        resources:
            gpu=cell_resource("gpu"),
            cpus_per_gpu=res("train", "threads"),  # the pack is one process on one GPU
            mem_mb=cell_resource("mem_mb"),
            runtime=cell_resource("runtime"),
        params:
            model=lambda wc: config["sizes"][wc.size],
            pattern=lambda wc: member_pattern(SCRATCH_CELL, wc),
            lrs=" ".join(STUDY.lrs),
            seeds=" ".join(str(s) for s in STUDY.seeds),
            recipe=train_flags("downstream"),
            every=config["training"]["checkpoint_every"],
        shell:
            "pdetransfer launch --gpus {resources.gpu} -- train"
            " --data {input.data} --val {input.val} --stats {input.stats}"
            " --model {params.model} --n-train {wildcards.n} --lr {params.lrs}"
            " --seed {params.seeds} {params.recipe} --checkpoint-every {params.every}"
            " --threads {threads} --out-pattern '{params.pattern}' > {log} 2>&1"

else:

    rule finetune:
        input:
            init="results/pretrain/{pretrain}/{size}/model.pt",
            data="results/data/{downstream}/train.h5",
            val="results/data/{downstream}/val.h5",
        output:
            model="results/runs/finetune/{pretrain}/{size}/{downstream}/n{n}/lr{lr}/s{seed}/model.pt",
            summary="results/runs/finetune/{pretrain}/{size}/{downstream}/n{n}/lr{lr}/s{seed}/train.json",
        log:
            "results/logs/runs/finetune/{pretrain}/{size}/{downstream}/n{n}/lr{lr}/s{seed}/train.log",
        benchmark:
            "results/benchmarks/runs/finetune/{pretrain}/{size}/{downstream}/n{n}/lr{lr}/s{seed}/train.tsv"
        conda:
            ENV
        threads: res("train", "threads")
        resources:
            gpu=res("train", "gpu"),
            cpus_per_gpu=res("train", "threads"),  # per process; one process per GPU
            mem_mb=res("train", "mem_mb"),
            runtime=runtime("train"),
        params:
            model=lambda wc: config["sizes"][wc.size],
            dir=lambda wc, output: os.path.dirname(output.model),
            recipe=train_flags("downstream"),
            every=config["training"]["checkpoint_every"],
        shell:
            "pdetransfer launch --gpus {resources.gpu} -- train"
            " --init {input.init} --data {input.data} --val {input.val}"
            " --model {params.model} --n-train {wildcards.n} --lr {wildcards.lr}"
            " --seed {wildcards.seed} {params.recipe} --checkpoint-every {params.every}"
            " --threads {threads} --out {params.dir} > {log} 2>&1"

    rule scratch:
        input:
            data="results/data/{downstream}/train.h5",
            val="results/data/{downstream}/val.h5",
            stats="results/data/{downstream}/stats.json",
        output:
            model="results/runs/scratch/{size}/{downstream}/n{n}/lr{lr}/s{seed}/model.pt",
            summary="results/runs/scratch/{size}/{downstream}/n{n}/lr{lr}/s{seed}/train.json",
        log:
            "results/logs/runs/scratch/{size}/{downstream}/n{n}/lr{lr}/s{seed}/train.log",
        benchmark:
            "results/benchmarks/runs/scratch/{size}/{downstream}/n{n}/lr{lr}/s{seed}/train.tsv"
        conda:
            ENV
        threads: res("train", "threads")
        resources:
            gpu=res("train", "gpu"),
            cpus_per_gpu=res("train", "threads"),  # per process; one process per GPU
            mem_mb=res("train", "mem_mb"),
            runtime=runtime("train"),
        params:
            model=lambda wc: config["sizes"][wc.size],
            dir=lambda wc, output: os.path.dirname(output.model),
            recipe=train_flags("downstream"),
            every=config["training"]["checkpoint_every"],
        shell:
            "pdetransfer launch --gpus {resources.gpu} -- train"
            " --data {input.data} --val {input.val} --stats {input.stats}"
            " --model {params.model} --n-train {wildcards.n} --lr {wildcards.lr}"
            " --seed {wildcards.seed} {params.recipe} --checkpoint-every {params.every}"
            " --threads {threads} --out {params.dir} > {log} 2>&1"
