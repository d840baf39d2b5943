"""`python -m styleflow` is the `styleflow` command."""
import sys

from .cli.main import main

sys.exit(main())
