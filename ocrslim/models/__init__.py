"""Native PyTorch OCR models: PP-LCNetV3 backbones, RSE-FPN / SVTR necks, DB / CTC heads.

>>> from ocrslim.models import load_ppocrv4, teacher_onnx_path
>>> det = load_ppocrv4("det", teacher_onnx_path("det"))  # doctest: +SKIP
"""

from ocrslim.models.backbones import PPLCNetV3
from ocrslim.models.det import DBNet, build_dbnet
from ocrslim.models.heads import CTCHead, DBHead
from ocrslim.models.io import load_model, save_model
from ocrslim.models.layers import COMPONENTS, build_component, component_spec
from ocrslim.models.necks import RSEFPN, EncoderWithSVTR
from ocrslim.models.ppocr import PPOCRV4_DET, PPOCRV4_REC, load_ppocrv4, onnx_charset, teacher_onnx_path
from ocrslim.models.rec import CTCRecognizer, build_ctc_recognizer

__all__ = [
    "COMPONENTS",
    "CTCHead",
    "CTCRecognizer",
    "DBHead",
    "DBNet",
    "EncoderWithSVTR",
    "PPLCNetV3",
    "PPOCRV4_DET",
    "PPOCRV4_REC",
    "RSEFPN",
    "build_component",
    "build_ctc_recognizer",
    "build_dbnet",
    "component_spec",
    "load_model",
    "load_ppocrv4",
    "onnx_charset",
    "save_model",
    "teacher_onnx_path",
]
