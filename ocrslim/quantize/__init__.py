"""Accuracy-aware MNN quantization: full INT8 that still reads, or the best fallback that does.

``quantize_task`` takes one task's float ONNX, its MNN FP32 model and the calibration set's
mnnquant config, and tries candidates until one passes the accuracy gate:

1. full INT8 (weights and activations) with mnnquant, feature method ``KL`` | ``EMA`` | ``ADMM``;
2. repair (KL/ADMM only): run the INT8 candidate and the FP32 model side by side in the MNN
   runtime on a few gate inputs, measure each layer group's own error (relative L2 error of its
   outputs minus that of its inputs), keep the worst groups float with ``skip_quant_op_names``,
   re-quantize; at most ``max_repairs`` times;
3. the ``fallbacks`` in order: ``int8-weights`` (weight-only int8, HQQ), ``fp16`` (fp16 weights),
   ``fp32`` (the float model itself).

The gate evaluates candidate and MNN FP32 model on every gate set (first ``limit`` samples): det
hmean, rec ``rec_metric`` (exact accuracy by default: ``accuracy_ci_alnum`` keeps only [0-9a-z]
and so ignores Chinese text entirely). A candidate passes iff ``100 * (fp32 - candidate) <=
max_drop`` on every set. A candidate whose output is far off FP32 on the sensitivity inputs
(relative error > ``screen_error``) is recorded as broken without running the gate; the gate of a
candidate stops at its first failing set. Every attempt prints one line.

What MNN 3.6.1 does (measured on PP-OCRv4 mobile; see also PROBE.md):

- KL runs on dynamic-shape models, and its INT8 model runs at any input shape. KL clips peaky or
  sparse activations hard (threshold near the mode). On v4 det the head's first conv
  (``/head/binarize/conv1``) then breaks the map (its output's runtime cosine vs FP32: 0.62, map
  empty); keeping that one conv float restores it (keeping the two deconvs float as well changes
  nothing). MNN's own per-layer statistics (``"debug": true``) miss it (fake-quant cosine 0.99 there)
  and cost ~1.5 min, hence the side-by-side runtime comparison here.
- The remaining det loss (~3 hmean points on receipts) is spread over the backbone; keeping the
  early, small layers float recovers most of it cheaply (stem to blocks4 float: 1.44 MB).
- v4 rec with KL: blank text. Two causes: all-zero output channels get NaN weight scales (8 convs;
  ``mnn_graph`` flags them, the repair keeps them float first), and the softmax output is clipped to
  a maximum probability of 0.063, so every frame decodes as blank (keeping the Softmax float fixes
  that). The stem conv is clipped too (relative error 0.28), and errors compound: no cheap repair.
- ``skip_quant_op_names`` keeps conv/deconv weights and a Softmax float; a skipped sigmoid still runs
  as an int8 lookup table with its clipped scale.
- EMA needs a fixed input shape (a dynamic model segfaults: "Invalid Tensor, the session may not
  be ready"): overwriting the ONNX input dims (no onnxsim needed) and converting works. The EMA
  model still runs at other shapes (rec at N x 48 x W for any N, W, det at any H x W), with the
  same accuracy as at the calibration shape. EMA ignores ``skip_quant_op_names``: no repair. v4 det
  with EMA: empty map; v4 rec with EMA: synthetic text kept, real scene words lose ~13-30 points.
- Weight-only int8 with HQQ keeps det and rec within a point at ~27% of the FP32 size, and
  runs at FP32 speed on x86 (full INT8 ran 1.5-5x slower there: no VNNI kernels).
"""

from __future__ import annotations

from ocrslim.quantize.report import quantize_metrics
from ocrslim.quantize.search import PRECISIONS, QuantizeError, quantize_task

__all__ = ["PRECISIONS", "QuantizeError", "quantize_metrics", "quantize_task"]
