"""One actor of `hypernym distill store`: the teacher, loaded once, answering shard after shard.

`StoreWorker.run` reads a dataset shard, cuts every image's views (training shards: the N stored
crop boxes and flips; other splits: the evaluation crop), runs the teacher over them in batches,
keeps each answer's top-K per level, and writes the shard's sidecar. Decoding and cropping run on
``threads`` threads (PIL and torch release the GIL), so a GPU actor with several cores keeps its
GPU fed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch

from hypernym.data.reader import read_members
from hypernym.data.storage import join, open_fs
from hypernym.data.transforms import decode, eval_transform, jpeg_size
from hypernym.errors import HypernymError
from hypernym.train.distill.store_format import SidecarInfo, encode_sidecar, sidecar_name
from hypernym.train.distill.views import apply_view, draw_views

__all__ = ["PARTS_DIR", "ShardJob", "StoreWorker"]

PARTS_DIR = "_parts"


@dataclass(frozen=True)
class ShardJob:
    """One dataset shard to answer for: its split, name, URL, sha256, and the plan's digest."""

    split: str
    shard: str
    url: str
    sha256: str
    digest: str


class StoreWorker:
    """A Ray actor (also usable in a plain process): the teacher on this worker's device.

    Args:
        plan: the store's `hypernym.train.distill.store_job.StorePlan`.
        settings: where the registry is.
    """

    def __init__(self, plan, settings) -> None:
        from hypernym.registry.models import load_backbone

        torch.set_num_threads(plan.threads)
        self.plan = plan
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = load_backbone(plan.teacher.ref, settings=settings)
        if model.hypernym_card.weights_sha256 != plan.teacher.sha256:
            raise HypernymError(f"{plan.teacher.ref}'s weights changed since the store started")
        self.model = model.requires_grad_(False).to(self.device).eval()
        t = plan.teacher
        self.mean = torch.tensor(t.mean, device=self.device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(t.std, device=self.device).view(1, 3, 1, 1) * 255
        self.order = torch.tensor(t.order, device=self.device) if t.order else None
        self.levels = [torch.tensor(m, device=self.device) for m in plan.levels]
        self.pool = ThreadPoolExecutor(max_workers=plan.threads)
        self.evaluate = eval_transform(plan.img_size)

    def run(self, job: ShardJob) -> tuple[SidecarInfo, dict[str, float]]:
        """The shard's sidecar (kept from an earlier run when it matches), and where the time
        went (seconds: reading and cropping, the teacher, packing and writing)."""
        kept = _finished(self.plan.out, job)
        if kept is not None:
            return kept, {"reused_shards": 1.0}
        timings = {"crop_s": 0.0, "teacher_s": 0.0, "write_s": 0.0}
        train = job.split == "train"
        views = self.plan.views if train else 1
        per_batch = max(self.plan.batch_size // views, 1)
        keys, rows = [], []
        samples = iter(read_members(job.url, name=job.url, members=("jpg",)))
        while batch := list(islice(samples, per_batch)):
            t0 = time.perf_counter()
            cut = list(self.pool.map(lambda s: self._views(s, train), batch))
            # An image that does not decode gets no views (training skips it the same way).
            timings["skipped"] = timings.get("skipped", 0.0) + sum(c is None for c in cut)
            batch = [s for s, c in zip(batch, cut, strict=True) if c is not None]
            cut = [c for c in cut if c is not None]
            t1 = time.perf_counter()
            if not cut:
                continue
            probs, top1 = self._answer(torch.stack([image for images, _ in cut
                                                    for image in images]))
            t2 = time.perf_counter()
            rows.append(self._pack(probs, top1, [box for _, boxes in cut for box in boxes],
                                   views, train))
            keys += [key for key, _ in batch]
            timings["crop_s"] += t1 - t0
            timings["teacher_s"] += t2 - t1
            timings["write_s"] += time.perf_counter() - t2
        t0 = time.perf_counter()
        info = self._write(job, keys, rows)
        timings["write_s"] += time.perf_counter() - t0
        return info, timings

    def _views(self, sample, train: bool):
        key, fields = sample
        data = fields["jpg"]
        try:
            if not train:
                return [self.evaluate(data)], [None]
            image = decode(data, target=self.plan.img_size)
        except (OSError, ValueError):
            return None
        # The boxes are drawn on the file's own size (the decode may be a reduced one).
        width, height = jpeg_size(data) or (image.shape[-1], image.shape[-2])
        boxes = draw_views(key, height, width, views=self.plan.views, seed=self.plan.seed,
                           scale=self.plan.crop_scale)
        return [apply_view(image, box[:4], box[4], self.plan.img_size) for box in boxes], boxes

    @torch.no_grad()
    def _answer(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per level, (views x level classes) float32 probabilities of the teacher; and its
        top-1 class over all its logits (what validation compares the student's with)."""
        x = (images.to(self.device, non_blocking=True).float() - self.mean) / self.std
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.is_cuda)
        with autocast:
            logits = self.model(x).float()
        if self.order is not None:
            logits = logits[:, self.order]
        return ([torch.softmax(logits[:, members], dim=1) for members in self.levels],
                logits.argmax(dim=1))

    def _pack(self, probs: list[torch.Tensor], top1: torch.Tensor, boxes, views: int,
              train: bool) -> dict:
        """The batch's arrays, shaped [images, views, ...]."""
        prob, cls, rest, conf = [], [], [], []
        for p, members, k in zip(probs, self.levels, self.plan.topk, strict=True):
            top = p.topk(k, dim=1)
            prob.append(top.values)
            cls.append(members[top.indices])
            rest.append(1.0 - top.values.sum(dim=1, keepdim=True))
            # MIIL's confidence: the top 5% of the level (more than K classes on a big level)
            conf.append(p.topk(math.ceil(p.shape[1] / 20), dim=1).values.sum(dim=1,
                                                                              keepdim=True))
        n = len(boxes) // views
        dtype = np.uint16 if self.plan.class_dtype == "uint16" else np.int32

        def shaped(parts, kind):
            array = torch.cat(parts, dim=1).cpu().numpy().astype(kind)
            return array.reshape(n, views, *array.shape[1:])

        out = {"prob": shaped(prob, np.float16), "cls": shaped(cls, dtype),
               "rest": shaped(rest, np.float16)}
        if self.plan.kind == "semantic":
            out["conf"] = shaped(conf, np.float16)
        if train:
            box = np.asarray(boxes, dtype=np.uint16).reshape(n, views, 5)
            out.update(box=box[..., :4].copy(), flip=box[..., 4].astype(np.uint8))
        else:  # the evaluation crop's top-1, for the teacher-student agreement
            out["top1"] = top1.cpu().numpy().astype(dtype).reshape(n, views)
        return out

    def _write(self, job: ShardJob, keys: list[str], rows: list[dict]) -> SidecarInfo:
        arrays = {name: np.concatenate([row[name] for row in rows]) for name in rows[0]} \
            if rows else {}
        data = encode_sidecar(arrays, keys, shard=job.shard)
        name = sidecar_name(job.shard)
        info = SidecarInfo(shard=job.shard, name=name, samples=len(keys), bytes=len(data),
                           sha256=hashlib.sha256(data).hexdigest())
        fs, path = open_fs(self.plan.out)
        tmp = join(path, f".{name}.tmp")
        fs.pipe_file(tmp, data)
        fs.mv(tmp, join(path, name))
        record = {"digest": job.digest, "info": info.model_dump()}
        fs.pipe_file(join(path, PARTS_DIR, f"{name}.json"), json.dumps(record).encode())
        return info


def _finished(out: str, job: ShardJob) -> SidecarInfo | None:
    """A sidecar an earlier run of the same work finished, its bytes still as recorded."""
    fs, path = open_fs(out)
    name = sidecar_name(job.shard)
    record_path, sidecar = join(path, PARTS_DIR, f"{name}.json"), join(path, name)
    if not (fs.exists(record_path) and fs.exists(sidecar)):
        return None
    try:
        record = json.loads(fs.cat_file(record_path))
        info = SidecarInfo(**record["info"])
    except (ValueError, KeyError, TypeError):
        return None
    if record.get("digest") != job.digest:
        return None
    if hashlib.sha256(fs.cat_file(sidecar)).hexdigest() != info.sha256:
        return None
    return info
