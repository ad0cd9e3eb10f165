"""hypernym: pretrain image backbones at ImageNet-21K scale on Ray, transfer them to domain data."""

from __future__ import annotations

from hypernym.version import __version__

__all__ = ["__version__", "load_backbone"]


def __getattr__(name: str):
    # Lazy: `import hypernym` must stay cheap (the CLI imports it before parsing arguments),
    # while `hypernym.load_backbone` pulls in torch, timm and MLflow only when used.
    if name == "load_backbone":
        from hypernym.registry.models import load_backbone

        return load_backbone
    raise AttributeError(f"module 'hypernym' has no attribute {name!r}")
