"""``python -m hostedjobs ...``: the ``hostedjobs`` command (`hostedjobs.cli`)."""

import sys

from .cli import main

sys.exit(main())
