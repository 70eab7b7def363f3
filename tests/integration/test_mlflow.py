"""A run is logged and a model version registered with an alias on the real MLflow server."""

from __future__ import annotations

import uuid

import mlflow
import mlflow.pyfunc
from mlflow import MlflowClient

from fieldloop.classes import DataClass
from fieldloop.lineage import ModelLineage, TableLineage


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input * 2


def test_log_run_register_version_with_alias_and_lineage(mlflow_uri: str) -> None:
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_uri)
    client = MlflowClient(mlflow_uri)
    name = f"fieldloop.stack-check-{uuid.uuid4().hex[:6]}"
    mlflow.set_experiment("fieldloop-stack-tests")
    lineage = ModelLineage(
        [TableLineage("gold/frames", "/lake/gold/frames", 3, DataClass.PUBLIC, "vehicle-frames-public")]
    )
    with mlflow.start_run() as run:
        mlflow.log_param("seed", 7)
        for step, loss in enumerate([0.9, 0.5, 0.3]):
            mlflow.log_metric("loss", loss, step=step)
        info = mlflow.pyfunc.log_model(name="model", python_model=_Doubler(), input_example=pd.DataFrame({"x": [1.0]}))
    version = mlflow.register_model(info.model_uri, name, tags=lineage.to_mlflow_tags())
    client.set_registered_model_alias(name, "candidate", version.version)

    by_alias = client.get_model_version_by_alias(name, "candidate")
    assert by_alias.version == version.version
    assert by_alias.run_id == run.info.run_id
    assert ModelLineage.from_mlflow_tags(by_alias.tags).inputs == lineage.inputs
    assert client.get_run(run.info.run_id).data.metrics["loss"] == 0.3

    model = mlflow.pyfunc.load_model(f"models:/{name}@candidate")
    assert model.predict(pd.DataFrame({"x": [2.0]}))["x"].tolist() == [4.0]
