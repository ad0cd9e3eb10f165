"""Process-level setup shared by every entry point: Ray start-up and quiet logging.

Ray and MLflow are chatty (actor-state polling, repeated deprecation warnings, per-worker log
prefixes). A user sees hypernym's own progress; everything else goes to a log file under the
hypernym home directory, and to the terminal too with ``--verbose``.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

from hypernym.settings import Settings, get_settings, redact_secrets

__all__ = ["configure_logging", "ensure_ray", "is_verbose", "log_file", "route_library_logs"]

_NOISY = ("ray", "mlflow", "alembic", "urllib3", "botocore", "s3fs", "fsspec", "py.warnings")
_state: dict[str, object] = {"verbose": False, "log_file": None}


class _Redacting(logging.Formatter):
    """Every record, traceback included, without secret values (a library may put a URL with
    a password, or a key, into a message): what hypernym writes never holds a credential."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_secrets(super().format(record))


def is_verbose() -> bool:
    return bool(_state["verbose"])


def log_file() -> Path | None:
    return _state["log_file"]  # type: ignore[return-value]


def configure_logging(*, verbose: bool = False, settings: Settings | None = None) -> Path:
    """Send library logs to ``<home>/logs/hypernym.log``; to the terminal only when verbose.

    Returns:
        The log file's path.
    """
    settings = settings or get_settings()
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    path = settings.logs_dir / "hypernym.log"
    _state.update(verbose=verbose, log_file=path)

    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for handler in list(root.handlers):
        if getattr(handler, "_hypernym", False):
            root.removeHandler(handler)
    file_handler = logging.FileHandler(path)
    file_handler.setFormatter(_Redacting("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    file_handler._hypernym = True  # type: ignore[attr-defined]
    root.addHandler(file_handler)
    if verbose:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.INFO)
        console.setFormatter(_Redacting())
        console._hypernym = True  # type: ignore[attr-defined]
        root.addHandler(console)

    logging.captureWarnings(True)  # warnings become log records: file always, terminal if verbose
    route_library_logs()
    if not verbose:
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        # Read by Ray and by the processes it starts; set before ray.init.
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # MLflow probes for git on import
    return path


def route_library_logs() -> None:
    """Send Ray's and MLflow's records through our handlers (call again after importing them:
    both install their own terminal handlers and stop propagation on import)."""
    verbose = is_verbose()
    for name in _NOISY:
        lib = logging.getLogger(name)
        lib.handlers = [
            h for h in lib.handlers
            if not isinstance(h, logging.StreamHandler) or isinstance(h, logging.FileHandler)
        ]
        lib.propagate = True
        lib.setLevel(logging.INFO if verbose else logging.WARNING)


def ensure_ray(*, settings: Settings | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``RAY_ADDRESS`` if set, else start (or reuse) a local Ray instance.

    Worker output is forwarded to the terminal only with ``--verbose``; it is always in Ray's own
    session logs (``/tmp/ray/session_latest/logs``) and hypernym's log file gets Ray's records.
    """
    import ray

    route_library_logs()
    if ray.is_initialized():
        return
    settings = settings or get_settings()
    verbose = is_verbose()
    kwargs: dict[str, object] = {
        "logging_level": logging.INFO if verbose else logging.WARNING,
        "log_to_driver": verbose,
        # Ray would add its own terminal handler; its records go to our handlers instead.
        "configure_logging": False,
    }
    if settings.ray_address:
        kwargs["address"] = settings.ray_address
    else:
        # "local": always a new Ray of our own. Without it ray.init() joins any cluster that
        # `ray start` left on this machine (another user's, another test's) when RAY_ADDRESS
        # is unset: the embedded default must never land on someone else's cluster.
        kwargs.update(address="local", include_dashboard=False, num_cpus=num_cpus)
    ray.init(**kwargs)
