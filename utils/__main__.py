"""``python -m utils``: the course's command line (see ``utils/course/cli.py``)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported

from .course.cli import main  # noqa: E402

sys.exit(main())
