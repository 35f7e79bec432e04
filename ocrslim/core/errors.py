"""Error types. User mistakes are ``OcrslimError``s: printed as one line, no traceback.

Messages follow ``<file or key>: <what is wrong>. <the fix>.`` Anything else that escapes is a
bug and keeps its traceback.
"""

from __future__ import annotations


class OcrslimError(Exception):
    """A user-facing error: bad input, missing file, wrong config. Printed as one line."""


class ConfigError(OcrslimError):
    """A params/config key is unknown, mistyped or out of range."""


class DataError(OcrslimError):
    """A dataset, label file or image cannot be used as given."""


class ArtifactError(OcrslimError):
    """A model or stage output is missing or unusable."""


class ToolError(OcrslimError):
    """An external tool (MNN converter/quantizer, onnxsim) failed."""


class ParityError(OcrslimError):
    """Two runtimes disagree beyond tolerance (export/convert gates)."""
