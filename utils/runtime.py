"""Importing TensorFlow without its start-up noise.

The TensorFlow wheel built for CUDA prints "Could not find cuda drivers" and "failed call to cuInit" to the
process's stderr on every CPU-only machine, before its logging is configured, so ``TF_CPP_MIN_LOG_LEVEL``
cannot hide them. They are harmless there but read like errors in every notebook's first cell.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def _stderr_fd_muted() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the block (Python exceptions still propagate)."""
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (some embedded runtimes)
        yield
        return
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


def import_tensorflow() -> ModuleType:
    """``import tensorflow`` and list its devices once, with the C++ start-up chatter muted."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _stderr_fd_muted():
        import tensorflow as tf

        tf.config.list_physical_devices()  # device discovery prints the CUDA messages; do it now
    return tf
