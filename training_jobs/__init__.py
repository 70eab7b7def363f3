"""Training jobs: datasets from gold at pinned Delta versions, teacher and distilled student per
model task, ONNX edge builds, MLflow registration behind the kernel's contamination rule.

Entry points: ``fieldloop train`` (:mod:`training_jobs.cli`), ``python -m training_jobs.train``
(also under ``torchrun``), and ``dags/fieldloop_train.py``.
"""
