#!/usr/bin/env python3
"""Neural style transfer with L-BFGS: see `python neural_style_transfer.py --help`."""
import sys

from styleflow.cli.transfer import main

if __name__ == "__main__":
    sys.exit(main())
