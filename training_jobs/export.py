"""The edge build: the student as ONNX (fp32 and int8), checked against PyTorch, timed, described.

The edge agent runs ONNX Runtime, so what ships is the ONNX file, not the PyTorch module.
Each build is checked before it is logged: the fp32 export must give the PyTorch
student's outputs within ``FP32_TOLERANCE``; the int8 variant's largest deviation is
measured and recorded (quantization error is a property of the model, the guardrails
judge it). Latency is measured the way a device runs it: batch 1, one thread.

What a device needs to verify and self-test the build is the kernel's
:class:`~fieldloop.registry.EdgeManifest` (:func:`edge_manifest`), written as
``edge/manifest.json``: each file's size and sha256, its latency, and self-test vectors:
:data:`SELF_TEST_ROWS` holdout rows and *each file's own* outputs for them, computed here
with ONNX Runtime on that file. A device runs the rows through the file it loaded **as one
batch** (dynamic int8 quantizes activations with one scale per batch, so row by row gives
other outputs) and accepts the build if every output is within
:data:`SELF_TEST_TOLERANCE` of the expected one.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fieldloop.registry import EdgeBuild, EdgeManifest
from training_jobs.errors import ExportError

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "outputs"
FP32_TOLERANCE = 1e-4
LATENCY = "batch 1, one ONNX Runtime thread, through the Python API (its call overhead included)"
SELF_TEST_ROWS = 8
# A build's outputs on a device differ from the ones computed here only by how another CPU
# or ONNX Runtime build orders float operations (fp32: ~1e-6), or rounds an int8 product
# (dynamic quantization: one step of one activation, well under 1e-3 for these outputs).
# A wrong, truncated or mixed-up file is off by far more: outputs are m/s² and scores in
# [0, 1), and the guardrails judge model error in hundredths.
SELF_TEST_TOLERANCE = 1e-3


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


def self_test_rows(x: np.ndarray, n: int = SELF_TEST_ROWS) -> np.ndarray:
    """``n`` rows spread evenly over ``x`` (rows of many devices and times, not one device's first seconds)."""
    picked = np.unique(np.linspace(0, len(x) - 1, min(n, len(x))).round().astype(int))
    return np.ascontiguousarray(x[picked], dtype=np.float32)


def build_edge(
    student: nn.Module, x_check: np.ndarray, out_dir: Path, runs: int = 2000, self_test: np.ndarray | None = None
) -> dict[str, EdgeBuild]:
    """Export, quantize, check and time the student; returns ``{"fp32": ..., "int8": ...}``.

    Args:
        student: the network that ships.
        x_check: rows to compare the builds with PyTorch on (and to time them on).
        out_dir: where the ``.onnx`` files are written.
        runs: timed batch-1 calls per build.
        self_test: the manifest's self-test rows (default: :func:`self_test_rows` of ``x_check``);
            each build records its own outputs for them.

    Raises:
        ExportError: the fp32 export's outputs differ from PyTorch's by more than the tolerance.
    """
    import torch

    self_test = self_test_rows(x_check) if self_test is None else np.ascontiguousarray(self_test, dtype=np.float32)
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
            raise ExportError(label, diff, FP32_TOLERANCE)
        p50, p99 = latency_us(lambda row, s=sess: s.run(None, {INPUT_NAME: row}), x_check, runs)
        data = path.read_bytes()
        builds[label] = EdgeBuild(
            file=path.name,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            p50_us=p50,
            p99_us=p99,
            max_abs_diff=diff,
            max_abs_diff_per_output=per_output,
            self_test_outputs=sess.run(None, {INPUT_NAME: self_test})[0].tolist(),
        )
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


def edge_manifest(
    task: str, model: str, outputs: list[str], builds: dict[str, EdgeBuild], self_test: np.ndarray
) -> EdgeManifest:
    """The manifest of a model version's edge build (validated: every build answers every self-test row).

    Args:
        task, model: the model task and the registered model name.
        outputs: the student's output columns, in order.
        builds: :func:`build_edge`'s result.
        self_test: the rows the builds' ``self_test_outputs`` answer.
    """
    return EdgeManifest(
        task=task,
        model=model,
        input_name=INPUT_NAME,
        input_dim=self_test.shape[1],
        outputs=outputs,
        latency=LATENCY,
        self_test_inputs=self_test.tolist(),
        self_test_tolerance=SELF_TEST_TOLERANCE,
        builds=builds,
    )
