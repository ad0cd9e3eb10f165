"""Cheap transfer probes on frozen features: k-NN and a logistic-regression probe.

Features are a model's pooled pre-logits (timm's ``forward_head(pre_logits=True)``), extracted
once per split. k-NN follows DINO (Caron et al., 2021): cosine similarity, the k nearest training
features vote with weight exp(sim / T), T = 0.07. The linear probe is multinomial logistic
regression with an L2 penalty, fitted by full-batch L-BFGS in torch (scikit-learn is not a
dependency of the package). On a multi-label dataset both probes report mAP instead
(`hypernym.transfer.probe_multilabel`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hypernym.transfer.linear_fit import fit_standardised_linear

__all__ = ["compare_backbones", "extract_features", "extract_features_ray", "few_shot_indices",
           "fit_logistic_regression", "knn_accuracy", "linear_probe_accuracy", "load_split"]


def load_split(path: str, split: str, *, img_size: int | None = None
               ) -> tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor]:
    """A prepared split in memory: (images, labels), in manifest order.

    With ``img_size``, images are one uint8 tensor [N, 3, img_size, img_size] after the
    evaluation transform (shorter side to img_size / 0.875, centre crop); without, a list of the
    decoded images at their prepared size (for training-time crops). For small datasets.
    """
    from hypernym.data.manifest import read_manifest

    manifest = read_manifest(path)
    images, labels = [], []
    for url in manifest.shard_urls(path, split):
        shard_images, shard_labels = _read(url, img_size)
        images += shard_images
        labels += shard_labels
    if not labels:
        raise ValueError(f"{path} has no {split!r} samples; splits: {sorted(manifest.splits)}")
    stacked = torch.stack(images) if img_size is not None else images
    return stacked, torch.tensor(labels)


def _read(url: str, img_size: int | None, classes: int | None = None
          ) -> tuple[list[torch.Tensor], list]:
    """A shard's images and labels (with ``classes``: multi-hot targets, images resized whole
    as multi-label evaluation does)."""
    from hypernym.data.reader import read_members, read_shard
    from hypernym.data.transforms import decode, eval_transform

    if classes is not None:
        from hypernym.data.codec import RawSample
        from hypernym.data.multilabel import MultiLabelCodec

        codec = MultiLabelCodec(classes, img_size=img_size, train=False)
        pairs = [codec(RawSample(key, fields, 0, 0, url), None)
                 for key, fields in read_members(url, members=codec.members)]
        return [image for image, _ in pairs], [target for _, target in pairs]
    transform = eval_transform(img_size) if img_size is not None else None
    images, labels = [], []
    for data, label in read_shard(url):
        images.append(transform(data) if transform else decode(data, target=1 << 16))
        labels.append(label)
    return images, labels


def extract_features_ray(model: torch.nn.Module, path: str, split: str, *, img_size: int,
                         mean, std, cpus_per_task: float = 1,
                         classes: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of a prepared split, one Ray task per shard (the model is put in
    Ray's object store once). Same results as `extract_features` on `load_split`. With
    ``classes`` (a multi-label dataset), the labels are multi-hot rows [N, classes]."""
    import ray

    from hypernym.data.manifest import read_manifest
    from hypernym.runtime import ensure_ray

    ensure_ray()
    urls = read_manifest(path).shard_urls(path, split)
    if not urls:
        raise ValueError(f"{path} has no {split!r} shards")
    task = ray.remote(num_cpus=cpus_per_task)(_shard_features)
    model_ref = ray.put(model.eval())
    parts = ray.get([task.remote(model_ref, url, img_size, tuple(mean), tuple(std),
                                 max(int(cpus_per_task), 1), classes) for url in urls])
    return torch.cat([f for f, _ in parts]), torch.cat([y for _, y in parts])


def _shard_features(model, url: str, img_size: int, mean, std, threads: int,
                    classes: int | None = None):
    torch.set_num_threads(threads)  # a task has its CPUs; torch would take every core
    images, labels = _read(url, img_size, classes)
    features = extract_features(model, torch.stack(images), mean=mean, std=std)
    return features, torch.stack(labels) if classes is not None else torch.tensor(labels)


@torch.no_grad()
def extract_features(model: torch.nn.Module, images: torch.Tensor, *, mean, std,
                     batch_size: int = 256) -> torch.Tensor:
    """Pooled features [N, D] of uint8 images [N, 3, H, W] (model in eval mode, no grad).

    ``mean`` and ``std`` are per channel for 0-1 pixels (the model card's normalisation).
    """
    from hypernym.data.normalize import normalizer

    model.eval()
    normalize = normalizer(images.device, mean, std)
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size])
        out.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
    return torch.cat(out) if out else torch.empty(0)


def few_shot_indices(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """``shots`` indices per class, drawn without replacement by ``seed`` (sorted).

    Raises:
        ValueError: a class has fewer than ``shots`` samples.
    """
    gen = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < shots:
            raise ValueError(f"class {c} has {len(members)} samples, fewer than {shots} shots")
        picked.append(members[torch.randperm(len(members), generator=gen)[:shots]])
    return torch.sort(torch.cat(picked)).values


@torch.no_grad()
def knn_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, *, k: int = 20, temperature: float = 0.07,
                 chunk: int = 1024) -> float:
    """DINO's weighted k-NN top-1: cosine similarity, votes weighted by exp(sim / T)."""
    train_x, test_x = F.normalize(train_x.float(), dim=1), F.normalize(test_x.float(), dim=1)
    classes = int(max(train_y.max(), test_y.max())) + 1
    k = min(k, len(train_x))
    correct = 0
    for i in range(0, len(test_x), chunk):
        sim, idx = (test_x[i : i + chunk] @ train_x.T).topk(k, dim=1)
        votes = torch.zeros(len(sim), classes).scatter_add_(
            1, train_y[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == test_y[i : i + chunk]).sum())
    return correct / max(len(test_x), 1)


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, *, l2: float | None = None,
                            max_iter: int = 200) -> torch.nn.Linear:
    """Multinomial logistic regression: mean cross-entropy + ``l2`` * |W|^2 / 2, on standardised
    features. ``l2`` None is 1 / N, which is scikit-learn's default (C = 1) for N samples.

    Full-batch L-BFGS (strong Wolfe line search), the solver scikit-learn uses for this problem.
    The returned layer includes the standardisation (apply it to raw features).
    """
    return fit_standardised_linear(x, int(y.max()) + 1, lambda logits: F.cross_entropy(logits, y),
                                   l2=l2, max_iter=max_iter)


@torch.no_grad()
def linear_probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                          test_y: torch.Tensor, *, l2: float | None = None) -> float:
    """Top-1 of a logistic-regression probe fitted on (train_x, train_y)."""
    with torch.enable_grad():
        layer = fit_logistic_regression(train_x, train_y, l2=l2)
    return float((layer(test_x.float()).argmax(1) == test_y).float().mean())


def compare_backbones(refs: list[str], dataset: str, *, shots: int | None = None,
                      seeds: int = 3, ks: tuple[int, ...] = (10, 20), img_size: int | None = None,
                      settings=None) -> list[dict]:
    """k-NN and linear-probe top-1 on ``dataset``'s val split for each registered model and for
    random init of each architecture among them (always a row, timm's init, torch seed 0). On a
    multi-label dataset: their mAP (`hypernym.transfer.probe_multilabel`).

    Features of every split are extracted once per model, on Ray (`extract_features_ray`).
    With ``shots``, the probes see ``shots`` training samples per class, drawn by seeds
    0..``seeds``-1; without, the whole train split once.

    Returns:
        One dict per model: ``model``, ``seconds`` (extraction) and, per probe (``knn@K``,
        ``linear``), the top-1 of every seed.
    """
    import time

    import timm

    from hypernym.data.manifest import read_manifest
    from hypernym.registry.models import load_backbone
    from hypernym.transfer import probe_multilabel as ml

    if not refs:
        raise ValueError("give at least one registered model to probe")
    candidates = [(ref, load_backbone(ref, num_classes=0, settings=settings)) for ref in refs]
    card = candidates[0][1].hypernym_card
    for arch in dict.fromkeys(m.hypernym_card.arch for _, m in candidates):
        torch.manual_seed(0)
        name = f"random init ({arch})" if len(candidates) > 1 else "random init"
        candidates.append((name, timm.create_model(arch, pretrained=False, num_classes=0)))
    size = img_size or card.input_size[-1]
    classes = ml.multi_label_classes(read_manifest(dataset))
    draw = ml.few_shot_multilabel if classes else few_shot_indices
    knn = ml.knn_map if classes else knn_accuracy
    linear = ml.linear_probe_map if classes else linear_probe_accuracy
    rows = []
    for name, model in candidates:
        norm = getattr(model, "hypernym_card", card)
        started = time.perf_counter()
        train_x, train_y = extract_features_ray(model, dataset, "train", img_size=size,
                                                mean=norm.mean, std=norm.std, classes=classes)
        val_x, val_y = extract_features_ray(model, dataset, "val", img_size=size,
                                            mean=norm.mean, std=norm.std, classes=classes)
        row = {"model": name, "seconds": time.perf_counter() - started}
        for seed in range(seeds if shots else 1):
            idx = draw(train_y, shots, seed) if shots else slice(None)
            x, y = train_x[idx], train_y[idx]
            for k in ks:
                row.setdefault(f"knn@{k}", []).append(knn(x, y, val_x, val_y, k=k))
            row.setdefault("linear", []).append(linear(x, y, val_x, val_y))
        rows.append(row)
    return rows
