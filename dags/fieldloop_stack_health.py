"""Stack health: checks, from inside Airflow, that the loop can run.

Validates the data contracts, checks that the lake is in an allowed region, and asks
the Kafka broker and the MLflow tracking server for an answer. Run it from the UI after
changing config or contracts; each task fails with the same one-line reason the CLI
gives (`fieldloop config check`, `fieldloop stack status`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task


@dag(
    dag_id="fieldloop_stack_health",
    description="Check the stack: contracts, lake residency, Kafka topics, MLflow experiments",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["fieldloop", "ops"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": pendulum.duration(seconds=10)},
)
def fieldloop_stack_health() -> None:
    @task
    def contracts() -> int:
        from fieldloop.config import load_config
        from fieldloop.contracts import load_contracts

        cfg = load_config()
        return len(load_contracts(cfg.contracts_dir, cfg.allowed_regions))

    @task
    def lake_residency() -> dict[str, str]:
        from fieldloop.config import load_config
        from fieldloop.residency import ResidencyGuard

        cfg = load_config()
        residency = ResidencyGuard.from_config(cfg).check(cfg.lake)
        return {"lake": residency.location, "region": residency.region}

    @task
    def kafka_topics() -> int:
        from kafka import KafkaAdminClient

        from fieldloop.config import load_config

        cfg = load_config()
        admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap_servers, request_timeout_ms=10000)
        try:
            return len(admin.list_topics())
        finally:
            admin.close()

    @task
    def mlflow_experiments() -> int:
        from mlflow import MlflowClient

        from fieldloop.config import load_config

        return len(MlflowClient(load_config().mlflow.uri).search_experiments(max_results=100))

    contracts()
    lake_residency()
    kafka_topics()
    mlflow_experiments()


fieldloop_stack_health()
