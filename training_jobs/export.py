"""The edge build: the student as ONNX (fp32 and int8), checked against PyTorch and timed.

The edge agent runs ONNX Runtime, so what ships is the ONNX file, not the PyTorch module.
Each build is checked before it is logged: the fp32 export must give the PyTorch
student's outputs within ``FP32_TOLERANCE``; the int8 variant's largest deviation is
measured and recorded (quantization error is a property of the model, the guardrails
judge it). Latency is measured the way a device runs it: batch 1, one thread.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fieldloop.errors import FieldloopError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "outputs"
FP32_TOLERANCE = 1e-4


class ExportError(FieldloopError):
    """The ONNX build does not reproduce the PyTorch model."""


@dataclass
class EdgeBuild:
    """One ONNX file and what was measured of it."""

    file: str
    bytes: int
    sha256: str
    p50_us: float
    p99_us: float
    max_abs_diff: float  # against the PyTorch student on the check inputs
    max_abs_diff_per_output: list[float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def export_onnx(model: nn.Module, dim: int, path: Path) -> Path:
    """One self-contained ``.onnx`` (weights inside) with a dynamic batch dimension."""
    import torch

    # Per-pass INFO lines and warnings about torchvision operators this model does not use.
    for name, level in (("onnx_ir", logging.WARNING), ("onnxscript", logging.WARNING), ("torch.onnx", logging.ERROR)):
        logging.getLogger(name).setLevel(level)
    model.eval()
    example = torch.zeros(2, dim)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_shapes={"x": {0: torch.export.Dim("batch")}},
        external_data=False,
        verbose=False,
    )
    return path


def quantize_int8(source: Path, dest: Path) -> Path:
    """Dynamic int8 quantization of the weights (activations quantized at run time)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(source))
    # The exporter records shapes of initializers; the quantizer transposes Gemm weights and
    # then fails re-inferring them, so let it infer every shape itself.
    del model.graph.value_info[:]
    plain = dest.with_suffix(".noinfo.onnx")
    onnx.save(model, str(plain))
    # The OOD score's Mahalanobis product stays in float: int8 precision would move the
    # score the guardrails threshold, and it saves nothing that matters at this size.
    keep_float = [n.name for n in model.graph.node if n.op_type == "MatMul" and "precision" in n.input]
    logging.disable(logging.WARNING)  # the quantizer logs advice for image models on the root logger
    try:
        quantize_dynamic(str(plain), str(dest), weight_type=QuantType.QInt8, nodes_to_exclude=keep_float)
    finally:
        logging.disable(logging.NOTSET)
        plain.unlink(missing_ok=True)
    return dest


def session(path: Path, threads: int = 1):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def latency_us(run, x: np.ndarray, runs: int) -> tuple[float, float]:
    """p50 and p99 of ``run(row)`` over ``runs`` calls cycling through the rows of ``x`` (µs)."""
    for i in range(min(50, runs)):  # warm-up
        run(x[i % len(x) : i % len(x) + 1])
    times = np.empty(runs)
    for i in range(runs):
        row = x[i % len(x) : i % len(x) + 1]
        start = time.perf_counter_ns()
        run(row)
        times[i] = time.perf_counter_ns() - start
    return float(np.percentile(times, 50) / 1e3), float(np.percentile(times, 99) / 1e3)


def build_edge(student: nn.Module, x_check: np.ndarray, out_dir: Path, runs: int = 2000) -> dict[str, EdgeBuild]:
    """Export, quantize, check and time the student; returns ``{"fp32": ..., "int8": ...}``.

    Raises:
        ExportError: the fp32 export's outputs differ from PyTorch's by more than the tolerance.
    """
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    # Checked on the given rows and on rows far from them, where scores like OOD matter most.
    x_check = np.ascontiguousarray(np.concatenate([x_check, x_check[:64] + 4 * x_check.std(0)]), dtype=np.float32)
    fp32 = export_onnx(student, x_check.shape[1], out_dir / "student.onnx")
    int8 = quantize_int8(fp32, out_dir / "student.int8.onnx")
    with torch.no_grad():
        expected = student(torch.from_numpy(x_check)).numpy()
    builds = {}
    for label, path in (("fp32", fp32), ("int8", int8)):
        sess = session(path)
        got = sess.run(None, {INPUT_NAME: x_check})[0]
        per_output = np.abs(got - expected).max(0).tolist() if len(x_check) else [0.0] * expected.shape[1]
        diff = float(max(per_output))
        if label == "fp32" and diff > FP32_TOLERANCE:
            raise ExportError(
                f"the ONNX student differs from PyTorch by {diff:.2e} (> {FP32_TOLERANCE}); "
                "the export is wrong, the run is marked failed and nothing was registered: "
                "check that the model's forward uses only operators ONNX export supports, "
                "with torch and onnxscript at the locked versions"
            )
        p50, p99 = latency_us(lambda row, s=sess: s.run(None, {INPUT_NAME: row}), x_check, runs)
        data = path.read_bytes()
        builds[label] = EdgeBuild(path.name, len(data), hashlib.sha256(data).hexdigest(), p50, p99, diff, per_output)
        logger.info(
            "edge %s: %s, %d bytes, p50 %.1f µs, p99 %.1f µs, max |Δ| vs PyTorch %.2e",
            label,
            path.name,
            len(data),
            p50,
            p99,
            diff,
        )
    return builds
