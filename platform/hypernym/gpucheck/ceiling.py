"""The ceiling: training steps on synthetic tensors already on the device, so no data path is
in the way. The step is the training loop's: timm's model and AdamW (`create_optimizer_v2`),
bf16 autocast, channels_last, cross-entropy; eager, then compiled (``Module.compile``, as
``train.compile`` does)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ceiling"]


def ceiling(ctx) -> dict[str, Any]:
    """Images per second of the synthetic step, eager and compiled."""
    import torch

    cfg = ctx.config
    device = torch.device(ctx.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    out = {"arch": cfg.arch, "img_size": cfg.img_size, "batch_size": cfg.batch_size,
           "classes": cfg.classes, "compile_backend": cfg.compile_backend}
    for mode in ("eager", "compiled"):
        out[mode] = _measure(cfg, device, compiled=mode == "compiled")
        if device.type == "cuda":  # the next model starts from an empty device
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    return out


def _measure(cfg, device, *, compiled: bool) -> dict[str, Any]:
    import timm
    import timm.optim
    import torch

    model = timm.create_model(cfg.arch, num_classes=cfg.classes)
    model = model.to(device, memory_format=torch.channels_last)
    if compiled:
        model.compile(backend=cfg.compile_backend)
    optimizer = timm.optim.create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    x = torch.randn(cfg.batch_size, 3, cfg.img_size, cfg.img_size, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, cfg.classes, (cfg.batch_size,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    began = time.perf_counter()
    step()  # the first step compiles (or picks cuDNN's algorithms)
    sync()
    first = time.perf_counter() - began
    for _ in range(cfg.warmup_steps):
        step()
    sync()
    began = time.perf_counter()
    for _ in range(cfg.ceiling_steps):
        loss = step()
    sync()
    seconds = time.perf_counter() - began
    result = {"images_per_s": round(cfg.ceiling_steps * cfg.batch_size / seconds, 1),
              "first_step_s": round(first, 2), "steps": cfg.ceiling_steps,
              "loss": round(loss.item(), 4)}
    if device.type == "cuda":
        result["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result
