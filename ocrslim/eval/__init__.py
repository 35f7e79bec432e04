"""Measuring: OCR metrics, the one scoring path (evaluate stage, quantize gate, distillation validation),
benchmarks, the summary report and experiment selection."""
