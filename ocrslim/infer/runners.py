"""One calling convention for torch, onnxruntime and MNN models: float32 NCHW numpy in, numpy out.

Post-processing (DB boxes, CTC decoding) takes the arrays these runners return, so the same code
scores every runtime. Every runner accepts a new input shape on every call (det images of any
size, rec batches of any width). One runner per runtime; :func:`open_model_file` picks it from a file's
suffix and reads the metadata the file carries. torch is imported only by :class:`TorchRunner` (and only
when one is built): reading with ONNX Runtime or MNN never loads it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ocrslim.core.artifacts import onnx_characters, onnx_ocrslim_meta, read_sidecar
from ocrslim.core.errors import ArtifactError

PathLike = str | os.PathLike[str]


class Runner(Protocol):
    """A model behind a numpy call: ``y = runner(x)``."""

    name: str  # "torch" | "onnx" | "mnn"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Run on ``x`` (float32, NCHW); return the first output as float32."""
        ...


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what native code prints to stdout (fd 1) to stderr for the duration of the block.

    MNN's C++ runtime prints banners ("The device supports: ...", "MNN use high precision") on
    stdout, which would corrupt machine-readable output such as ``ocrslim read --json``.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _as_input(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)


class TorchRunner:
    """Run a ``torch.nn.Module`` in eval mode under ``inference_mode``, on CPU or a GPU.

    Args:
        module: the model; put in eval mode here (not moved: a model being trained stays where it is).
        threads: intra-op threads during each call (torch's setting is process-wide, so it is
            set and restored around the call); ``None`` keeps torch's default.
        device: where the inputs go (``"cuda"``, a ``torch.device``); ``None``: the module's own device
            (its first parameter's; CPU for a module without parameters). Outputs come back to numpy.
    """

    name = "torch"

    def __init__(self, module: Any, threads: int | None = None, device: Any = None) -> None:
        self.module = module.eval()
        self.threads = threads
        if device is None:
            first = next(iter(module.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = device

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        previous = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                out = self.module(torch.from_numpy(_as_input(x)).to(self.device))
        finally:
            torch.set_num_threads(previous)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        elif isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().cpu().numpy().astype(np.float32, copy=False)


class OrtRunner:
    """Run an ONNX file with onnxruntime's CPU provider, full graph optimization.

    Args:
        path: ``.onnx`` file; its first input is fed, its first output returned.
        threads: intra-op threads; ``None`` lets onnxruntime choose.

    Raises:
        ArtifactError: onnxruntime cannot load the file.
    """

    name = "onnx"

    def __init__(self, path: PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        self.path = Path(path)
        _require_file(self.path)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or 0
        opts.inter_op_num_threads = 1
        # Idle ORT worker threads busy-wait by default; with det and rec sessions (and torch) in one
        # process on few cores that spinning steals the CPU from whoever is computing.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except (ort_state.Fail, ort_state.InvalidProtobuf, ort_state.InvalidGraph, ort_state.NoSuchFile,
                ort_state.InvalidArgument) as e:  # InvalidArgument: an empty file (no graph)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ArtifactError(
                f"{self.path}: onnxruntime cannot load it ({first}). Re-run the stage that wrote it."
            ) from e
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props`` (dictionary, ocrslim metadata), read by onnxruntime: no ``onnx`` needed."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self.output_name], {self.input_name: _as_input(x)})[0]
        return np.asarray(out, dtype=np.float32)


class MnnRunner:
    """Run an MNN file on MNN's CPU backend at FP32 ("high" precision), with mutable input shapes.

    Uses the Module API (``load_module_from_file(..., shape_mutable=True)``), which re-plans for a
    new input shape by itself; the Interpreter/Session API would need resizeTensor and
    resizeSession on every change (PROBE.md). "high" precision keeps FP32 arithmetic; "normal"
    or "low" may run FP16/BF16 kernels on ARM.

    Args:
        path: ``.mnn`` file with one input (NCHW, as converted by ``convert_onnx_to_mnn``).
        threads: CPU threads; ``None`` keeps MNN's default.
        outputs: tensor names to return instead of the model's outputs (:meth:`tensors`; e.g. every layer
            group's boundary, to compare an INT8 build with its FP32 one layer by layer).

    Raises:
        ArtifactError: MNN cannot load the file, or it has more than one input.
    """

    name = "mnn"

    def __init__(self, path: PathLike, threads: int | None = None, outputs: Sequence[str] | None = None) -> None:
        with stdout_to_stderr():
            import MNN.expr
            import MNN.nn

        self._expr = MNN.expr
        self.path = Path(path)
        _require_file(self.path)
        config: dict[str, Any] = {"backend": "CPU", "precision": "high"}
        if threads is not None:
            config["numThread"] = threads
        unloadable = f"{self.path}: MNN cannot load it. Re-run convert_onnx_to_mnn (dvc repro convert)."
        with stdout_to_stderr():
            self._runtime = MNN.nn.create_runtime_manager((config,))  # must outlive the module
            input_names: list[str] = []
            if outputs:  # naming outputs needs the input named too: read it off a plain load first
                probe = MNN.nn.load_module_from_file(str(self.path), [], [], runtime_manager=self._runtime)
                input_names = list(probe.get_info().get("inputNames", [])) if probe is not None else []
            self.outputs = list(outputs or [])
            try:
                self.module = MNN.nn.load_module_from_file(
                    str(self.path), input_names, self.outputs, runtime_manager=self._runtime, shape_mutable=True
                )
            except SystemError as e:  # the binding's way of saying "Invalidate buffer to create MNN Module"
                raise ArtifactError(unloadable) from e
        if self.module is None:
            raise ArtifactError(unloadable)
        self._first_call = True
        inputs = self.module.get_info().get("inputNames", [])
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path}: has inputs {inputs}, MnnRunner feeds exactly one. Export one input.")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        F = self._expr
        x = _as_input(x)
        var = F.const(x, list(x.shape), F.NCHW)
        if self._first_call:  # MNN prints its precision banner on the first forward
            with stdout_to_stderr():
                out = self.module.forward([var])[0]
            self._first_call = False
        else:
            out = self.module.forward([var])[0]
        return self._read(out)

    def release(self) -> None:
        """Hand the working memory MNN keeps between calls (activation buffers sized for the last input) back to
        the system; the next call allocates it again. MNN's pool is per process, so this frees every MNN model's
        idle buffers, not only this one's: the OCR pipeline calls it after a page's detection, so recognition
        does not run on top of the detector's buffers (:meth:`ocrslim.infer.pipeline.OCR.read_boxes`)."""
        self._expr.gc(True)

    def _read(self, out: Any) -> np.ndarray:
        F = self._expr
        if out.data_format == F.NC4HW4:
            out = F.convert(out, F.NCHW)
        # read() returns a view of MNN's buffer, which the next forward may overwrite: copy it.
        return np.array(out.read(), dtype=np.float32, copy=True)

    def tensors(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The float tensors named by ``outputs`` on input ``x`` (non-float ones are left out)."""
        F = self._expr
        x = _as_input(x)
        with stdout_to_stderr():
            outs = self.module.forward([F.const(x, list(x.shape), F.NCHW)])
            return {name: self._read(o) for name, o in zip(self.outputs, outs) if o.dtype == F.float}


MODEL_SUFFIXES = (".onnx", ".mnn", ".safetensors")


def open_model_file(path: PathLike, threads: int | None = None) -> tuple[Runner, dict[str, Any]]:
    """Open a model file by its suffix: the runner and the metadata the file carries.

    * ``.onnx`` → :class:`OrtRunner`; the ``ocrslim`` entry of its ``metadata_props`` (task, pre/post-processing)
      and, as ``characters``, PP-OCR's ``character`` list when it has one;
    * ``.mnn`` → :class:`MnnRunner`; its JSON sidecar (``det.mnn.json``);
    * ``.safetensors`` → :class:`TorchRunner` on the module :func:`ocrslim.models.io.load_model` rebuilds
      (weights and architecture spec, no pickle; the only case that imports torch); its meta.

    A torch ``.pt`` pickle is refused (it could run code): ``ocrslim convert-model`` converts one you trust.

    >>> runner, meta = open_model_file("artifacts/mnn/student_det.mnn", threads=2)  # doctest: +SKIP
    >>> prob = runner(np.zeros((1, 3, 640, 640), np.float32))  # doctest: +SKIP

    Raises:
        ArtifactError: unknown suffix, missing or unloadable file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        ort = OrtRunner(path, threads)
        props = ort.metadata
        meta = onnx_ocrslim_meta(path, props)
        if not meta.get("characters") and (chars := onnx_characters(path, props)):
            meta["characters"] = chars
        return ort, meta
    if suffix == ".mnn":
        return MnnRunner(path, threads), read_sidecar(path)
    if suffix == ".safetensors":
        from ocrslim.models.io import load_model  # the torch side, only for torch model files

        module, meta = load_model(path)
        return TorchRunner(module, threads), meta
    if suffix in (".pt", ".pth"):
        raise ArtifactError(f"{path}: a torch pickle, which could run code when loaded; ocrslim reads .safetensors "
                            f"models. If you trust it: ocrslim convert-model {path} {path.with_suffix('.safetensors')}")
    shown = repr(suffix) if suffix else "(none)"
    raise ArtifactError(f"{path}: unknown model suffix {shown}, expected {', '.join(MODEL_SUFFIXES)}. "
                        "Point to an exported model file or use a zoo name.")


def open_runner(path: PathLike, threads: int | None = None) -> Runner:
    """The runner of a model file, without its metadata (:func:`open_model_file`).

    >>> runner = open_runner("artifacts/mnn/student_det.mnn", threads=2)  # doctest: +SKIP
    """
    return open_model_file(path, threads)[0]


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise ArtifactError(f"{path}: not found. Run the stage that writes it (dvc repro), or fix the path.")
