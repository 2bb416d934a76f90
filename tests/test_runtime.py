"""TensorFlow imports without the CUDA start-up messages on a CPU-only machine."""

import subprocess
import sys

from utils.config import PROJECT_ROOT


def test_import_is_quiet_and_usable():
    code = (
        "from utils.runtime import import_tensorflow; tf = import_tensorflow(); "
        "print(tf.reduce_sum(tf.ones(3)).numpy()); import sys; print('again', import_tensorflow() is tf)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3.0", "again", "True"]
    assert "cuda" not in result.stderr.lower()
