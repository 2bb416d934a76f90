"""``python -m utils``: the course's command line (see ``utils.cli``)."""

import sys

from .cli import main

sys.exit(main())
