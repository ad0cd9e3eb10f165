"""Everything distributed in one module: seeding, the collectives the core uses, how the model
is spread over the workers (DDP or FSDP2), skipping the gradient sync inside an accumulation
group, and reaching the model inside its wrapper.

The collectives are no-ops in a single process (one worker, or tests without a process group),
so the core calls them unconditionally. The process group itself is Ray Train's (gloo or NCCL,
set up before the worker's function runs); nothing here imports Ray.

Initialisation: every rank builds its model from the same seed (`seed_everything(seed)`), then
reseeds with ``seed + rank`` for what must differ per rank (augmentation, Mixup draws, dropout).
DDP would broadcast rank 0's weights anyway, but FSDP2's ``fully_shard`` keeps each rank's own
shard of the weights it was given: with per-rank seeds a model trained from scratch would be
stitched together from a different random init on every rank.

DDP replicates the model, so rank 0's state dict is the checkpoint. FSDP2
(``torch.distributed.fsdp.fully_shard``) shards parameters, gradients and optimizer state, so
saving gathers full tensors from every rank (a collective: all ranks call ``state_dicts``) and
loading hands each rank the full dict to shard again. Either way a checkpoint holds plain full
tensors under the same keys, so a run may resume under the other strategy or another world size,
and registration reads it the same way.
"""

from __future__ import annotations

import random
from contextlib import contextmanager, nullcontext

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["all_gather", "all_reduce_sum", "any_rank", "is_distributed", "is_sharded",
           "load_state_dicts", "no_sync", "seed_everything", "shard_units", "state_dicts",
           "unwrap", "wrap_model"]


def seed_everything(seed: int) -> None:
    """Seed torch, numpy (timm's Mixup draws from it) and Python's ``random`` (the crops of a
    loader without worker processes)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (its state dict keys carry no ``module.`` prefix); a sharded
    (FSDP2) or plain model is its own."""
    return getattr(model, "module", model)


def no_sync(model: nn.Module, skip: bool):
    """A context that skips the gradient all-reduce when ``skip`` (the batches of an
    accumulation group but the last): DDP's ``no_sync``, FSDP2's gradient-sync switch."""
    if not skip:
        return nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        return _fsdp_no_sync(model)
    return nullcontext()  # one worker: nothing to sync


@contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def is_distributed() -> bool:
    """True inside a process group of more than one rank."""
    return dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks, in place (NCCL needs it on the training device)."""
    if is_distributed():
        dist.all_reduce(tensor)
    return tensor


def all_gather(obj) -> list:
    """Every rank's ``obj`` (a picklable object), in rank order; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any rank (a collective: every rank must call it)."""
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    if dist.is_initialized():
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The modules FSDP2 shards one by one: the entries of the model's outermost repeated
    containers (timm's ``blocks``, ``stages``, ``layer1``..), so only one unit's parameters are
    gathered at a time. The root is sharded last and holds what is left (stem, head)."""
    units: list[nn.Module] = []

    def visit(module: nn.Module) -> None:
        for child in module.children():
            if isinstance(child, nn.Sequential | nn.ModuleList) and len(child) > 1:
                units.extend(c for c in child if any(True for _ in c.parameters()))
            else:
                visit(child)

    visit(model)
    return units


def wrap_model(model: nn.Module, *, strategy: str, compile_model: bool,
               device: torch.device) -> nn.Module:
    """The model ready for training: moved to ``device``, compiled, and, in a process group of
    several ranks, wrapped for DDP or sharded with FSDP2. ``Module.compile`` compiles in place,
    so state dict keys stay plain."""
    model = model.to(device)
    if strategy == "fsdp" and is_distributed():
        from torch.distributed.fsdp import fully_shard

        for unit in shard_units(model):
            if compile_model:  # per unit, before sharding (torchtitan's order)
                unit.compile()
            fully_shard(unit)
        fully_shard(model)
        return model
    if compile_model:
        model.compile()
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device] if device.type == "cuda" else None  # CPU (gloo): no device ids
    return DistributedDataParallel(model, device_ids=ids, output_device=device if ids else None)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state dicts. For a sharded model every rank must
    call this; only rank 0 receives the tensors (on CPU), the others get empty dicts."""
    if not is_sharded(model):
        return unwrap(model).state_dict(), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer,
                          options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict,
                     optimizer_state: dict) -> None:
    """Load full state dicts (every rank reads the checkpoint; FSDP2 keeps its own shard)."""
    if not is_sharded(model):
        unwrap(model).load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state,
                   optim_state_dict=optimizer_state,
                   options=StateDictOptions(full_state_dict=True))
