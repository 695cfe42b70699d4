"""``python -m leod_core.cli``: the same as ``leod``."""
import sys

from leod_core.cli import main

sys.exit(main())
