"""Hydra plugin module that registers ocrslim's config schema (every params section's dataclass defaults).

Hydra imports every module of the ``hydra_plugins`` namespace it finds; DVC adds the repository root
(its ``hydra.plugins_path``) before composing ``params.yaml`` for ``dvc exp run``, and
``python -m ocrslim.compose`` does the same. ``conf/config.yaml`` lists ``ocrslim_schema`` first in its
defaults, so the composed file starts from :func:`ocrslim.core.config.schema_defaults`.
"""

from ocrslim.core.config import register_schemas

register_schemas()
