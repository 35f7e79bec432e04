"""Export: torch → ONNX (+onnxsim, parity gate), ONNX → MNN (+parity gate) through the MNN wheel's compiled
tools, and the deployable bundle."""
