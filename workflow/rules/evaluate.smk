# Test-set metrics of every run, one rule per mode (pdetransfer.modes), evaluate_<mode>,
# whatever sweep.pack is. A run of a mode that trains evaluates its own model.pt; a zero-shot
# run evaluates the pre-trained checkpoint on the downstream test set and trains nothing.
#
# sweep.pack (default true): the members of a fine-tune or scratch cell are evaluated by one
# job per cell, one process that reads the test set once and writes every member's
# metrics.json at its run's path, each exactly what the member's own evaluation writes.
# sweep.pack false: one job per run. A zero-shot cell is one run: one job either way.

for mode in MODES.values():
    variants = [(JOBS, mode.evaluate_rule)]
    if mode.trains:  # the runs refinement adds: evaluate_<mode>_added, the same command
        variants.append((ADDED, mode.added_evaluate_rule))
    for jobs, name in variants:

        rule:
            name:
                name
            input:
                checkpoints=jobs.checkpoints(mode),
                data=dataset_file("{downstream}", "test"),
            output:
                jobs.files(mode, "metrics.json"),
            log:
                jobs.log(mode, "logs", "evaluate.log"),
            benchmark:
                jobs.log(mode, "benchmarks", "evaluate.tsv")
            conda:
                ENV
            threads: res("evaluate", "threads")
            resources:
                gpu=res("evaluate", "gpu"),
                cpus_per_gpu=res("evaluate", "threads"),  # per process; one process per GPU
                mem_mb=res("evaluate", "mem_mb"),  # one member in memory at a time
                runtime=runtime("evaluate", runs=jobs.runs(mode)),  # one after another
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
        predictions=results(f"{layout.RUNS}/{{run}}/predictions.h5"),
        metrics=results(f"{layout.RUNS}/{{run}}/predictions.json"),
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
