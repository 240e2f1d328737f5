"""The networks of the study: the architecture registry, the FNO, packed ensembles of K
networks and the normalisation that wraps them. Imports nothing, so the torch-free registry
stays cheap to import."""
