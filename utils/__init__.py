"""The chest X-ray course's helper package.

What the notebooks teach, saved for reuse (``# saved in utils/<module>.py`` in the notebook, the same code here):
``data`` (03: the tf.data pipeline), ``models`` (04-08: the CNN and the transfer models), ``training`` (04-05:
callbacks, fit, two-phase fine-tuning), ``metrics`` (04, 09), ``gradcam`` (10), ``deploy`` (11), and ``plots``.
Plumbing no student needs to read lives in ``utils.course``: settings, datasets, download, manifest, synthetic
images, weights, run folders, the command line and the notebooks' setup cell.
"""
