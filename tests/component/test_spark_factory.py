"""Sessions from the kernel's factory run Python code on workers with the project's interpreter."""

# no `from __future__ import annotations`: pandas_udf reads the real type hints
import sys

import pandas as pd


def worker_interpreter(ids: pd.Series) -> pd.Series:
    import sys as worker_sys

    return pd.Series([worker_sys.executable] * len(ids))


def test_python_workers_use_the_project_interpreter(spark) -> None:
    from pyspark.sql.functions import pandas_udf

    interpreter = pandas_udf(worker_interpreter, "string")
    seen = {r[0] for r in spark.range(4).select(interpreter("id")).collect()}
    assert seen == {sys.executable}
