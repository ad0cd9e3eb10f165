"""Writing one shard: the unit of work of preparation (one Ray task each).

A shard is built in memory, hashed, then stored under a temporary name and moved into place, with
a small record in ``_parts/`` that lets a rerun after a crash keep it. The record names the work
(a digest of the shard's items and image settings) and the shard's sha256: a rerun keeps a shard
only if both still match, and checks that inside the task, so the re-hashing is parallel too.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field

import webdataset as wds

from hypernym.data.boxes import AnnotationStats, ImageAnnotation, stored_boxes
from hypernym.data.images import BadImage, Geometry, process_image_geometry
from hypernym.data.manifest import ShardInfo
from hypernym.data.sources import Item, read_item
from hypernym.data.storage import join, open_fs

__all__ = ["PARTS_DIR", "ShardAnnotations", "ShardResult", "plan_digest", "reuse_finished",
           "write_shard"]

PARTS_DIR = "_parts"


@dataclass
class ShardResult:
    info: ShardInfo
    skipped: Counter = field(default_factory=Counter)
    bad_sources: Counter = field(default_factory=Counter)
    class_counts: Counter = field(default_factory=Counter)  # class index -> samples written
    reused: bool = False
    # Annotated datasets: what the written samples hold, and the boxes left out (by reason).
    annotations: AnnotationStats | None = None
    annotation_skipped: Counter = field(default_factory=Counter)


@dataclass(frozen=True)
class ShardAnnotations:
    """An annotated dataset's part of a shard task: each item's annotation (by key; an item
    without one has its class as its one label and no boxes), and whether samples go without
    ``cls`` (a multi-label dataset: some image has other than one label)."""

    by_key: dict[str, ImageAnnotation]
    multi_label: bool = False


def write_shard(
    *,
    items: list[Item],
    name: str,
    output: str,
    source: str,
    class_index: dict[str, int],
    size: int,
    resize: str,
    quality: int,
    annotations: ShardAnnotations | None = None,
) -> ShardResult:
    """Read, process and write ``items`` as the shard ``<output>/<name>``.

    A shard a previous run finished with the same work is kept as it is (see `reuse_finished`).
    Bad images are skipped and counted per reason; they never fail the task. With
    ``annotations``, each sample's json also holds its ``labels`` and its ``boxes`` in the
    stored image's pixels (data/boxes.py).
    """
    plan = plan_digest(items, class_index=class_index, size=size, resize=resize, quality=quality,
                       annotations=annotations)
    reused = reuse_finished(output, name, plan=plan)
    if reused is not None:
        return reused
    src_fs, _ = open_fs(source)
    out_fs, out_path = open_fs(output)
    result = ShardResult(info=ShardInfo(name=name, samples=0, bytes=0, sha256=""),
                         annotations=AnnotationStats() if annotations else None)
    handles: dict = {}
    buffer = io.BytesIO()
    try:
        # A fixed mtime makes shards byte-reproducible: a rerun's shard has the same sha256.
        with wds.TarWriter(buffer, mtime=0) as sink:
            for item in items:
                try:
                    raw = read_item(src_fs, item, handles)
                    jpeg, geometry = process_image_geometry(raw, size=size, resize=resize,
                                                            quality=quality)
                except Exception as exc:  # noqa: BLE001 - counted by reason, see _bad_reason
                    result.skipped[_bad_reason(exc)] += 1
                    result.bad_sources[item.source] += 1
                    continue
                sink.write(_sample(item, jpeg, geometry, class_index, annotations, result))
    finally:
        for fh in handles.values():
            fh.close()
    data = buffer.getvalue()
    result.info = ShardInfo(name=name, samples=result.info.samples, bytes=len(data),
                            sha256=hashlib.sha256(data).hexdigest())
    tmp = join(out_path, f".{name}.tmp")
    out_fs.pipe_file(tmp, data)
    out_fs.mv(tmp, join(out_path, name))
    record = {"plan": plan, "info": result.info.model_dump(), "skipped": dict(result.skipped),
              "bad": dict(result.bad_sources),
              "classes": {str(k): v for k, v in result.class_counts.items()}}
    if result.annotations is not None:
        record["annotations"] = result.annotations.to_record()
        record["annotation_skipped"] = dict(result.annotation_skipped)
    out_fs.pipe_file(join(out_path, PARTS_DIR, f"{name}.json"), json.dumps(record).encode())
    return result


def _bad_reason(exc: Exception) -> str:
    if isinstance(exc, BadImage):
        return exc.reason
    if isinstance(exc, (OSError, EOFError)):
        return "unreadable"
    # Decoders fail in many ways on hostile input (bombs, struct errors, ...); one image must
    # not fail 14M. A systematic bug still trips the bad budget, and the reason names it.
    return f"decode_error_{type(exc).__name__}"


def _sample(item: Item, jpeg: bytes, geometry: Geometry, class_index: dict[str, int],
            annotations: ShardAnnotations | None, result: ShardResult) -> dict:
    """One sample's members, counted in ``result``."""
    result.info.samples += 1
    meta: dict = {"class_id": item.class_id, "source": item.source.rsplit("/", 1)[-1]}
    sample = {"__key__": item.key, "jpg": jpeg}  # bytes: TarWriter stores them as they are
    if annotations is None:
        result.class_counts[class_index[item.class_id]] += 1
        sample["cls"] = str(class_index[item.class_id]).encode()
        sample["json"] = json.dumps(meta).encode()
        return sample
    found = annotations.by_key.get(item.key)
    labels = sorted({class_index[c] for c in (found.labels if found else (item.class_id,))})
    boxes = stored_boxes(found, geometry, class_index, result.annotation_skipped) if found \
        else []
    result.annotations.add(labels, boxes)
    result.class_counts.update(labels)
    if annotations.multi_label:
        del meta["class_id"]  # the item's group, not a class: only the labels say
    else:
        sample["cls"] = str(labels[0]).encode()
    meta.update(labels=labels, boxes=boxes, size=[geometry.out_width, geometry.out_height])
    sample["json"] = json.dumps(meta).encode()
    return sample


def plan_digest(items: list[Item], *, class_index: dict[str, int], size: int, resize: str,
                quality: int, annotations: ShardAnnotations | None = None) -> str:
    """What a shard is made of: its items (in order), their labels and the image settings."""
    content = {
        "items": [(i.class_id, class_index.get(i.class_id, -1), i.key, i.source, i.offset,
                   i.size) for i in items],
        "image": (size, resize, quality),
    }
    if annotations is not None:
        content["annotations"] = [repr(annotations.by_key.get(i.key)) for i in items]
        content["multi_label"] = annotations.multi_label
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()


def reuse_finished(output: str, name: str, *, plan: str) -> ShardResult | None:
    """A shard a previous run finished, if its record names the same work (``plan``) and the
    shard's bytes still match the recorded sha256."""
    fs, path = open_fs(output)
    record_path = join(path, PARTS_DIR, f"{name}.json")
    shard_path = join(path, name)
    if not (fs.exists(record_path) and fs.exists(shard_path)):
        return None
    try:
        record = json.loads(fs.cat_file(record_path))
        info = ShardInfo(**record["info"])
    except (ValueError, KeyError, TypeError):  # a damaged record: redo the shard
        return None
    if record.get("plan") != plan:  # another recipe or source wrote it: not this shard
        return None
    digest = hashlib.sha256()
    with fs.open(shard_path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != info.sha256:
        return None
    stats = record.get("annotations")
    return ShardResult(info=info, skipped=Counter(record["skipped"]),
                       bad_sources=Counter(record["bad"]), reused=True,
                       class_counts=Counter({int(k): v for k, v in record["classes"].items()}),
                       annotations=AnnotationStats.from_record(stats) if stats else None,
                       annotation_skipped=Counter(record.get("annotation_skipped", {})))
