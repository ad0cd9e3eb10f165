"""`hypernym gpu-check`: thin over `hypernym.gpucheck.run_gpu_check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["gpu_check"]

out = Console(stderr=True, soft_wrap=True)


def gpu_check(
    output: Annotated[Path, typer.Option("--out", help="where gpu-check.json, gpu-check.md "
                                         "and the work folder go")] = Path("gpu-check"),
    cpu_dry_run: Annotated[bool, typer.Option(
        "--cpu-dry-run", help="the same check on the CPU at toy sizes (no GPU needed)")] = False,
    budget_s: Annotated[float | None, typer.Option(
        help="stop before this many seconds (default 450 on a GPU)")] = None,
    only: Annotated[list[str] | None, typer.Option(
        help="run only this part (repeatable; the parts it needs must be in too)")] = None,
) -> None:
    """Run every GPU path of the platform once on this machine and report (docs/gpu.md)."""
    import time

    from hypernym.errors import HypernymError
    from hypernym.gpucheck import PARTS, GpuCheckConfig, run_gpu_check

    names = [p.name for p in PARTS]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise HypernymError(f"unknown part(s) {unknown}; the parts are {', '.join(names)}")
    if not cpu_dry_run:
        import torch

        if not torch.cuda.is_available():
            out.print(f"no CUDA device here (torch {torch.__version__}, CUDA build "
                      f"{torch.version.cuda or 'none'}): nothing to check. On a GPU machine run "
                      "`make gpu-check`; `hypernym gpu-check --cpu-dry-run` runs the same check "
                      "on the CPU at toy sizes.")
            return
    extra = {"budget_s": budget_s} if budget_s else {}
    config = GpuCheckConfig.dry_run(**extra) if cpu_dry_run else GpuCheckConfig(**extra)
    began = time.perf_counter()
    results = run_gpu_check(config, output, dry_run=cpu_dry_run, only=only,
                            log=lambda line: out.print(line, markup=False))
    failed = [n for n, e in results["parts"].items() if e["status"] != "ok"]
    out.print(f"gpu-check ({results['mode']}) took {time.perf_counter() - began:.0f} s: "
              f"{len(results['parts']) - len(failed)} of {len(results['parts'])} parts ok"
              + (f"; not ok: {', '.join(failed)}" if failed else ""))
    out.print(f"results: {output / 'gpu-check.md'} and {output / 'gpu-check.json'}")
    if failed:
        raise typer.Exit(1)
