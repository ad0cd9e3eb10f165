"""The MLflow client behind the two MLflow adapters, `hypernym.tracking` and `hypernym.registry`.

Private to those two parts (tests/unit/core/test_layout.py holds that no other part imports
it): everything else calls their public functions and never holds a client. MLflow is imported
here on first use, so ``import hypernym`` stays cheap.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["client", "fluent_uri", "mlflow_module"]


def mlflow_module():
    """The ``mlflow`` module, imported on first use with its terminal logging routed to ours."""
    import mlflow

    from hypernym.runtime import route_library_logs

    route_library_logs()  # MLflow adds its own terminal handler on import
    return mlflow


def client(tracking_uri: str):
    """An MlflowClient for ``tracking_uri`` (also the registry: embedded SQLite serves both)."""
    return mlflow_module().MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


@contextmanager
def fluent_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.pyfunc.log_model``, ``mlflow.artifacts``) at ``uri``
    for a block, then restore it.

    ``mlflow.set_tracking_uri`` also exports MLFLOW_TRACKING_URI, which would change this
    process's settings (and its children's) for good; everything else here passes URIs.
    """
    mlflow = mlflow_module()
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved)  # None unsets it again
