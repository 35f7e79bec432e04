"""ONNX → MNN conversion and MNN post-training quantization, through the MNN wheel's ``_tools``.

Each tool call runs in a child process (``_mnn_tool.py``): the tools segfault on some graphs
and return True even when they fail, so success means "the child exited 0 and wrote the
output file". A failure becomes one ``ToolError`` line naming the tool, the exit code or
signal and the tool's last relevant output line (often the op it died on).

Never use the ``mnnconvert``/``mnnquant`` console scripts or ``MNN.tools``: they pip-install a
logging SDK and upload usage data (PROBE.md, "MNN 3.6.1 wheel").
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ocrslim.core.errors import ArtifactError, ConfigError, ToolError
from ocrslim.core.fsutil import atomic_path

PathLike = str | os.PathLike[str]

_TOOL_SCRIPT = Path(__file__).with_name("_mnn_tool.py")

# Lines that say something went wrong, and generic ones that name no cause.
_ERROR_RE = re.compile(r"error|fail|not support|don't support|can't|cannot|invalid|not exist|abort|unknown", re.I)
_GENERIC_RE = re.compile(r"^(Converted Failed!|\[ERROR\] Convert error, please check your file format\.)$")
# Noise printed by every MNN process, and the log prefix ("[10:38:36] :35: ", "[10:38:47] @ 1725: ").
_NOISE_RE = re.compile(r"^The device supports:")
_PREFIX_RE = re.compile(r"^\[\d\d:\d\d:\d\d\]\s*[:@]?\s*\d*:\s*")


def mnn_version() -> str:
    """Return the installed MNN wheel's version (e.g. ``"3.6.1"``) without importing MNN.

    >>> mnn_version()  # doctest: +SKIP
    '3.6.1'
    """
    try:
        return importlib.metadata.version("MNN")
    except importlib.metadata.PackageNotFoundError:
        raise ToolError("MNN: not installed. pip install MNN==3.6.1, then re-run.") from None


def convert_onnx_to_mnn(
    onnx_path: PathLike,
    mnn_path: PathLike,
    fp16: bool = False,
    weight_quant_bits: int | None = None,
    hqq: bool = False,
    extra_args: Sequence[str] = (),
) -> None:
    """Convert an ONNX model to MNN, writing ``mnn_path`` atomically.

    The MNN model keeps the ONNX input layout (NCHW; ``--keepInputFormat`` is the default) and
    its dynamic axes. If the graph contains ``Erf`` (exact GELU), ``--useGeluApproximation 0``
    is added: MNN's default tanh approximation costs 0.02-0.03 max abs error (PROBE.md).

    Args:
        onnx_path: source ``.onnx`` file.
        mnn_path: destination ``.mnn`` file; left untouched on failure.
        fp16: store weights as float16 (``--fp16``; halves the size).
        weight_quant_bits: weight-only quantization bits, 2-8 (``--weightQuantBits``).
        hqq: use HQQ for weight quantization (``--hqq``); needs ``weight_quant_bits``. PROBE.md:
            v4 det breaks with plain 8-bit weights and survives with HQQ.
        extra_args: further converter flags, appended last.

    Raises:
        ToolError: the source is missing, or the converter crashed or wrote nothing.
        ConfigError: ``hqq`` without ``weight_quant_bits``, or bits outside 2-8.
    """
    src = Path(onnx_path)
    if not src.is_file():
        raise ToolError(f"{src}: not found, nothing for mnnconvert to convert. Run dvc repro export_onnx first.")
    if weight_quant_bits is not None and not 2 <= weight_quant_bits <= 8:
        raise ConfigError(f"weight_quant_bits={weight_quant_bits}: MNN supports 2-8 bits. Use 8 (or None for float).")
    if hqq and weight_quant_bits is None:
        raise ConfigError("hqq=True: HQQ is a weight-quantization method. Set weight_quant_bits (e.g. 8) too.")

    args = ["-f", "ONNX", "--modelFile", str(src), "--bizCode", "ocrslim"]
    if fp16:
        args.append("--fp16")
    if weight_quant_bits is not None:
        args += ["--weightQuantBits", str(weight_quant_bits)]
    if hqq:
        args.append("--hqq")
    if "Erf" in onnx_op_types(src) and "--useGeluApproximation" not in extra_args:
        args += ["--useGeluApproximation", "0"]
    args += list(extra_args)

    with atomic_path(mnn_path) as tmp:
        _run_tool(
            "mnnconvert",
            [*args, "--MNNModel", str(tmp)],
            output=tmp,
            subject=src,
            fix="Re-export the ONNX file, or replace the op named above with one MNN supports",
        )
        _stable_uuid(tmp)


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _stable_uuid(path: Path) -> None:
    """Replace the random UUID MNN's tools write into every model with one derived from the model's bytes.

    MNNConvert and mnnquant stamp each file with a fresh ``uuid4`` (36 ASCII bytes near the start), so the same
    ONNX converted twice gave two files; the stamp becomes ``uuid5`` of the file's sha256 with the stamp blanked,
    same length, so equal models are equal files. A file with no stamp, or more than one candidate, is left alone.
    """
    data = path.read_bytes()
    found = list(_UUID.finditer(data[:4096]))
    if len(found) != 1:
        return
    start, end = found[0].span()
    blank = data[:start] + b"0" * (end - start) + data[end:]
    stamp = str(uuid.uuid5(uuid.NAMESPACE_OID, hashlib.sha256(blank).hexdigest())).encode()
    path.write_bytes(data[:start] + stamp + data[end:])


def zoo_as_mnn(name: str) -> Path:
    """A registered teacher converted to MNN FP32 once, cached under ``$OCRSLIM_CACHE`` (default
    ``~/.cache/ocrslim``) by the ONNX file's hash, with a sidecar carrying its task and dictionary.

    >>> runner_file = zoo_as_mnn("ppocrv4_mobile_det")  # doctest: +SKIP
    """
    from ocrslim.core.artifacts import onnx_characters, sidecar_path
    from ocrslim.core.fsutil import sha256_file, write_json
    from ocrslim.models.registry import lookup, teacher_onnx_path

    entry = lookup(name, "teacher", what="model")
    onnx_path = teacher_onnx_path(name)
    cache = Path(os.environ.get("OCRSLIM_CACHE", Path.home() / ".cache" / "ocrslim"))
    dest = cache / "mnn" / f"{name}-{sha256_file(onnx_path)[:16]}.mnn"
    if not dest.is_file() or not sidecar_path(dest).is_file():
        convert_onnx_to_mnn(onnx_path, dest)
        meta: dict[str, Any] = {"task": entry.task, "source": name}
        if entry.task == "rec":
            meta["characters"] = onnx_characters(onnx_path) or []
        write_json(sidecar_path(dest), meta)
    return dest


def open_model_on(spec: str, task: str, backend: str | None = None, **kwargs: Any) -> Any:
    """:func:`ocrslim.infer.pipeline.open_model` with ``backend="mnn"`` too: a registered teacher is converted
    once (:func:`zoo_as_mnn`) and its MNN file opened; files run in the runtime their suffix names."""
    from ocrslim.infer.pipeline import open_model
    from ocrslim.models.registry import REGISTRY

    if backend == "mnn":
        if spec in REGISTRY:
            spec = str(zoo_as_mnn(spec))
        backend = None
    return open_model(spec, task, backend=backend, **kwargs)


def quantize_mnn(src_mnn: PathLike, dst_mnn: PathLike, config: dict[str, Any]) -> None:
    """Quantize an MNN model to INT8 with ``mnnquant``, writing ``dst_mnn`` atomically.

    Args:
        src_mnn: float ``.mnn`` model.
        dst_mnn: destination; left untouched on failure.
        config: mnnquant's JSON config (``format``, ``mean``, ``normal``, ``width``, ``height``,
            ``path``, ``used_image_num``, ``feature_quantize_method``, ...). Build it from the
            same ``PreprocessConfig`` the torch transforms use: a wrong mean/normal quietly
            yields garbage (PROBE.md).

    Raises:
        ArtifactError: ``src_mnn`` or the calibration folder ``config["path"]`` is missing.
        ToolError: mnnquant crashed (it segfaults on SE blocks, GELU, ReduceMean) or wrote nothing.
    """
    src = Path(src_mnn)
    if not src.is_file():
        raise ArtifactError(f"{src}: not found, nothing for mnnquant to quantize. Run dvc repro convert_mnn first.")
    config = dict(config)
    if "path" in config:
        calib = Path(config["path"])
        if not calib.is_dir():
            raise ArtifactError(f"{calib}: calibration folder not found. Create it (dvc repro) or fix quant path.")
        config["path"] = str(calib)  # JSON needs a string; MNN 3.6.1 takes it with or without "/"

    with atomic_path(dst_mnn) as tmp:
        config_path = tmp.with_name("quant_config.json")
        config_path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        _run_tool(
            "mnnquant",
            [str(src), str(tmp), str(config_path)],
            output=tmp,
            subject=src,
            fix="Keep the failing ops float (skip_quant_op_names) or try feature_quantize_method EMA; see PROBE.md",
        )
        _stable_uuid(tmp)


def mnn_graph(mnn_path: PathLike) -> dict[str, Any]:
    """Read an MNN model's graph: its ops (name, type, input/output tensor names) without the weights.

    MNN op names are what ``skip_quant_op_names`` takes; they differ from the tensor (variable)
    names ``MNN.expr.load_as_list`` shows where the converter fused ops (a Conv+Relu op is named
    after the Conv's output, its output tensor after the Relu's). Dumps the model with the
    converter (``-f MNN --JsonFile``) in a child process and keeps only the graph.

    Returns:
        ``{"ops": [{"name", "type", "inputs", "outputs", "weights", "nonfinite_scales"}, ...], "inputs": [...],
        "outputs": [...]}`` with ops in execution order and tensor names in ``inputs``/``outputs``;
        ``weights`` counts the op's float parameters (conv weight/bias, norm gamma/beta, a Const's values);
        ``nonfinite_scales`` is True for a quantized op with NaN/inf weight scales (mnnquant 3.6.1 writes
        NaN for an all-zero output channel, and the NaN then blanks the whole output).

    Raises:
        ArtifactError: ``mnn_path`` is missing.
        ToolError: the converter cannot read it.
    """
    src = Path(mnn_path)
    if not src.is_file():
        raise ArtifactError(f"{src}: not found, no MNN graph to read. Run dvc repro convert first.")
    with tempfile.TemporaryDirectory(prefix="ocrslim_mnn_graph.") as tmp_dir:
        dump_path = Path(tmp_dir) / "graph.json"
        _run_tool(
            "mnnconvert",
            ["-f", "MNN", "--modelFile", str(src), "--JsonFile", str(dump_path), "--bizCode", "ocrslim"],
            output=dump_path,
            subject=src,
            fix="Re-convert the model with this MNN version",
        )
        # Quantized models can hold NaN weight scales, which the dump writes as bare nan/inf.
        text = _NONFINITE_RE.sub(_json_constant, dump_path.read_text(encoding="utf-8"))
        dump = json.loads(text)
    names = dump.get("tensorName", [])

    def tensors(indexes: list[int] | None) -> list[str]:
        return [names[i] for i in indexes or [] if 0 <= i < len(names)]

    ops = [
        {"name": op.get("name", ""), "type": op.get("type", ""),
         "inputs": tensors(op.get("inputIndexes")), "outputs": tensors(op.get("outputIndexes")),
         "weights": _weight_count(op), "nonfinite_scales": _nonfinite_quant_scales(op)}
        for op in dump.get("oplists", [])
    ]
    inputs = [t for op in ops if op["type"] == "Input" for t in op["outputs"]]
    return {"ops": ops, "inputs": inputs, "outputs": list(dump.get("outputName", []))}


_NONFINITE_RE = re.compile(r"(?<=[\s,\[:])-?(?:nan|inf)\b")


def _json_constant(match: re.Match[str]) -> str:
    return {"nan": "NaN", "-nan": "NaN", "inf": "Infinity"}.get(match.group(0), "-Infinity")


def _weight_count(op: dict[str, Any]) -> int:
    """Float parameters an op stores (conv/deconv weight and bias, LayerNorm gamma/beta, Const data)."""
    main = op.get("main")
    if not isinstance(main, dict):
        return 0
    return sum(len(main.get(k) or []) for k in ("weight", "bias", "gamma", "beta", "float32s"))


def _nonfinite_quant_scales(op: dict[str, Any]) -> bool:
    """True if the op's weight-quantization parameters (``alpha``, ``scaleIn``, ``scaleOut``) hold NaN/inf."""
    quant = (op.get("main") or {}).get("quanParameter") if isinstance(op.get("main"), dict) else None
    if not isinstance(quant, dict):
        return False
    values = list(quant.get("alpha") or []) + [quant.get("scaleIn", 0.0), quant.get("scaleOut", 0.0)]
    return any(isinstance(v, float) and not math.isfinite(v) for v in values)


def onnx_op_types(onnx_path: PathLike) -> set[str]:
    """Return the op types in an ONNX graph and its subgraphs/functions; empty if unreadable.

    Unreadable files are left for the converter to reject with its own message.
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except (DecodeError, OSError, ValueError):
        return set()

    ops: set[str] = set()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            ops.add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    visit(attr.g)
                for sub in attr.graphs:
                    visit(sub)

    visit(model.graph)
    for func in model.functions:
        ops.update(node.op_type for node in func.node)
    return ops


def _child_command(tool: str, args: Sequence[str]) -> list[str]:
    # -P: keep ocrslim/export (which holds onnx.py) off sys.path, so nothing gets shadowed and
    # the child skips importing the ocrslim package (and torch) altogether.
    return [sys.executable, "-P", str(_TOOL_SCRIPT), tool, *args]


def _run_tool(tool: str, args: Sequence[str], output: Path, subject: Path, fix: str) -> str:
    """Run ``tool`` in a child process; return its output, or raise ``ToolError`` unless it wrote ``output``."""
    if importlib.util.find_spec("_tools") is None:
        raise ToolError(f"{tool}: the MNN wheel's _tools module is not importable. pip install MNN==3.6.1, re-run.")
    output.unlink(missing_ok=True)  # the tools return True on failure: only a fresh file counts
    proc = subprocess.run(
        _child_command(tool, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        check=False,
    )
    if proc.returncode == 0 and output.is_file() and output.stat().st_size > 0:
        return proc.stdout
    raise ToolError(_failure_message(tool, subject, proc.returncode, proc.stdout, fix))


def _failure_message(tool: str, subject: Path, returncode: int, log: str, fix: str) -> str:
    """One line: ``<subject>: <tool> <crashed with SIGSEGV|exited with code 1|wrote no output file> (...). <fix>.``"""
    if returncode < 0:
        try:
            how = f"crashed with {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"crashed with signal {-returncode}"
    elif returncode > 0:
        how = f"exited with code {returncode}"
    else:
        how = "wrote no output file"
    last = _last_relevant_line(log)
    detail = f" (last output: {last!r})" if last else ""
    return f"{subject}: {tool} {how}{detail}. {fix}."


def _last_relevant_line(log: str, limit: int = 200) -> str:
    """The tool's last error line, else its last line of any kind, without the log prefix."""
    lines = []
    for raw in log.splitlines():
        # Progress bars redraw with \r; keep the last frame.
        line = _PREFIX_RE.sub("", raw.rsplit("\r", 1)[-1]).strip()
        if line and not _NOISE_RE.match(line):
            lines.append(line)
    errors = [line for line in lines if _ERROR_RE.search(line) and not _GENERIC_RE.match(line)]
    pick = errors[-1] if errors else (lines[-1] if lines else "")
    return pick if len(pick) <= limit else pick[: limit - 3] + "..."
