"""pdetransfer: the pre-train / fine-tune scaling and transfer study for neural operators on PDEs.

Reproduces and extends Subramanian et al., "Towards Foundation Models for Scientific Machine
Learning" (NeurIPS 2023) as a restartable Snakemake workflow. All logic lives in this package;
the workflow rules only call the ``pdetransfer`` command line.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pdetransfer")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
