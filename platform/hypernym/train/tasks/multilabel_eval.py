"""A multi-label model's scores over a whole prepared split, in one process.

Registration (the per-class thresholds on the card) and the evaluation report
(`hypernym.transfer.evaluation`) read a split the way validation does: the task's own
evaluation codec (`hypernym.data.multilabel.MultiLabelCodec`, the whole image resized) through
the project's reader.
"""

from __future__ import annotations

import numpy as np
import torch

from hypernym.data.manifest import Manifest
from hypernym.data.multilabel import MultiLabelCodec
from hypernym.errors import HypernymError

__all__ = ["score_split"]


@torch.no_grad()
def score_split(model: torch.nn.Module, manifest: Manifest, root: str, split: str, *,
                img_size: int, mean, std, batch_size: int = 64, num_workers: int = 0,
                device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(targets bool [N, C], sigmoid scores float32 [N, C]) of ``model`` over ``split``.

    Raises:
        HypernymError: the split is empty, the dataset has no annotations, or the model does
            not have one output per class.
    """
    from hypernym.data.reader import make_loader

    classes = len(manifest.classes)
    if manifest.num_samples(split) == 0:
        raise HypernymError(f"dataset {manifest.name!r} has no samples in split {split!r}; its "
                            f"splits: {', '.join(manifest.splits) or 'none'}")
    if not (manifest.stats or {}).get("annotations"):
        raise HypernymError(f"dataset {manifest.name!r} has one class per image and no "
                            "annotations: a multi-label model is evaluated on a dataset "
                            "prepared from an annotated source (docs/annotations.md)")
    outputs = getattr(model, "num_classes", classes)
    if outputs != classes:
        raise HypernymError(f"the model has {outputs} outputs but dataset {manifest.name!r} has "
                            f"{classes} classes: evaluate it on the dataset it was trained for")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = model.to(dev).eval()
    shift = torch.tensor(mean, device=dev).view(1, 3, 1, 1) * 255
    scale = torch.tensor(std, device=dev).view(1, 3, 1, 1) * 255
    loader = make_loader(manifest, root, split, rank=0, world_size=1, epoch=0,
                         batch_size=batch_size, img_size=img_size, train=False,
                         num_workers=num_workers,
                         codec=MultiLabelCodec(classes, img_size=img_size, train=False))
    targets, scores = [], []
    for batch in loader:
        images = (batch.image.to(dev).float() - shift) / scale
        scores.append(torch.sigmoid(model(images).float()).cpu())
        targets.append(batch.target > 0.5)
    return torch.cat(targets).numpy(), torch.cat(scores).numpy()
