# Downstream training on the first N examples (a seeded permutation) of a downstream train
# set, once per learning rate and seed. Fine-tuning starts from a pre-trained checkpoint (its
# normalisation travels with it); scratch runs start from random weights, depend on no
# pre-training and are shared by every experiment with the same downstream dataset.


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
