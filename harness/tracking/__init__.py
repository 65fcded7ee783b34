"""Optional experiment tracking (MLflow): see :mod:`harness.tracking.mlflow_callback`."""

from harness.tracking.mlflow_callback import MlflowTracking, log_run

__all__ = ["MlflowTracking", "log_run"]
