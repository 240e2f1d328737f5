# Test-set metrics of every run. {run} is a run directory below results/runs: fine-tuned and
# scratch runs evaluate their own model.pt; zero-shot runs (runs/zeroshot/...) evaluate the
# pre-trained checkpoint on the downstream test set and train nothing.


rule evaluate:
    input:
        checkpoint=run_checkpoint,
        data=run_test_file,
    output:
        "results/runs/{run}/metrics.json",
    log:
        "results/logs/runs/{run}/evaluate.log",
    benchmark:
        "results/benchmarks/runs/{run}/evaluate.tsv"
    conda:
        ENV
    threads: res("evaluate", "threads")
    resources:
        gpu=res("evaluate", "gpu"),
        cpus_per_gpu=res("evaluate", "threads"),  # per process; one process per GPU
        mem_mb=res("evaluate", "mem_mb"),
        runtime=runtime("evaluate"),
    params:
        batch_size=config["evaluation"]["batch_size"],
    shell:
        "pdetransfer launch --gpus {resources.gpu} -- evaluate"
        " --checkpoint {input.checkpoint} --data {input.data}"
        " --batch-size {params.batch_size} --threads {threads} --out {output} > {log} 2>&1"


# Predictions on the first test samples, only for the runs a gallery shows.
rule predict:
    input:
        checkpoint=run_checkpoint,
        data=run_test_file,
    output:
        predictions="results/runs/{run}/predictions.h5",
        metrics="results/runs/{run}/predictions.json",
    log:
        "results/logs/runs/{run}/predict.log",
    benchmark:
        "results/benchmarks/runs/{run}/predict.tsv"
    conda:
        ENV
    threads: res("evaluate", "threads")
    resources:
        gpu=res("evaluate", "gpu"),
        cpus_per_gpu=res("evaluate", "threads"),  # per process; one process per GPU
        mem_mb=res("evaluate", "mem_mb"),
        runtime=runtime("evaluate"),
    params:
        batch_size=config["evaluation"]["batch_size"],
        samples=config["report"]["gallery"]["samples"],
    shell:
        "pdetransfer launch --gpus {resources.gpu} -- evaluate"
        " --checkpoint {input.checkpoint} --data {input.data}"
        " --batch-size {params.batch_size} --threads {threads} --out {output.metrics}"
        " --predictions {output.predictions} --n-predictions {params.samples} > {log} 2>&1"
