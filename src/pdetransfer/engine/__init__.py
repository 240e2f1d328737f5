"""Engine: models, normalisation, checkpoints, training, evaluation and launching on CPUs and GPUs."""
