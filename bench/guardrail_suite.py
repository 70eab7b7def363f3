"""Guardrail suite: the time to judge one model, against a bare ONNX Runtime pass over the same scenarios.

Per model task, a teacher is trained and a student distilled from it as the training job does
(``task.build``, ``task.calibrate``, ``fit`` of each ``Objective``, the job's seed, batch size and
learning rate), on synthetic gold rows (``training_jobs.synthetic``), without MLflow; the student
is exported to ONNX and quantized to int8 (``training_jobs.export``), the file a device runs.
The last fifth of the devices are the holdout. Then, in one process, one ONNX Runtime thread:

* baseline: one bare pass of the int8 file, batch 1 (as the suite runs it), over the envelope
  scenarios' rows (``actuation.guardrails.scenarios.build``, 7 x ``envelope.rows``) with a
  session of its own;
* the whole suite (``actuation.guardrails.suite.run_suite``) under the task's real policy, for
  the task's fleets in ``actuation/fleets.toml``: regression, envelope (8 scenarios, steps),
  hypothesis properties, OOD, edge (its own p99 measurement), governance (facts given, no MLflow).

Printed per task: seconds of each, the ratio suite / bare pass, the suite's seconds per check
kind, and the checks that failed (a benchmark, not a gate: the synthetic student may fail some).
``--json PATH`` writes it all. No service needed.

Usage: .venv/bin/python bench/guardrail_suite.py [--task plant-anomaly] [--devices 30 --frames 200]
       [--epochs 3] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from actuation.contract import load_fleets
from actuation.guardrails import scenarios
from actuation.guardrails.checks.governance import Facts
from actuation.guardrails.policy import load_policy
from actuation.guardrails.runner import OnnxModel
from actuation.guardrails.suite import Subject, run_suite
from training_jobs.distributed import Dist
from training_jobs.export import export_onnx, quantize_int8
from training_jobs.fit import Objective, fit
from training_jobs.synthetic import PLANT_COLUMNS, VEHICLE_COLUMNS, plant_rows, vehicle_rows
from training_jobs.tasks import TASKS

TASK_NAMES = ("vehicle-longitudinal", "plant-anomaly")
TENANT = {"vehicle-longitudinal": None, "plant-anomaly": "acme-steel"}  # plant data is one tenant's


def rows(task: str, devices: int, frames: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic gold rows as the job reads them: features, labels, devices (sorted by device, then time)."""
    if task == "vehicle-longitudinal":
        data, columns = vehicle_rows(devices, frames, seed), VEHICLE_COLUMNS
    else:
        data, columns = plant_rows(devices, frames, seed), PLANT_COLUMNS
    task_layout = TASKS[task].layout
    f, lab, dev = (columns.index(c) for c in ("features", task_layout.label_column, task_layout.device_column))
    x = np.ascontiguousarray([r[f] for r in data], dtype=np.float32)
    return x, np.asarray([float(r[lab]) for r in data], np.float32), np.asarray([r[dev] for r in data], object)


def train_student(task_name: str, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 42) -> torch.nn.Module:
    """The job's teacher-then-student sequence without MLflow (batch 64, lr 3e-3, its defaults)."""
    task = TASKS[task_name]
    torch.manual_seed(seed)
    teacher, student = task.build(x.shape[1])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    task.calibrate(teacher, student, xt, normalization=True)

    def quiet(_epoch: int, _loss: float) -> None:
        pass

    fit(
        Objective(lambda m, _, xb, yb: task.teacher_loss(m, xb, yb), teacher),
        xt,
        yt,
        epochs,
        64,
        3e-3,
        seed,
        Dist(),
        quiet,
    )
    task.after_teacher(teacher, student, xt)
    teacher.eval()
    fit(Objective(task.student_loss, student, teacher), xt, yt, epochs, 64, 3e-3, seed + 1, Dist(), quiet)
    return student.eval()


def bench_task(task: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    x, y, devices = rows(task, args.devices, args.frames, args.seed)
    names = sorted(set(devices.tolist()))
    held = np.isin(devices, names[-max(1, len(names) // 5) :])
    student = train_student(task, x[~held], y[~held], args.epochs)
    int8 = quantize_int8(export_onnx(student, x.shape[1], tmp / f"{task}.onnx"), tmp / f"{task}.int8.onnx")
    policy = load_policy(task)
    fleets = [f for f in load_fleets().fleet if f.task == task and f.may_run(TENANT[task])]
    outputs = tuple(type(student).outputs)
    subject = Subject(
        task,
        TENANT[task],
        OnnxModel(int8, outputs),
        int8.stat().st_size,
        x[held],
        y[held],
        devices[held],
        fleets,
        Facts(artifact_location=str(tmp)),
    )
    scenario_rows = np.concatenate(
        list(scenarios.build(scenarios.Reference.of(x[held]), TASKS[task].layout, policy.rules.envelope).values())
    )
    bare, suite, result = [], [], None
    for _ in range(args.repeat):
        sess = OnnxModel(int8, outputs)  # a session of its own, as the suite's
        start = time.perf_counter()
        for i in range(len(scenario_rows)):
            sess.row(scenario_rows[i : i + 1])
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = run_suite(subject, policy)
        suite.append(time.perf_counter() - start)
    assert result is not None
    return {
        "task": task,
        "holdout_rows": int(held.sum()),
        "scenario_rows": len(scenario_rows),
        "bare_pass_s": bare,
        "suite_s": suite,
        "ratio_best": min(suite) / min(bare),
        "ratio_median": float(np.median(suite) / np.median(bare)),
        "suite_seconds_by_kind": result.seconds,
        "checks": len(result.checks),
        "failed": [
            f"{c.name}={c.value:.4g} {c.op} {c.limit:g}" if c.value is not None else c.name for c in result.failed
        ],
        "bytes": int8.stat().st_size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=TASK_NAMES, action="append")
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.task or TASK_NAMES:
            r = bench_task(task, args, Path(tmp))
            results.append(r)
            print(
                f"\n== {task}: {r['holdout_rows']:,} holdout rows, {r['scenario_rows']:,} scenario rows, "
                f"{r['checks']} checks, int8 {r['bytes']:,} bytes"
            )
            print(
                f"{'baseline: bare ONNX Runtime pass, batch 1':<46}{min(r['bare_pass_s']):>8.3f} s  "
                f"(runs {', '.join(f'{s:.3f}' for s in r['bare_pass_s'])})"
            )
            print(
                f"{'guardrail suite':<46}{min(r['suite_s']):>8.3f} s  "
                f"(runs {', '.join(f'{s:.3f}' for s in r['suite_s'])})"
            )
            print(f"{'ratio suite / bare (best; median)':<46}{r['ratio_best']:>8.1f}   {r['ratio_median']:.1f}")
            print(
                "  suite seconds by kind (last run): "
                + ", ".join(f"{k} {v:.2f}" for k, v in r["suite_seconds_by_kind"].items())
            )
            print(f"  failed checks of this synthetic student: {', '.join(r['failed']) or 'none'}")
    meta = {
        "command": shlex.join([sys.executable, *sys.argv]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "cores": os.cpu_count(),
        "load": os.getloadavg(),
    }
    print(f"\n{meta['command']} at {meta['when']}; load average {' '.join(f'{v:.2f}' for v in meta['load'])}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()
