"""Which epoch's weights a run registers: the best epoch so far, by the recipe's metric.

``registry.select: best`` keeps, at each epoch end, the weights of the best epoch so far (the
model's or its EMA's, whichever `RegisterSpec.choose` picks for the epoch). These are pure
functions of the metrics, so every rank, holding the same all-reduced metrics, agrees.
"""

from __future__ import annotations

from typing import Any

from hypernym.errors import HypernymError

__all__ = ["beats", "epoch_choice"]


def epoch_choice(registry, metrics: dict[str, float], ema: bool) -> dict[str, Any]:
    """The weights this epoch offers (`RegisterSpec.choose`): ``{kind, metric, value,
    candidates}``.

    Raises:
        HypernymError: the recipe's ``registry.metric`` is not among the epoch's metrics.
    """
    choice = registry.choose(metrics, ema)
    if choice is None:
        wanted = sorted(registry.candidates(ema).values())
        raise HypernymError(
            f"registry.metric {', '.join(wanted)} is not among this run's epoch metrics "
            f"{sorted(k for k in metrics if k.startswith('val'))}: pick one of those")
    return choice


def beats(choice: dict[str, Any], best: dict[str, Any] | None, mode: str) -> bool:
    """Whether this epoch's choice beats the best so far (strictly: ties keep the earlier)."""
    if best is None:
        return True
    return choice["value"] > best["value"] if mode == "max" else choice["value"] < best["value"]
