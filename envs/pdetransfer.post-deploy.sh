#!/usr/bin/env bash
# Install the pdetransfer package (whose CLI every rule calls) into the freshly created conda
# environment -- editable, so the environment runs the repository's current code: after a
# `git pull` the jobs use the new code without rebuilding the environment (the repository is
# on a file system the compute nodes see anyway: Snakemake runs from it). Dependencies come
# from pdetransfer.yaml (--no-deps: pip must not replace conda's torch with a CPU wheel).
# Snakemake runs this from its working directory, the repository root when the workflow is
# started as the README shows; set PDETRANSFER_SOURCE to the repository otherwise.
set -euo pipefail
pip install --no-deps --no-build-isolation --editable "${PDETRANSFER_SOURCE:-.}"
