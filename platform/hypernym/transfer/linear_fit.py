"""The linear probes' solver, shared by the single-label (`hypernym.transfer.probe`) and the
multi-label (`hypernym.transfer.probe_multilabel`) logistic regressions.

Full-batch L-BFGS with a strong Wolfe line search on standardised features, in float64: the
solver scikit-learn uses for this problem, here in torch so the features never leave it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["fit_standardised_linear"]


def fit_standardised_linear(x: torch.Tensor, width: int,
                            data_loss: Callable[[torch.Tensor], torch.Tensor], *,
                            l2: float | None = None, max_iter: int = 200) -> torch.nn.Linear:
    """A linear layer of ``width`` outputs minimising ``data_loss(logits)`` + ``l2`` * |W|^2 / 2
    on standardised features (``l2`` None: 1 / N), by full-batch L-BFGS from zeros; the
    standardisation is folded into the returned float32 layer (apply it to raw features)."""
    l2 = 1.0 / len(x) if l2 is None else l2
    x = x.double()
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mu) / sd
    layer = torch.nn.Linear(z.shape[1], width, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight), torch.nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), lr=1, max_iter=max_iter,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                            tolerance_change=1e-10, history_size=20)

    def closure():
        opt.zero_grad()
        loss = data_loss(layer(z)) + 0.5 * l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    out = torch.nn.Linear(z.shape[1], width)
    with torch.no_grad():  # fold the standardisation into the layer
        weight = layer.weight / sd
        out.weight.copy_(weight.float()), out.bias.copy_((layer.bias - weight @ mu).float())
    return out
