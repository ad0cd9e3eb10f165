"""The reader's contract on real (tiny) shards, in one process: every training rank yields exactly
``steps_per_epoch`` full batches whatever the shard sizes, world size, loader workers and bad
samples; evaluation reads every sample exactly once across ranks."""

from __future__ import annotations

import io
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from hypernym.data import reader
from hypernym.data.manifest import ClassInfo, Manifest, ShardInfo
from hypernym.data.reader import ShardStream, steps_per_epoch
from hypernym.errors import HypernymError

_JPEG = {}


def jpeg(shade: int) -> bytes:
    if shade not in _JPEG:
        out = io.BytesIO()
        Image.fromarray(np.full((10, 12, 3), shade, np.uint8)).save(out, "JPEG")
        _JPEG[shade] = out.getvalue()
    return _JPEG[shade]


def make_dataset(root, sizes: list[int], *, bad: set[int] = frozenset()) -> Manifest:
    """Shards of the given sizes; each sample's label is its global index (so coverage is
    exact), and the samples whose index is in ``bad`` hold bytes that are not an image."""
    root.mkdir(parents=True, exist_ok=True)
    infos, index = [], 0
    for s, size in enumerate(sizes):
        name = f"train-{s:06d}.tar"
        with wds.TarWriter(str(root / name)) as sink:
            for _ in range(size):
                data = b"not a jpeg" if index in bad else jpeg(index % 200)
                sink.write({"__key__": f"s{index}", "jpg": data, "cls": str(index).encode()})
                index += 1
        infos.append(ShardInfo(name=name, samples=size, bytes=0, sha256="-"))
    classes = [ClassInfo(index=i, id=f"c{i}", name=f"c{i}") for i in range(max(index, 1))]
    return Manifest(name="t", recipe={}, classes=classes, splits={"train": infos},
                    fingerprint="-")


def stream(manifest, root, *, rank, world, batch, train, epoch=0, progress=None):
    return ShardStream(urls=manifest.shard_urls(str(root), "train"),
                       sizes=[s.samples for s in manifest.splits["train"]], rank=rank,
                       world_size=world, epoch=epoch, seed=3, img_size=8, train=train,
                       batch_size=batch, buffer=4, progress=progress)


def labels_per_worker(manifest, root, monkeypatch, *, rank, world, batch, workers):
    """What each loader worker of a rank yields, simulated in this process."""
    out = []
    for w in range(workers):
        info = SimpleNamespace(id=w, num_workers=workers) if workers > 1 else None
        monkeypatch.setattr(reader, "get_worker_info", lambda info=info: info)
        out.append([label for _, label, _, _ in stream(manifest, root, rank=rank, world=world,
                                                    batch=batch, train=True)])
    return out


COMBOS = [  # shard sizes, world size, batch size, loader workers
    ([5], 1, 2, 1), ([5], 2, 2, 1), ([5], 3, 1, 2), ([3, 9, 1], 2, 3, 1), ([3, 9, 1], 4, 2, 2),
    ([7, 7, 7, 7], 3, 4, 3), ([2, 11, 0, 6, 9], 2, 5, 2), ([1] * 9, 4, 1, 1), ([12], 2, 4, 3),
]


@pytest.mark.parametrize("sizes,world,batch,workers", COMBOS)
def test_every_rank_yields_exactly_steps_full_batches(tmp_path, monkeypatch, sizes, world, batch,
                                                      workers):
    manifest = make_dataset(tmp_path, sizes, bad={1, 4})  # bad samples must not cost a batch
    steps = steps_per_epoch(manifest, "train", world_size=world, batch_size=batch)
    assert steps == sum(sizes) // (world * batch)
    seen = Counter()
    for rank in range(world):
        per_worker = labels_per_worker(manifest, tmp_path, monkeypatch, rank=rank, world=world,
                                       batch=batch, workers=workers)
        assert all(len(got) % batch == 0 for got in per_worker)  # drop_last drops nothing
        assert sum(len(got) for got in per_worker) == steps * batch
        seen.update(label for got in per_worker for label in got)
    assert not {1, 4} & set(seen)


def test_schedule_is_a_pure_function_and_changes_with_the_epoch(tmp_path):
    manifest = make_dataset(tmp_path, [6, 6, 6, 6])

    def labels(epoch):
        return [label for _, label, _, _ in stream(manifest, tmp_path, rank=1, world=2, batch=2,
                                                train=True, epoch=epoch)]

    assert labels(0) == labels(0)
    assert labels(0) != labels(1)


@pytest.mark.parametrize("sizes,world", [([5], 3), ([3, 9, 1], 2), ([2, 0, 6, 9], 3), ([4] * 5, 2)])
def test_evaluation_reads_every_sample_once(tmp_path, sizes, world):
    manifest = make_dataset(tmp_path, sizes, bad={2})
    got = [label for rank in range(world)
           for _, label, _, _ in stream(manifest, tmp_path, rank=rank, world=world, batch=2,
                                     train=False)]
    assert sorted(got) == [i for i in range(sum(sizes)) if i != 2]


def test_transforms_give_uint8_chw_batches(tmp_path):
    manifest = make_dataset(tmp_path, [9])
    sample, label, sample_id, skipped = next(iter(stream(manifest, tmp_path, rank=0, world=1,
                                                         batch=2, train=True)))
    assert sample.shape == (3, 8, 8) and str(sample.dtype) == "torch.uint8"
    assert isinstance(label, int) and skipped == 0
    assert sample_id == label  # the labels of these shards are the sample ids


def test_bad_samples_are_counted_and_an_unreadable_share_fails_instead_of_spinning(tmp_path):
    manifest = make_dataset(tmp_path / "some", [6], bad={0, 5})
    ds = stream(manifest, tmp_path / "some", rank=0, world=1, batch=2, train=True)
    got = list(ds)
    assert len(got) == 6  # 3 steps of 2: the 2 bad samples are made up by re-reading
    assert ds.bad_samples >= 2 and sum(s.skipped for s in got) == ds.bad_samples
    broken = make_dataset(tmp_path / "all", [4], bad={0, 1, 2, 3})
    with pytest.raises(HypernymError, match="no readable sample"):
        list(stream(broken, tmp_path / "all", rank=0, world=1, batch=2, train=True))


def test_an_s3_endpoint_that_refuses_connections_is_retried_then_named(monkeypatch, caplog):
    """botocore's connection errors are not OSErrors: they must be retried too (an S3 endpoint
    restarting), for ``_RETRY_S``, and then fail naming the shard and the attempts."""
    from tests.servers import free_port

    # a port nothing listens on: connections are refused
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries: off, for speed
    monkeypatch.setattr(reader, "_RETRY_S", 1.2)
    with pytest.raises(HypernymError, match=r"cannot read shard s3://b/s-000000\.tar after "
                                            r"[2-9] attempts over 1 s"):
        reader._fetch("s3://b/s-000000.tar")
    assert any("retrying" in r.getMessage() for r in caplog.records)
