"""ocrslim: shrink an OCR model (DB detection + CTC recognition) until it runs on a phone."""

__version__ = "0.1.0"
