"""DVC stage entry points: ``python -m stages.<name>`` (run from the repo root, so the workspace's own
``ocrslim`` package is imported, also inside a ``dvc exp run --queue`` workspace)."""
