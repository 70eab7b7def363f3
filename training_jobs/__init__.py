"""Training jobs: datasets from gold at pinned Delta versions, teacher and distilled student per
model task, ONNX edge builds, MLflow registration behind the kernel's contamination rule.

Entry points: ``fieldloop train`` (:mod:`training_jobs.cli`), ``python -m training_jobs.train``
(also under ``torchrun``), and ``dags/fieldloop_train.py``; all three take a
:class:`~training_jobs.request.TrainRequest`. The job (:mod:`training_jobs.train`) plans,
reads, fits and publishes; its parts: :mod:`~training_jobs.data` (inputs),
:mod:`~training_jobs.holdout`, :mod:`~training_jobs.champion`, :mod:`~training_jobs.fit`
with :mod:`~training_jobs.distributed`, :mod:`~training_jobs.tasks` and
:mod:`~training_jobs.models`, :mod:`~training_jobs.export` (edge build and manifest),
:mod:`~training_jobs.publish` (MLflow); its errors are in :mod:`~training_jobs.errors`.
"""
