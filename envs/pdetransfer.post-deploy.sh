#!/usr/bin/env bash
# Install the pdetransfer package (whose CLI every rule calls) into the freshly created conda
# environment. Snakemake runs this from its working directory, the repository root when the
# workflow is started as the README shows; set PDETRANSFER_SOURCE to the repository otherwise.
set -euo pipefail
pip install --no-deps --no-build-isolation "${PDETRANSFER_SOURCE:-.}"
