"""Training jobs: datasets from gold at pinned Delta versions, fine-tuning, ONNX export,
MLflow registration behind the kernel's contamination rule (issue: training). Nothing is
built yet.
"""
