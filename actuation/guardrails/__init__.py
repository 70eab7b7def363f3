"""The guardrail suite: judges a registered model version before it may ship.

``fieldloop guardrail --model NAME`` (:mod:`actuation.guardrails.cli`) and :func:`judge` run
every check of the task's policy (``actuation/policies/<task>.toml``, :mod:`.policy`) on the
int8 ONNX file a device would run: regression on the frozen holdout, the safety envelope over
a scenario suite, properties searched with hypothesis, OOD separation, each target fleet's
edge budgets and governance. The verdict becomes the ``approved`` alias (or its removal),
``fieldloop.guardrail.*`` tags, a signed in-toto attestation, a report with plots and the
version's model card, all in MLflow.
"""
