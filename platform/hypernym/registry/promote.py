"""Move an alias (e.g. ``@champion``) to a version, optionally only if it is better.

The comparison reads the metric each version's run recorded in MLflow. For a version registered
with ``registry.select: best`` by that same metric, the selected epoch's value is used (the
weights are that epoch's, not the last one's).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from hypernym.errors import HypernymError
from hypernym.settings import Settings, get_settings

__all__ = ["Promotion", "promote"]


@dataclass(frozen=True)
class Promotion:
    """What `promote` did and why."""

    name: str
    alias: str
    candidate: int
    previous: int | None  # the version the alias pointed at before
    moved: bool
    metric: str | None = None
    candidate_value: float | None = None
    previous_value: float | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def _metric(version, metric: str, settings: Settings) -> float:
    selected_metric = version.tags.get("selected_metric")
    if selected_metric == metric and version.tags.get("selected_value"):
        return float(version.tags["selected_value"])
    if not version.run_id:
        raise HypernymError(f"{version.name} v{version.version} has no run: nothing recorded "
                            f"{metric} for it")
    from hypernym.tracking import run_summary

    metrics = run_summary(version.run_id, settings=settings).metrics
    if metric not in metrics:
        known = ", ".join(sorted(metrics)) or "none"
        raise HypernymError(f"{version.name} v{version.version}'s run {version.run_id} recorded "
                            f"no {metric!r}; it has: {known}")
    return float(metrics[metric])


def promote(ref: str, *, alias: str, if_better: str | None = None,
            mode: Literal["max", "min"] = "max",
            settings: Settings | None = None) -> Promotion:
    """Point ``NAME@alias`` at the version ``ref`` resolves to.

    Args:
        if_better: a metric recorded in both versions' runs (e.g. ``val/top1``): move only if
            the candidate's value is strictly better than the current holder's.
        mode: ``max`` when higher is better, ``min`` for losses.

    Raises:
        HypernymError: a bad reference or alias, or a metric a run did not record.
    """
    from mlflow.exceptions import MlflowException

    from hypernym.registry.models import parse_ref, resolve
    from hypernym.tracking._backend import client

    if alias == "latest" or (alias[:1] == "v" and alias[1:].isdigit()):
        raise HypernymError(f"alias {alias!r} is reserved by MLflow; pick another")
    settings = settings or get_settings()
    candidate = resolve(ref, settings=settings)
    name = parse_ref(ref).name
    c = client(settings.tracking_uri)
    if candidate.status != "READY":
        raise HypernymError(f"{name} v{candidate.version} is {candidate.status}, not READY")
    try:
        holder = c.get_model_version_by_alias(name, alias)
    except MlflowException:
        holder = None
    base = {"name": name, "alias": alias, "candidate": int(candidate.version),
            "previous": int(holder.version) if holder else None, "metric": if_better}
    if holder is not None and holder.version == candidate.version:
        return Promotion(**base, moved=False, reason=f"@{alias} already points at "
                         f"v{candidate.version}")
    if if_better and holder is not None:
        new = _metric(candidate, if_better, settings)
        old = _metric(holder, if_better, settings)
        better = new > old if mode == "max" else new < old
        base.update(candidate_value=new, previous_value=old)
        if not better:
            return Promotion(**base, moved=False, reason=(
                f"v{candidate.version} {if_better} {new:.4f} is not "
                f"{'higher' if mode == 'max' else 'lower'} than @{alias} v{holder.version}'s "
                f"{old:.4f}"))
        reason = (f"v{candidate.version} {if_better} {new:.4f} beats @{alias} "
                  f"v{holder.version}'s {old:.4f} ({mode})")
    elif if_better:
        base.update(candidate_value=_metric(candidate, if_better, settings))
        reason = f"no version held @{alias}"
    else:
        reason = "unconditional"
    c.set_registered_model_alias(name, alias, candidate.version)
    return Promotion(**base, moved=True, reason=reason)
