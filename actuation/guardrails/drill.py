"""Drills: deliberately faulty candidates, to show what stops each one.

:func:`register_broken` makes one the guardrails refuse; :func:`register_miscalibrated` one they
pass and the field does not (a staged rollout's canary halts it).

:func:`register_broken` copies a registered version with its int8 ONNX graph edited so the
actuated outputs are multiplied by ``scale`` (a ``Mul`` after the graph's output), which
takes them out of their envelope. Its :class:`~fieldloop.registry.EdgeManifest` is made
consistent with the edited file (size, sha256 and the file's own self-test outputs), so the
device-side checks would accept it and only the guardrails stand in the way. The copy is a
new run in the same experiment (the source's lineage tags, with ``fieldloop.drill`` saying
what was done) registered as a new version under the ``candidate`` alias
(:func:`register_copy`, which takes any edit of the file).
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from actuation.contract import EDGE_VARIANT, load_runtime_limits
from actuation.guardrails import source
from fieldloop.registry import CANDIDATE, EDGE_ARTIFACT_DIR, EdgeManifest

if TYPE_CHECKING:
    from fieldloop.config import FieldloopConfig

DRILL_TAG = "fieldloop.drill"


def _after_output(src: Path, dest: Path, op: str, values: list[float]) -> Path:
    """``src`` with ``op`` (an ONNX binary operator) applied column-wise to its output with
    ``values``, written to ``dest``."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    out = graph.output[0].name
    raw = out + "_before_drill"
    for node in graph.node:
        node.output[:] = [raw if o == out else o for o in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(values, dtype=np.float32), f"drill_{op.lower()}"))
    graph.node.append(helper.make_node(op, [raw, f"drill_{op.lower()}"], [out], name=f"drill_{op.lower()}_outputs"))
    onnx.checker.check_model(model)
    onnx.save(model, str(dest))
    return dest


def scale_outputs(src: Path, dest: Path, factors: list[float]) -> Path:
    """``src`` with its output multiplied column-wise by ``factors``, written to ``dest``."""
    return _after_output(src, dest, "Mul", factors)


def raise_outputs(src: Path, dest: Path, exponents: list[float]) -> Path:
    """``src`` with each output column raised to its exponent (``x ** e``; 1.0 leaves a column as it was)."""
    return _after_output(src, dest, "Pow", exponents)


def _consistent(manifest: EdgeManifest, path: Path) -> EdgeManifest:
    from actuation.guardrails.runner import OnnxModel

    data = path.read_bytes()
    session = OnnxModel(path, tuple(manifest.outputs))._session
    # One batch, as a device self-tests (dynamic int8 scales activations per batch).
    outputs = session.run(None, {manifest.input_name: np.array(manifest.self_test_inputs, dtype=np.float32)})[0]
    build = manifest.builds[EDGE_VARIANT].model_copy(
        update={"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "self_test_outputs": outputs.tolist()}
    )
    return manifest.model_copy(update={"builds": {**manifest.builds, EDGE_VARIANT: build}})


def register_copy(
    cfg: FieldloopConfig, model: str, version: int | None, edit: Callable[[Path, Path], None], what: str
) -> int:
    """Register a copy of ``model`` (at ``version``, default ``@candidate``) whose int8 file is
    ``edit(original, dest)``'s, with its manifest made consistent; returns the new version
    (now ``@candidate``). ``what`` is recorded in the ``fieldloop.drill`` tag and the description."""
    import mlflow

    source.check_server(cfg.mlflow.uri)
    client = mlflow.MlflowClient(cfg.mlflow.uri)
    v = source.resolve(client, model, version)
    src_run = client.get_run(v.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        edge = source.download_edge(client, v.run_id, Path(tmp))
        edited = Path(tmp) / "edited.onnx"
        edit(edge.model_file, edited)
        edited.replace(edge.model_file)
        edge.manifest_file.write_text(_consistent(edge.manifest, edge.model_file).to_json())
        run = client.create_run(src_run.info.experiment_id, run_name=f"drill-{model}-v{v.version}")
        tags = {**v.lineage, DRILL_TAG: f"copy of v{v.version}: {what}"}
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value)
        client.log_artifacts(run.info.run_id, str(edge.model_file.parent), EDGE_ARTIFACT_DIR)
        # The copy read what the original read: the same Delta datasets, as inputs of its run.
        client.log_inputs(run.info.run_id, datasets=list(src_run.inputs.dataset_inputs))
        # A logged model of its own (MLflow 3 registers a LoggedModel of the version's run): the edited edge files.
        logged = client.create_logged_model(src_run.info.experiment_id, name="model", source_run_id=run.info.run_id)
        client.log_model_artifacts(logged.model_id, str(edge.model_file.parent))
        client.finalize_logged_model(logged.model_id, "READY")
        client.set_terminated(run.info.run_id)
    mv = client.create_model_version(
        model,
        f"models:/{logged.model_id}",
        run_id=run.info.run_id,
        tags=tags,
        description=f"drill: {tags[DRILL_TAG]}",
        model_id=logged.model_id,
    )
    client.set_registered_model_alias(model, CANDIDATE, mv.version)
    return int(mv.version)


def register_broken(cfg: FieldloopConfig, model: str, version: int | None = None, scale: float = 4.0) -> int:
    """Register a copy of ``model`` (at ``version``, default ``@candidate``) whose actuated
    outputs are ``scale`` times what they were; returns the new version (now ``@candidate``)."""
    import mlflow

    source.check_server(cfg.mlflow.uri)
    client = mlflow.MlflowClient(cfg.mlflow.uri)
    v = source.resolve(client, model, version)
    actuated = [o.name for o in load_runtime_limits(v.task).outputs]
    with tempfile.TemporaryDirectory() as tmp:
        outputs = source.download_edge(client, v.run_id, Path(tmp)).manifest.outputs
    factors = [scale if name in actuated else 1.0 for name in outputs]

    def edit(src: Path, dest: Path) -> None:
        scale_outputs(src, dest, factors)

    return register_copy(cfg, model, v.version, edit, f"actuated outputs ({', '.join(actuated)}) scaled by {scale}")


def register_miscalibrated(cfg: FieldloopConfig, model: str, version: int | None = None, exponent: float = 0.1) -> int:
    """Register a copy of ``model`` whose OOD score is miscalibrated: raised to ``exponent`` (< 1), so
    ordinary inputs score near the runtime threshold; returns the new version (``@candidate``).

    Its commands are the original's and the map is monotonic, so every offline check passes:
    the regression and envelope checks see the same commands, and the OOD checks judge how the
    score *ranks* shifted inputs against the holdout (AUROC, FPR at 95 % TPR), which a monotonic
    map leaves as it was. On a device the safety monitor compares the score with the release's
    threshold, so the copy falls back on inputs the original acts on: what a staged rollout's
    canary, compared with the champion's cohort, exists to catch. The default 0.1 takes the
    vehicle student's typical score (a holdout mean of 0.14) over the 0.8 threshold; 0.25 left
    most of the demo's frames under it (6 % fell back, and the canary did not see it).
    """
    import mlflow

    source.check_server(cfg.mlflow.uri)
    client = mlflow.MlflowClient(cfg.mlflow.uri)
    v = source.resolve(client, model, version)
    limits = load_runtime_limits(v.task)
    if not limits.ood_output:
        raise ValueError(f"task {v.task} has no OOD output to miscalibrate")
    with tempfile.TemporaryDirectory() as tmp:
        outputs = source.download_edge(client, v.run_id, Path(tmp)).manifest.outputs
    exponents = [exponent if name == limits.ood_output else 1.0 for name in outputs]

    def edit(src: Path, dest: Path) -> None:
        raise_outputs(src, dest, exponents)

    what = (
        f"OOD score ({limits.ood_output}) raised to the power {exponent}: same ranking, more inputs over the threshold"
    )
    return register_copy(cfg, model, v.version, edit, what)
