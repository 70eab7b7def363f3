"""``fieldloop train``: one training job, in this process or across N under torchrun.

Heavy imports (torch, mlflow) stay inside the command so ``--help`` is instant.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from fieldloop.console import config_of, console
from fieldloop.errors import FieldloopError
from training_jobs.tasks import TASKS

# Metrics shown in the summary (all of them are in MLflow), with how to print them.
_SHOWN = {
    "holdout_rmse_teacher": "{:.4f}",
    "holdout_rmse_student": "{:.4f}",
    "holdout_rmse_persistence": "{:.4f}",
    "holdout_ood_rate": "{:.3f}",
    "holdout_reconstruction_error": "{:.4f}",
    "holdout_auroc_teacher": "{:.3f}",
    "holdout_auroc_student": "{:.3f}",
    "holdout_score_mae_student_vs_teacher": "{:.4f}",
    "first_epoch_loss": "{:.4f}",
    "train_samples_per_s": "{:,.0f}",
}


def print_result(out: Console, result: dict[str, Any]) -> None:
    """The model version, what it was made from, how it did, and its edge build."""
    if result.get("uri"):
        out.print(f"[bold]{result['model_name']}[/] v{result['version']} registered: [bold]{result['uri']}[/]")
    else:
        out.print(f"[bold]{result['model_name']}[/]: trained, not registered (run {result['run_id']})")
    tags = result["lineage_tags"]
    out.print(
        f"  trained on {', '.join(result['inputs'])}; classes {tags.get('fieldloop.lineage.classes') or '-'}; "
        f"tenants {tags.get('fieldloop.lineage.tenants') or '-'}; contracts {tags.get('fieldloop.lineage.contracts')}"
    )
    rows, holdout = result["rows"], result["holdout"]
    out.print(
        f"  from {result['init']}; {rows['train']} training rows ({rows['train_devices']} devices), "
        f"{rows['holdout']} holdout rows ({rows['holdout_devices']} devices, frozen {holdout.get('frozen_at', '?')}); "
        f"git {tags.get('fieldloop.lineage.git_commit', '?')[:12]}"
    )
    table = Table(title_justify="left", box=None, padding=(0, 2))
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, fmt in _SHOWN.items():
        if key in result["metrics"]:
            table.add_row(key, fmt.format(result["metrics"][key]))
    out.print(table)
    for label, build in result["edge"].items():
        out.print(
            f"  edge {label}: {build['file']} {build['bytes'] / 1024:.1f} KiB, batch 1 on one thread "
            f"p50 {build['p50_us']:.1f} µs, p99 {build['p99_us']:.1f} µs, "
            f"max |Δ| vs PyTorch {build['max_abs_diff']:.1e}"
        )


@click.command()
@click.option("--task", required=True, type=click.Choice(sorted(TASKS)), help="Model task to train.")
@click.option(
    "--tenant",
    default=None,
    metavar="ID",
    help="Train the tenant's model fieldloop.<task>.<tenant> (its own data plus public); default: the base model.",
)
@click.option(
    "--table",
    "tables",
    multiple=True,
    metavar="NAME[@VERSION]",
    help="Gold table to train on, optionally pinned (repeatable); default: every gold table of the task the "
    "model may use, at its latest version.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=None,
    help="Epochs for teacher and student (FIELDLOOP_TRAIN_EPOCHS).",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed (FIELDLOOP_TRAIN_SEED).")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes under torchrun (DDP over gloo on CPU).",
)
@click.option("--no-register", is_flag=True, help="Train and log the run, but register no model version.")
@click.option("--from-scratch", is_flag=True, help="Ignore the champion's weights.")
@click.option(
    "--reset-holdout",
    is_flag=True,
    help="Freeze a new holdout (later metrics are then not comparable with earlier ones).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON for scripts.")
@click.pass_context
def train(
    ctx: click.Context,
    task: str,
    tenant: str | None,
    tables: tuple[str, ...],
    epochs: int | None,
    seed: int | None,
    nproc: int,
    no_register: bool,
    from_scratch: bool,
    reset_holdout: bool,
    as_json: bool,
) -> None:
    """Fine-tune a model task from gold Delta tables and register it in MLflow as the candidate.

    Inputs are pinned to their current Delta versions and checked against the data rules
    before anything is read: restricted data trains only its own tenant's model, secret
    data trains nothing. The teacher starts from the champion's weights when there is
    one; a small student is distilled from it and exported to ONNX (fp32 and int8) for
    devices. The version gets its lineage as tags and the `candidate` alias.

    \b
    Examples:
      fieldloop train --task vehicle-longitudinal
      fieldloop train --task vehicle-longitudinal --tenant acme-mobility
      fieldloop train --task plant-anomaly --tenant acme-steel --nproc 2
    """
    cfg = config_of(ctx)
    if nproc == 1:
        from training_jobs.train import TrainRequest
        from training_jobs.train import train as run_train

        request = TrainRequest(task, tenant, tables, epochs, seed, not no_register, not from_scratch, reset_holdout)
        echo = (lambda line: None) if as_json else console.print
        # With --json, stdout carries the JSON alone; what libraries print goes to stderr.
        with contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext():
            result = run_train(cfg, request, echo=echo)
        data = result.as_dict() if result else {}
    else:
        data = _torchrun(nproc, task, tenant, tables, epochs, seed, no_register, from_scratch, reset_holdout, as_json)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        print_result(console, data)


def _torchrun(
    nproc: int,
    task: str,
    tenant: str | None,
    tables: tuple[str, ...],
    epochs: int | None,
    seed: int | None,
    no_register: bool,
    from_scratch: bool,
    reset_holdout: bool,
    quiet: bool,
) -> dict[str, Any]:
    args = ["--task", task]
    args += ["--tenant", tenant] if tenant else []
    for t in tables:
        args += ["--table", t]
    args += ["--epochs", str(epochs)] if epochs else []
    args += ["--seed", str(seed)] if seed is not None else []
    args += [
        flag
        for flag, on in (
            ("--no-register", no_register),
            ("--from-scratch", from_scratch),
            ("--reset-holdout", reset_holdout),
        )
        if on
    ]
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "training_jobs.train",
            *args,
            "--result-file",
            str(result_file),
        ]
        # One thread per process: the machine's cores are shared among them.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FIELDLOOP_TRAIN_THREADS": "1"}
        proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL if quiet else None)
        if proc.returncode != 0 or not result_file.exists():
            raise FieldloopError(
                f"torchrun with {nproc} processes failed (exit {proc.returncode}); the "
                "'error (rank N ...)' lines above say why (run without --json to see the ranks' logs)"
            )
        return json.loads(result_file.read_text())
