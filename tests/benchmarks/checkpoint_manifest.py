"""What a checkpoint's manifest costs: writing it, and checking a checkpoint against it, compared
with saving the checkpoint itself.

    .venv/bin/python tests/benchmarks/checkpoint_manifest.py [--params 25.6] [--rounds 3]

The state is a resnet50-sized training state (``--params`` million float32 weights, plus
AdamW's two moments: about 300 MB at 25.6 M), saved with `save_state` to a temporary folder on
disk. Prints, per round, the seconds of ``torch.save`` alone (the baseline), of
``write_manifest`` (hash every file, then write) and of ``check_checkpoint`` (sizes, then
hashes), and their ratios to the baseline. The page cache is warm for the hashing (the file was
just written or read), as it is on the rank that saves.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hypernym.train.checkpoint import STATE_FILE
from hypernym.train.verify import check_checkpoint, write_manifest


def state(params_m: float) -> dict:
    n = int(params_m * 1e6)
    gen = torch.Generator().manual_seed(0)
    weights = torch.randn(n, generator=gen)
    return {"model": {"w": weights}, "optimizer": {"exp_avg": weights * 0.1,
                                                   "exp_avg_sq": weights.abs()},
            "position": {"epoch": 1, "global_step": 100}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=float, default=25.6, help="million weights")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    payload = state(args.params)
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        folder = Path(tmp)
        for i in range(args.rounds):
            start = time.perf_counter()
            torch.save(payload, folder / STATE_FILE)
            saved = time.perf_counter() - start
            start = time.perf_counter()
            write_manifest(folder, step=100, epoch=1)
            written = time.perf_counter() - start
            start = time.perf_counter()
            assert check_checkpoint(folder) is None
            checked = time.perf_counter() - start
            size = (folder / STATE_FILE).stat().st_size / 1e6
            print(f"round {i}: {size:.0f} MB; torch.save {saved:.2f} s, write_manifest "
                  f"{written:.2f} s ({written / saved:.2f}x, {size / written:.0f} MB/s), "
                  f"check_checkpoint {checked:.2f} s ({checked / saved:.2f}x, "
                  f"{size / checked:.0f} MB/s)")


if __name__ == "__main__":
    main()
