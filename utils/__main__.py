"""``python -m utils``: the course's command line (see ``utils.cli``)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the terminal

from .cli import main  # noqa: E402

sys.exit(main())
