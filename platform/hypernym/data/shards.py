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

from hypernym.data.images import BadImage, process_image
from hypernym.data.manifest import ShardInfo
from hypernym.data.sources import Item, read_item
from hypernym.data.storage import join, open_fs

__all__ = ["PARTS_DIR", "ShardResult", "plan_digest", "reuse_finished", "write_shard"]

PARTS_DIR = "_parts"


@dataclass
class ShardResult:
    info: ShardInfo
    skipped: Counter = field(default_factory=Counter)
    bad_sources: Counter = field(default_factory=Counter)
    class_counts: Counter = field(default_factory=Counter)  # class index -> samples written
    reused: bool = False


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
) -> ShardResult:
    """Read, process and write ``items`` as the shard ``<output>/<name>``.

    A shard a previous run finished with the same work is kept as it is (see `reuse_finished`).
    Bad images are skipped and counted per reason; they never fail the task.
    """
    plan = plan_digest(items, class_index=class_index, size=size, resize=resize, quality=quality)
    reused = reuse_finished(output, name, plan=plan)
    if reused is not None:
        return reused
    src_fs, _ = open_fs(source)
    out_fs, out_path = open_fs(output)
    skipped, bad_sources, class_counts, handles = Counter(), Counter(), Counter(), {}
    buffer, samples = io.BytesIO(), 0
    try:
        # A fixed mtime makes shards byte-reproducible: a rerun's shard has the same sha256.
        with wds.TarWriter(buffer, mtime=0) as sink:
            for item in items:
                try:
                    raw = read_item(src_fs, item, handles)
                    jpeg = process_image(raw, size=size, resize=resize, quality=quality)
                except BadImage as bad:
                    skipped[bad.reason] += 1
                    bad_sources[item.source] += 1
                    continue
                except (OSError, EOFError):
                    skipped["unreadable"] += 1
                    bad_sources[item.source] += 1
                    continue
                except Exception as exc:
                    # Decoders fail in many ways on hostile input (bombs, struct errors, ...);
                    # one image must not fail 14M. A systematic bug still trips the bad budget,
                    # and the reason names the exception.
                    skipped[f"decode_error_{type(exc).__name__}"] += 1
                    bad_sources[item.source] += 1
                    continue
                sink.write({
                    "__key__": item.key,
                    "jpg": jpeg,  # bytes: TarWriter stores them as they are, no re-encode
                    "cls": str(class_index[item.class_id]).encode(),
                    "json": json.dumps({"class_id": item.class_id,
                                        "source": item.source.rsplit("/", 1)[-1]}).encode(),
                })
                samples += 1
                class_counts[class_index[item.class_id]] += 1
    finally:
        for fh in handles.values():
            fh.close()
    data = buffer.getvalue()
    info = ShardInfo(name=name, samples=samples, bytes=len(data),
                     sha256=hashlib.sha256(data).hexdigest())
    tmp = join(out_path, f".{name}.tmp")
    out_fs.pipe_file(tmp, data)
    out_fs.mv(tmp, join(out_path, name))
    record = {"plan": plan, "info": info.model_dump(), "skipped": dict(skipped),
              "bad": dict(bad_sources), "classes": {str(k): v for k, v in class_counts.items()}}
    out_fs.pipe_file(join(out_path, PARTS_DIR, f"{name}.json"), json.dumps(record).encode())
    return ShardResult(info=info, skipped=skipped, bad_sources=bad_sources,
                       class_counts=class_counts)


def plan_digest(items: list[Item], *, class_index: dict[str, int], size: int, resize: str,
                quality: int) -> str:
    """What a shard is made of: its items (in order), their labels and the image settings."""
    payload = json.dumps({
        "items": [(i.class_id, class_index[i.class_id], i.key, i.source, i.offset, i.size)
                  for i in items],
        "image": (size, resize, quality),
    })
    return hashlib.sha256(payload.encode()).hexdigest()


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
    return ShardResult(info=info, skipped=Counter(record["skipped"]),
                       bad_sources=Counter(record["bad"]), reused=True,
                       class_counts=Counter({int(k): v for k, v in record["classes"].items()}))
