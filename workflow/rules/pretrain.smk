# Pre-training: one checkpoint per (pre-training entry, model size). Several datasets in an
# entry are mixed physics: the model sees all of them, normalised with their joint stats.
# Only model.pt and train.json are outputs; state.pt (the engine's resume state) is not, so
# a job killed half-way keeps it and `--rerun-incomplete` resumes instead of starting over.


rule pretrain:
    input:
        data=lambda wc: pretrain_files(wc, "train"),
        val=lambda wc: pretrain_files(wc, "val"),
        stats=pretrain_stats,
    output:
        model=results(layout.PRETRAINED_MODEL),
        summary=results(f"{layout.PRETRAIN_DIR}/train.json"),
    log:
        "results/logs/pretrain/{pretrain}/{size}.log",
    benchmark:
        "results/benchmarks/pretrain/{pretrain}/{size}.tsv"
    conda:
        ENV
    threads: res("pretrain", "threads")
    resources:
        gpu=res("pretrain", "gpu"),
        cpus_per_gpu=res("pretrain", "threads"),  # per process; one process per GPU
        mem_mb=res("pretrain", "mem_mb"),
        runtime=runtime("pretrain"),
    params:
        model=lambda wc: STUDY.model(wc.size)[1],
        architecture=lambda wc: STUDY.model(wc.size)[0],
        dir=lambda wc, output: os.path.dirname(output.model),
        lr=recipe("pretrain")["lr"],
        seed=recipe("pretrain")["seed"],
        recipe=train_flags("pretrain"),
        every=config["training"]["checkpoint_every"],
    shell:
        "pdetransfer launch --gpus {resources.gpu} -- train"
        " --data {input.data} --val {input.val} --stats {input.stats}"
        " --model {params.model} --architecture {params.architecture}"
        " --lr {params.lr} --seed {params.seed}"
        " {params.recipe} --checkpoint-every {params.every}"
        " --threads {threads} --out {params.dir} > {log} 2>&1"
