"""One validation pass of one or more nets (the model and its EMA) for any task."""

from __future__ import annotations

import torch

from hypernym.train.distributed import any_rank

__all__ = ["validation_pass"]


@torch.no_grad()
def validation_pass(nets: dict[str, torch.nn.Module], loader, task, normalize, *, autocast,
                    device: torch.device, lockstep: bool = False,
                    img_size: int = 224) -> dict[str, float]:
    """The task's validation figures of each net, by metric prefix (``{"val": model,
    "val_ema": ema}`` gives ``val/top1`` and ``val_ema/top1``...), over one pass of ``loader``:
    the batches are decoded once for all of them. The nets are put in eval mode.

    The nets are unwrapped models: ranks may hold different numbers of validation batches, so
    DDP's forward (a collective) is not used. A sharded (FSDP) model's forward is a collective
    too: with ``lockstep`` every rank runs as many forwards as the busiest one, on a stand-in
    batch once its own batches are done.
    """
    meters = {name: task.meter(device) for name in nets}
    for net in nets.values():
        net.eval()
    batches = iter(loader)
    while True:
        batch = next(batches, None)
        if lockstep and not any_rank(batch is not None, device):
            break
        if batch is None:
            if not lockstep:
                break
            stand_in = torch.zeros(1, 3, img_size, img_size, dtype=torch.uint8)
            for net in nets.values():
                with autocast:
                    task.predict(net, normalize(stand_in))
            continue
        images = normalize(batch.image)
        target = task.target_to(batch.target, images.device)
        for name, net in nets.items():
            with autocast:
                outputs = task.predict(net, images)
            meters[name].update(outputs, target)
    return {f"{name}/{key}": value for name, meter in meters.items()
            for key, value in meter.compute().items()}
