"""Core: typed config (schemas + loading), errors, atomic file writes, and artifact metadata (sidecars,
dictionaries, the bundle manifest). Imports nothing else of ocrslim; no torch, numpy or onnx at import."""
