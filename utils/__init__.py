"""Helper package of the chest X-ray course: every notebook and the ``python -m utils`` command line use it.

Modules (one job each): ``config`` (profiles, settings), ``datasets`` (registry), ``download`` (Kaggle),
``synthetic`` (embedded dataset), ``manifest`` (scan, check, split), ``prepare`` (name -> manifest),
``pipeline`` (tf.data), ``models``, ``training``, ``runs``, ``evaluation``, ``plots``, ``gradcam``,
``notebook`` (setup cell), ``cli`` (command line). Import the module you need; this file imports nothing heavy.
"""

__version__ = "0.1.0"
