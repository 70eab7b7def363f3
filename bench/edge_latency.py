"""Edge models: one-core batch-1 latency of the student (PyTorch, ONNX fp32, ONNX int8) against the teacher.

For each model task, a teacher is trained and a student distilled from it exactly as the
training job does (``training_jobs.train``: ``task.build``, ``task.calibrate`` with
normalization, ``fit`` of the teacher's ``Objective``, ``task.after_teacher``, ``fit`` of
the student's, the job's seed, batch size, learning rate and threads, one process), but
on synthetic gold rows (``training_jobs.synthetic``) and without MLflow. The teacher and
student phases' training throughput is recorded (samples = epochs x rows).

Then the process is pinned to ONE CPU (the first one it may use), torch to one thread,
ONNX Runtime sessions to one intra-op thread (``export.session``), and each variant is
called ``--runs`` times with one real input row at a time, cycling through the rows
(``export.latency_us``, after a warm-up), numpy in and numpy out:

* baseline: the PyTorch teacher, eager, under ``torch.inference_mode()``;
* the PyTorch student, eager, the same way;
* the student exported to ONNX fp32 (``export.export_onnx``), in ONNX Runtime;
* that file quantized to int8 (``export.quantize_int8``), in ONNX Runtime.

Printed per task: p50 and p99 (µs) and their ratios to the baseline's (below 1 is
faster), the ONNX files' sizes, parameter counts, and each student variant's largest
|difference| from the PyTorch student's outputs over all rows.

Usage: .venv/bin/python bench/edge_latency.py [--task vehicle-longitudinal] [--devices 60 --frames 250]
       [--epochs 3] [--runs 5000] [--json PATH]
Needs no running service; writes the ONNX files under a temp directory, removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch

from fieldloop.config import load_config
from training_jobs.distributed import Dist
from training_jobs.export import INPUT_NAME, export_onnx, latency_us, quantize_int8, session
from training_jobs.fit import Objective, fit
from training_jobs.models import parameter_count
from training_jobs.synthetic import features_and_labels
from training_jobs.tasks import TASKS, Task

TASK_NAMES = ("vehicle-longitudinal", "plant-anomaly")


# training ----------------------------------------------------------------------------------
def train(
    task: Task,
    x: np.ndarray,
    y: np.ndarray,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
) -> tuple[torch.nn.Module, torch.nn.Module, dict[str, float]]:
    """The job's teacher-then-student sequence (``training_jobs.train.train``) without MLflow; seconds per phase."""
    torch.manual_seed(seed)
    dist = Dist()
    teacher, student = task.build(x.shape[1])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    task.calibrate(teacher, student, xt, normalization=True)

    def quiet(_epoch: int, _loss: float) -> None:
        pass

    t0 = time.perf_counter()
    teacher_losses = fit(
        Objective(lambda m, _, xb, yb: task.teacher_loss(m, xb, yb), teacher),
        xt,
        yt,
        epochs,
        batch,
        lr,
        seed,
        dist,
        quiet,
    )
    t1 = time.perf_counter()
    task.after_teacher(teacher, student, xt)
    teacher.eval()
    t2 = time.perf_counter()
    student_losses = fit(
        Objective(task.student_loss, student, teacher), xt, yt, epochs, batch, lr, seed + 1, dist, quiet
    )
    t3 = time.perf_counter()
    student.eval()
    return (
        teacher,
        student,
        {
            "teacher_s": t1 - t0,
            "after_teacher_s": t2 - t1,
            "student_s": t3 - t2,
            "teacher_final_loss": teacher_losses[-1],
            "student_final_loss": student_losses[-1],
        },
    )


# latency -----------------------------------------------------------------------------------
def torch_runner(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """One call as the edge would make it: a numpy row in, a numpy row out (call under inference_mode)."""
    return lambda row: model(torch.from_numpy(row)).numpy()


def ort_runner(sess: Any) -> Callable[[np.ndarray], np.ndarray]:
    return lambda row: sess.run(None, {INPUT_NAME: row})[0]


def timed(run: Callable[[np.ndarray], Any], x: np.ndarray, runs: int, warmup: int) -> tuple[float, float]:
    """p50, p99 (µs) by ``export.latency_us`` after ``warmup`` untimed calls of its own."""
    for i in range(warmup):
        run(x[i % len(x) : i % len(x) + 1])
    return latency_us(run, x, runs)


def pin_one_core() -> int:
    """The whole process (every thread it has; later ones inherit it) on its first allowed CPU; torch on 1 thread."""
    cpu = min(os.sched_getaffinity(0))
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that just ended
            os.sched_setaffinity(int(tid), {cpu})
    torch.set_num_threads(1)
    return cpu


def load() -> str:
    """The machine's 1/5/15-minute load averages: other work on the cores shows here, not in the timings' labels."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


# reporting ---------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "cores_allowed": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def fmt(v: float | int | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_task(r: dict[str, Any]) -> None:
    t = r["training"]
    print(
        f"\n== {r['task']}: {r['rows']:,} rows x {r['features']} features, {r['epochs']} epochs, "
        f"batch {r['batch_size']}, lr {r['learning_rate']}, {r['train_threads']} training thread(s)"
    )
    print(f"{'training (samples = epochs x rows)':<44}{'s':>9}{'samples/s':>12}{'ratio':>8}")
    print(f"{'baseline: teacher phase':<44}{t['teacher_s']:>9.2f}{t['teacher_samples_per_s']:>12,.0f}{'':>8}")
    print(
        f"{'student phase (distillation) / teacher':<44}{t['student_s']:>9.2f}{t['student_samples_per_s']:>12,.0f}"
        f"{t['student_s'] / t['teacher_s']:>8.2f}"
    )
    print(
        f"{'both, as the job reports it (2 x samples)':<44}{t['total_s']:>9.2f}{t['job_samples_per_s']:>12,.0f}{'':>8}"
    )
    print(f"  final loss: teacher {t['teacher_final_loss']:.5f}, student {t['student_final_loss']:.5f}")
    print(
        f"\nbatch-1 latency, 1 core (cpu {r['cpu']}), 1 thread, {r['runs']:,} calls over {r['latency_rows']:,} rows"
        f" after {r['warmup']:,} + 50 warm-up calls; ratio = variant / baseline (below 1 is faster); "
        f"load average {r['load_before']} before, {r['load_after']} after"
    )
    print(
        f"{'variant':<30}{'p50 µs':>9}{'p99 µs':>9}{'p50 x':>8}{'p99 x':>8}{'bytes':>10}{'params':>9}"
        f"{'max |Δ| vs student':>20}"
    )
    for v in r["variants"]:
        print(
            f"{v['variant']:<30}{v['p50_us']:>9.1f}{v['p99_us']:>9.1f}{v['p50_ratio']:>8.2f}{v['p99_ratio']:>8.2f}"
            f"{fmt(v['bytes'], ',d'):>10}{v['parameters']:>9,d}{fmt(v['max_abs_diff'], '.2e'):>20}"
        )


# main --------------------------------------------------------------------------------------
def train_task(name: str, args: argparse.Namespace, tmp: Path, train_cfg: Any) -> dict[str, Any]:
    """Rows, teacher and student trained as the job trains them (all cores, the job's threads), ONNX files."""
    task = TASKS[name]
    x, y = features_and_labels(name, args.devices, args.frames, args.seed)
    torch.set_num_threads(train_cfg.threads)
    teacher, student, t = train(task, x, y, args.epochs, train_cfg.batch_size, train_cfg.learning_rate, train_cfg.seed)
    samples = args.epochs * len(x)
    t.update(
        {
            "teacher_samples_per_s": samples / t["teacher_s"],
            "student_samples_per_s": samples / t["student_s"],
            "total_s": t["teacher_s"] + t["after_teacher_s"] + t["student_s"],
        }
    )
    t["job_samples_per_s"] = 2 * samples / t["total_s"]
    fp32 = export_onnx(student, x.shape[1], tmp / f"{name}.student.onnx")
    int8 = quantize_int8(fp32, tmp / f"{name}.student.int8.onnx")
    return {
        "task": name,
        "x": x,
        "teacher": teacher,
        "student": student,
        "files": {"fp32": fp32, "int8": int8},
        "result": {
            "task": name,
            "rows": len(x),
            "features": int(x.shape[1]),
            "epochs": args.epochs,
            "batch_size": train_cfg.batch_size,
            "learning_rate": train_cfg.learning_rate,
            "seed": train_cfg.seed,
            "train_threads": train_cfg.threads,
            "training": t,
        },
    }


def time_task(trained: dict[str, Any], args: argparse.Namespace, cpu: int) -> dict[str, Any]:
    """Batch-1 latency of the four variants (the process already pinned), sizes, parameters, deviations."""
    x, teacher, student, files = trained["x"], trained["teacher"], trained["student"], trained["files"]
    sessions = {k: session(path) for k, path in files.items()}
    # Latency cycles through real rows in a seeded random order (not one device's consecutive windows).
    order = np.random.default_rng(args.seed).permutation(len(x))[: args.latency_rows]
    xl = np.ascontiguousarray(x[order])
    load_before = load()
    with torch.inference_mode():
        reference = student(torch.from_numpy(x)).numpy()
        diffs = {
            "student": 0.0,
            **{k: float(np.abs(s.run(None, {INPUT_NAME: x})[0] - reference).max()) for k, s in sessions.items()},
        }
        lat = {
            "teacher": timed(torch_runner(teacher), xl, args.runs, args.warmup),
            "student": timed(torch_runner(student), xl, args.runs, args.warmup),
            "fp32": timed(ort_runner(sessions["fp32"]), xl, args.runs, args.warmup),
            "int8": timed(ort_runner(sessions["int8"]), xl, args.runs, args.warmup),
        }
    p_teacher, p_student = parameter_count(teacher), parameter_count(student)
    labels = {
        "teacher": "baseline: teacher, torch eager",
        "student": "student, torch eager",
        "fp32": "student, ONNX fp32 (ORT)",
        "int8": "student, ONNX int8 (ORT)",
    }
    base50, base99 = lat["teacher"]
    variants = []
    for key, (p50, p99) in lat.items():
        path = files.get(key)
        variants.append(
            {
                "variant": labels[key],
                "key": key,
                "p50_us": p50,
                "p99_us": p99,
                "p50_ratio": p50 / base50,
                "p99_ratio": p99 / base99,
                "bytes": path.stat().st_size if path else None,
                "parameters": p_teacher if key == "teacher" else p_student,
                "max_abs_diff": diffs.get(key),
            }
        )
    return {
        **trained["result"],
        "cpu": cpu,
        "runs": args.runs,
        "warmup": args.warmup,
        "latency_rows": len(xl),
        "load_before": load_before,
        "load_after": load(),
        "variants": variants,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--task", choices=TASK_NAMES, action="append", help="model task to measure (repeatable); default: both"
    )
    parser.add_argument("--devices", type=int, default=60, help="synthetic vehicles / plant sensors")
    parser.add_argument(
        "--frames", type=int, default=250, help="frames per vehicle / readings per sensor (rows ~ devices x frames)"
    )
    parser.add_argument("--epochs", type=int, default=3, help="epochs for the teacher, then as many for the student")
    parser.add_argument("--runs", type=int, default=5000, help="timed batch-1 calls per variant")
    parser.add_argument("--warmup", type=int, default=500, help="untimed calls per variant before latency_us's own 50")
    parser.add_argument("--latency-rows", type=int, default=1000, help="distinct rows the timed calls cycle through")
    parser.add_argument("--seed", type=int, default=7, help="seed of the synthetic rows")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args()

    train_cfg = load_config().train
    torch.use_deterministic_algorithms(True)  # as the job does
    info = machine()
    command = shlex.join(sys.orig_argv)
    started = datetime.now(UTC)
    print(
        f"machine: {info['cpu']}, {info['cores']} cores ({info['cores_allowed']} allowed), python {info['python']}, "
        f"torch {info['torch']}, onnxruntime {info['onnxruntime']}, numpy {info['numpy']}"
    )
    print(f"command: cd {Path.cwd()} && {command}")
    print(f"started: {started:%Y-%m-%d %H:%M:%S} UTC, load average {load()}")

    results = []
    with tempfile.TemporaryDirectory(prefix="fieldloop-bench-edge-") as tmp:
        # Every task trains first, as the job would (all allowed cores); only then is the process pinned.
        trained = [train_task(name, args, Path(tmp), train_cfg) for name in args.task or TASK_NAMES]
        cpu = pin_one_core()
        for t in trained:
            results.append(time_task(t, args, cpu))
    for r in results:
        print_task(r)
    elapsed = (datetime.now(UTC) - started).total_seconds()
    print(f"\ntotal {elapsed:.0f}s, load average at the end {load()}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "command": command,
                    "cwd": str(Path.cwd()),
                    "started_utc": started.isoformat(),
                    "elapsed_s": elapsed,
                    "tasks": results,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
