"""Data: dataset readers (``datasets``), and the transforms, vocab and synthetic text images beside it.

Import from the submodules, e.g. ``from ocrslim.data.datasets import load_det_dataset``.
"""
