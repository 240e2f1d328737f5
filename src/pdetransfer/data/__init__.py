"""Data: spectral solvers, source functions, the three PDE systems, HDF5 datasets and their statistics."""
