"""Where a command runs: devices, GPU claims, data-parallel processes, stop signals, the
SLURM deadline, the allocator setting and ``pdetransfer launch``."""
