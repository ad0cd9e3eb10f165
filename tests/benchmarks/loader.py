"""Data loading throughput: hypernym's reader against the loaders users know, in one run.

    .venv/bin/python tests/benchmarks/loader.py [--images 8192] [--workers N_CORES]

Same generated JPEGs (500x375, quality 90), same augmentation (RandomResizedCrop 224 + flip to
uint8, then `float().div_(255)` per batch on the consumer side), batch 64, `--workers` loader
processes (default: one per core):
  (a) torchvision ImageFolder over individual JPEG files, DataLoader
  (b) a plain webdataset pipeline over the shards, DataLoader
  (c) ray.data.read_webdataset(decoder=None) + map_batches decode + iter_torch_batches
  (d) hypernym's reader (make_loader, recycled batch memory as in training)
  (e) the bound: the same decode + augment + conversion with no loader at all, a tight loop in
      one process per worker, all at once
  and (d) again with the shards behind an S3 endpoint on 127.0.0.1 (moto's server, its own
  process), and with a GPU, (d) with data.decode_on: device (nvJPEG batched decode).
Prints images/s, per core, and the ratios d/a, d/b, d/c, d/e, S3/local. The consumer runs with one
torch thread: a second OpenMP thread spin-waits on the cores the loader workers need.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hypernym.config import parse_recipe
from hypernym.data.demo import DEMO_SYNSETS, make_winter21
from hypernym.data.manifest import read_manifest
from hypernym.data.prepare import prepare
from hypernym.data.reader import make_loader
from hypernym.data.transforms import train_transform
from hypernym.runtime import configure_logging, ensure_ray

SIZE, BATCH = 224, 64


_FLOAT: dict[str, torch.Tensor] = {}  # the consumer's float batch, reused unless --fresh-float


def to_float(images: torch.Tensor) -> None:
    """The consumer side's conversion. Into one reused buffer by default, as a GPU's caching
    allocator reuses memory: a fresh 38 MB CPU tensor per batch costs 0.3 ms of page faults per
    image (glibc maps anything over 32 MB anew), which no GPU consumer pays and which would
    weigh on every loader alike."""
    if "fresh" in _FLOAT:
        images.float().div_(255)
        return
    buf = _FLOAT.get("buf")
    if buf is None or buf.shape != images.shape or buf.stride() != images.stride():
        # In the layout the loader gives (channels-last from hypernym's), as on a GPU.
        buf = _FLOAT["buf"] = torch.empty_like(images, dtype=torch.float32)
    buf.copy_(images).div_(255)


def consume(batches) -> int:
    n = 0
    for images, *_ in batches:
        to_float(images)
        n += len(images)
    return n


def timed(name: str, fn) -> float:
    start = time.perf_counter()
    n = fn()
    rate = n / (time.perf_counter() - start)
    print(f"  {name:<44} {rate:8.1f} img/s  ({n} images)")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--fresh-float", action="store_true",
                        help="convert each batch into a new float tensor (see to_float)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    configure_logging()
    torch.set_num_threads(1)
    if args.fresh_float:
        _FLOAT["fresh"] = torch.empty(0)
    per_class = max(args.images // len(DEMO_SYNSETS), 2)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_winter21(tmp / "raw", images_per_class=per_class, image_size=(500, 375))
        prepare(parse_recipe({"kind": "prepare", "source": str(tmp / "raw"),
                              "output": str(tmp / "wds"), "min_per_class": 0,
                              "val_per_class": 0, "resize": "none", "shard_samples": 256}),
                show_progress=False)
        manifest = read_manifest(str(tmp / "wds"))
        folder = _as_folder(tmp / "raw", tmp / "folder")
        urls = manifest.shard_urls(str(tmp / "wds"), "train")
        raw = [jpg for _, jpg in _samples(urls)]
        workers = args.workers
        print(f"{len(raw)} images, {workers} loader workers, batch {BATCH}, crop {SIZE}")
        rates = {  # the bound first: its processes fork this one, which must not run Ray yet
            "e": timed(f"(e) bound: tight loop, {workers} processes", lambda: _bound(raw,
                                                                                    workers)),
            "a": timed("(a) ImageFolder + DataLoader", lambda: consume(_imagefolder(folder,
                                                                                   workers))),
            "b": timed("(b) webdataset + DataLoader", lambda: consume(_webdataset(urls,
                                                                                 workers))),
            "d": timed("(d) hypernym reader", lambda: consume(make_loader(
                manifest, str(tmp / "wds"), "train", rank=0, world_size=1, epoch=0,
                batch_size=BATCH, img_size=SIZE, train=True, num_workers=workers,
                recycle=True))),
        }
        s3_root = _to_s3(tmp / "wds")  # the same shards behind an S3 endpoint on 127.0.0.1
        rates["s3"] = timed("(d) hypernym reader, shards on S3 (moto)", lambda: consume(
            make_loader(manifest, s3_root, "train", rank=0, world_size=1, epoch=0,
                        batch_size=BATCH, img_size=SIZE, train=True, num_workers=workers,
                        recycle=True)))
        if torch.cuda.is_available():  # data.decode_on: device (nvJPEG), same shards
            rates["gpu"] = timed("(d) hypernym reader, decode on the GPU", lambda: _on_gpu(
                make_loader(manifest, str(tmp / "wds"), "train", rank=0, world_size=1,
                            epoch=0, batch_size=BATCH, img_size=SIZE, train=True,
                            num_workers=workers, decode_on="device")))
        rates["c"] = timed("(c) ray.data.read_webdataset", lambda: _ray_data(urls))
    cores = os.cpu_count() or 1
    print(f"per core ({cores} cores): " + ", ".join(f"{k} {v / cores:.1f}" for k, v in
                                                     rates.items()))
    print(f"ratios: d/a {rates['d'] / rates['a']:.2f}  d/b {rates['d'] / rates['b']:.2f}  "
          f"d/c {rates['d'] / rates['c']:.2f}  d/e {rates['d'] / rates['e']:.2f}  "
          f"S3/local {rates['s3'] / rates['d']:.2f}")


def _on_gpu(batches) -> int:
    from hypernym.data.device_decode import decode_batch

    n = 0
    for batch in batches:
        images = decode_batch(batch.image, size=SIZE, device=torch.device("cuda"))
        images.div_(255)
        n += len(images)
    torch.cuda.synchronize()
    return n


_RAW: list[bytes] = []  # the bound's images, inherited by its forked processes


def _bound(raw: list[bytes], processes: int) -> int:
    """(e): decode + augment + the consumer's conversion, no loader, one process per worker
    (started inside the clock, as DataLoader's workers are)."""
    _RAW[:] = raw
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return sum(pool.map(_tight, [range(i, len(raw), processes) for i in range(processes)]))


def _tight(indices: range) -> int:
    torch.set_num_threads(1)
    augment = train_transform(SIZE)
    batch = []
    for i in indices:
        batch.append(augment(_RAW[i]))
        if len(batch) == BATCH or i == indices[-1]:
            to_float(torch.stack(batch))
            batch = []
    return len(indices)


def _to_s3(local: Path) -> str:
    """Serve S3 on 127.0.0.1 (moto's server mode, in its own process so that it does not take
    the consumer's GIL) and upload the dataset there."""
    import fsspec

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: the repo
    from tests.servers import free_port, start_server

    port = free_port()
    server = start_server([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                           str(port)], url=f"http://127.0.0.1:{port}", log=local.parent /
                          "moto.log")
    _CLEANUP.append(server.stop)
    os.environ.update({"AWS_ENDPOINT_URL": server.url,
                       "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir("bench")
    fs.put(str(local) + "/", "s3://bench/wds/", recursive=True)
    return "s3://bench/wds"


_CLEANUP: list = []


def _samples(urls):
    from hypernym.data.reader import read_shard

    for url in urls:
        for jpg, label in read_shard(url):
            yield label, jpg


def _as_folder(raw: Path, out: Path) -> Path:
    import tarfile

    for tar_path in raw.glob("*.tar"):
        (out / tar_path.stem).mkdir(parents=True, exist_ok=True)
        with tarfile.open(tar_path) as tar:
            tar.extractall(out / tar_path.stem, filter="data")
    return out


def _imagefolder(root: Path, workers: int):
    from torchvision import datasets
    from torchvision.transforms import v2

    tf = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(SIZE, antialias=True),
                     v2.RandomHorizontalFlip()])
    ds = datasets.ImageFolder(str(root), transform=tf, loader=lambda p: Image.open(p).convert(
        "RGB"))
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers)


def _webdataset(urls, workers: int):
    import webdataset as wds

    augment = train_transform(SIZE)
    ds = (wds.WebDataset(urls, shardshuffle=False, empty_check=False)
          .map(lambda s: (augment(s["jpg"]), int(s["cls"]))))
    return torch.utils.data.DataLoader(ds, batch_size=BATCH, num_workers=workers)


def _ray_data(urls) -> int:
    import ray.data

    ensure_ray()
    augment = train_transform(SIZE)

    def decode(batch):
        return {"image": np.stack([augment(bytes(b)).numpy() for b in batch["jpg"]]),
                "label": np.array([int(bytes(c)) for c in batch["cls"]])}

    ds = ray.data.read_webdataset(urls, decoder=None).map_batches(decode, batch_size=BATCH)
    n = 0
    for batch in ds.iter_torch_batches(batch_size=BATCH):
        to_float(batch["image"])
        n += len(batch["image"])
    return n


if __name__ == "__main__":
    try:
        main()
    finally:
        for cleanup in _CLEANUP:
            cleanup()
