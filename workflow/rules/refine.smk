# Cells that refine themselves (sweep.refine): one checkpoint per mode that trains, refine_<mode>.
# Round k of a cell reads its runs' train.json and log.csv (validation errors only) -- the
# grid's and those of rounds 1..k-1 -- and writes refine/round<k>.json in the cell's directory:
# the runs round k adds (the next rate beyond a decisive edge, or the chosen rate at twice the
# cap), or none, which ends the cell's rounds (pdetransfer.study.refinement). The added runs
# are ordinary targets of <mode>_added and evaluate_<mode>_added; the tables ask for every
# cell's rounds (common.smk: study_run_outputs). The grid's rules are untouched, so turning
# refinement on reruns nothing of a finished grid.

for mode in TRAINING_MODES:

    checkpoint:
        name:
            mode.refine_rule
        input:
            unpack(refine_inputs(mode)),
        output:
            results(layout.decision_template(mode)),
        log:
            results(f"logs/{layout.decision_template(mode).removesuffix('.json')}.log"),
        localrule: True
        conda:
            ENV
        params:
            rounds=REFINE["rounds"],
            bounds=" ".join(str(b) for b in REFINE["lr_bounds"]),
            tolerance=config["report"]["undertrained_tolerance"],
        shell:
            "pdetransfer refine --results results --train {input.train}"
            " --round {wildcards.round} --rounds {params.rounds} --lr-bounds {params.bounds}"
            " --tolerance {params.tolerance} --out {output} > {log} 2>&1"
