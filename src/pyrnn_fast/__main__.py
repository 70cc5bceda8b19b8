"""``python -m pyrnn_fast``: the self-check and benchmark (see ``pyrnn_fast.benchmark.cli``)."""

import sys

from .benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())
