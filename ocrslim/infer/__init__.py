"""The inference core a phone build would port: preprocessing, DB/CTC post-processing, one runner per
runtime (ONNX Runtime, MNN; torch only on demand) and the OCR pipeline. Never imports torch."""
