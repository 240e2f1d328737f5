# Test-set metrics of every run. {run} is a run directory below results/runs: fine-tuned and
# scratch runs evaluate their own model.pt; zero-shot runs (runs/zeroshot/...) evaluate the
# pre-trained checkpoint on the downstream test set and train nothing.
#
# sweep.pack (default true): the members of a fine-tune or scratch cell are evaluated by one
# job per cell (evaluate_finetune_cell, evaluate_scratch_cell), one process that reads the
# test set once and writes every member's metrics.json at its per-run path, each exactly what
# the member's own evaluation writes; `evaluate` then serves the zero-shot runs only, so
# exactly one rule produces each path. sweep.pack false: `evaluate` serves every run.


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
    wildcard_constraints:
        run=ZEROSHOT_RUN if PACK else f"{TRAINED_RUN}|{ZEROSHOT_RUN}",
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


if PACK:
    # One definition for both modes: the cell (common.smk's CELLS) sets the paths.
    for mode, cell in CELLS.items():

        rule:
            name:
                f"evaluate_{mode}_cell"
            input:
                checkpoints=cell_files(cell, "model.pt"),
                data="results/data/{downstream}/test.h5",
            output:
                cell_files(cell, "metrics.json"),
            log:
                log_file(cell, "logs", "evaluate.log"),
            benchmark:
                log_file(cell, "benchmarks", "evaluate.tsv")
            conda:
                ENV
            threads: res("evaluate", "threads")
            resources:
                gpu=res("evaluate", "gpu"),
                cpus_per_gpu=res("evaluate", "threads"),  # per process; one process per GPU
                mem_mb=res("evaluate", "mem_mb"),  # one member in memory at a time
                runtime=runtime("evaluate", runs=len(CELL_MEMBERS)),  # one after another
            params:
                batch_size=config["evaluation"]["batch_size"],
            shell:
                "pdetransfer launch --gpus {resources.gpu} -- evaluate"
                " --checkpoint {input.checkpoints} --data {input.data}"
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
