"""Native PyTorch OCR models: PP-LCNetV3 backbones, RSE-FPN / SVTR necks, DB / CTC heads.

>>> from ocrslim.models import load_ppocrv4, teacher_onnx_path
>>> det = load_ppocrv4("det", teacher_onnx_path("det"))  # doctest: +SKIP
"""

from ocrslim.models.backbones import PPLCNetV3
from ocrslim.models.det import DBNet, build_dbnet
from ocrslim.models.heads import CTCHead, DBHead
from ocrslim.models.io import load_model, save_model
from ocrslim.models.layers import COMPONENTS, build_component, component_spec
from ocrslim.models.mobilenetv3 import MobileNetV3Small
from ocrslim.models.necks import RSEFPN, EncoderWithSVTR
from ocrslim.models.ppocr import PPOCRV4_DET, PPOCRV4_REC, load_ppocrv4, onnx_charset, teacher_onnx_path
from ocrslim.models.rec import CTCRecognizer, build_ctc_recognizer
from ocrslim.models.seed import DEFAULT_SEED, SEED_STUDENTS, build_seed_student
from ocrslim.models.vit import Im2Seq, ViTRec

__all__ = [
    "COMPONENTS",
    "CTCHead",
    "CTCRecognizer",
    "DBHead",
    "DBNet",
    "DEFAULT_SEED",
    "EncoderWithSVTR",
    "Im2Seq",
    "MobileNetV3Small",
    "PPLCNetV3",
    "PPOCRV4_DET",
    "PPOCRV4_REC",
    "RSEFPN",
    "SEED_STUDENTS",
    "ViTRec",
    "build_component",
    "build_ctc_recognizer",
    "build_dbnet",
    "build_seed_student",
    "component_spec",
    "load_model",
    "load_ppocrv4",
    "onnx_charset",
    "save_model",
    "teacher_onnx_path",
]
