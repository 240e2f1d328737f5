"""``pdetransfer train``: the run's configuration and recipe, the members of a cell and their
packs, the optimisation loop and the files a run writes. Imports nothing, so the torch-free
schedule (read by the workflow's rules) stays cheap to import."""
