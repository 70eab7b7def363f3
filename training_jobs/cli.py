"""``fieldloop train``: one training job, in this process or across N under torchrun.

Heavy imports (torch, mlflow) stay inside the command so ``--help`` is instant.
"""

from __future__ import annotations

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

from fieldloop.console import config_of, console, stdout_for_json
from fieldloop.registry import LINEAGE_TAG_PREFIX
from training_jobs.errors import DistributedRunError
from training_jobs.request import TrainRequest, click_options

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
    tags = {k.removeprefix(LINEAGE_TAG_PREFIX): v for k, v in result["lineage_tags"].items()}
    out.print(
        f"  trained on {', '.join(result['inputs'])}; classes {tags.get('classes') or '-'}; "
        f"tenants {tags.get('tenants') or '-'}; contracts {tags.get('contracts')}"
    )
    rows, holdout = result["rows"], result["holdout"]
    out.print(
        f"  from {result['init']}; {rows['train']} training rows ({rows['train_devices']} devices), "
        f"{rows['holdout']} holdout rows ({rows['holdout_devices']} devices, frozen {holdout.get('frozen_at', '?')}); "
        f"git {tags.get('git_commit', '?')[:12]}"
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
@click_options
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes under torchrun (DDP over gloo on CPU).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON for scripts.")
@click.pass_context
def train(ctx: click.Context, nproc: int, as_json: bool, **options: Any) -> None:
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
    request = TrainRequest.from_options(options)
    if nproc == 1:
        from training_jobs.train import train as run_train

        echo = (lambda line: None) if as_json else console.print
        # With --json, stdout carries the JSON alone; what libraries print goes to stderr.
        with stdout_for_json(as_json):
            result = run_train(cfg, request, echo=echo)
        data = result.as_dict() if result else {}
    else:
        data = _torchrun(nproc, request, as_json)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        print_result(console, data)


def _torchrun(nproc: int, request: TrainRequest, quiet: bool) -> dict[str, Any]:
    """``request`` in ``nproc`` processes under torchrun; rank 0's result."""
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
            *request.to_argv(),
            f"--result-file={result_file}",
        ]
        # One thread per process: the machine's cores are shared among them.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "FIELDLOOP_TRAIN_THREADS": "1"}
        proc = subprocess.run(command, env=env, stdout=subprocess.DEVNULL if quiet else None)
        if proc.returncode != 0 or not result_file.exists():
            raise DistributedRunError(nproc, proc.returncode)
        return json.loads(result_file.read_text())
