"""Native PyTorch OCR models: PP-LCNetV3 / MobileNetV3 / ViT backbones, RSE-FPN / SVTR necks, DB / CTC heads.

Import the submodules (``ocrslim.models.ppocr``, ``ocrslim.models.seed``, ``ocrslim.models.io``, ...): this
package's ``__init__`` stays empty so that :mod:`ocrslim.models.registry`, which names every teacher and
student, is importable without torch (the inference core resolves teacher names through it).

>>> from ocrslim.models.ppocr import load_ppocrv4, teacher_onnx_path
>>> det = load_ppocrv4("det", teacher_onnx_path("det"))  # doctest: +SKIP
"""
