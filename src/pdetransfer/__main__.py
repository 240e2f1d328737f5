"""``python -m pdetransfer`` (and ``torchrun -m pdetransfer``) run the command line."""

import sys

from pdetransfer.cli import main

sys.exit(main())
