#!/usr/bin/env python3
"""Adam-based neural style transfer with several styles: see `python neural_style.py --help`."""
import sys

from styleflow.cli.style import main

if __name__ == "__main__":
    sys.exit(main())
