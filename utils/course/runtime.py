"""Importing TensorFlow and Keras without their start-up noise and harmless warnings.

The CUDA build of TensorFlow prints "Could not find cuda drivers" and "failed call to cuInit" on every CPU-only
machine, from C++ before its logging is set up: only muting the process's stderr while importing hides them.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from types import ModuleType

HARMLESS_WARNINGS = (
    ".*`shuffle=True` was passed.*",  # fit() on a tf.data pipeline that shuffles itself
    ".*Skipping variable loading for optimizer.*",  # weights reloaded into a model compiled anew
    ".*input_shape.*is undefined or non-square.*",  # MobileNet's ImageNet file used at another input size
    ".*does not apply to tf.data functions.*",  # the smoke profile's eager Keras steps (tf.data stays compiled)
    ".*IProgress not found.*",  # tqdm (imported by Gradio) in a notebook without ipywidgets
    ".*`np.object` will be defined as the corresponding NumPy scalar.*",  # Keras's tf2onnx shim probing NumPy
)


@contextlib.contextmanager
def _stderr_muted():
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


def quiet_libraries() -> ModuleType:
    """Import TensorFlow quietly (devices listed once, while stderr is muted), silence its Python-side logger
    and the warnings in :data:`HARMLESS_WARNINGS`; returns the ``tensorflow`` module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        with _stderr_muted():
            import tensorflow as tf

            tf.config.list_physical_devices()  # device discovery prints the CUDA messages: do it now
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # e.g. "5 out of the last 5 calls ... triggered tf.function retracing"
    for message in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    return tf
