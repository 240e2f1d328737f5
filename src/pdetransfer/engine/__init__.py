"""Engine: models, training, evaluation and where they run (CPUs, GPUs, SLURM).

``models/`` holds the networks, their registry and normalisation; ``training/`` the ``train``
subcommand (recipe, loop, packing, run files); ``runtime/`` devices, processes and signals.
Shared by training and evaluation: :mod:`.checkpoints`, :mod:`.fields` (datasets as tensors)
and :mod:`.losses` (training losses and the study's metric). The package imports nothing on
its own, so the workflow's config check can read the torch-free model registry cheaply.
"""
