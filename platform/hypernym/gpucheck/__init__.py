"""`hypernym gpu-check`: every GPU path of the platform, run once on this machine, in minutes.

The environment (GPU, driver, CUDA, NCCL), probes of the CUDA-only code paths, the synthetic
training ceiling (eager and compiled), `hypernym pretrain` on Ray Train with loader and device
JPEG decode on shards generated here, an FSDP2 smoke run, a fine-tune with registration,
`hypernym eval`, and `hypernym serve` against `mlflow models serve`, all on the GPU; the results
go to ``gpu-check.json`` and ``gpu-check.md`` (docs/gpu.md). With ``dry_run`` the same parts
run on the CPU at toy sizes, which the test suite does.
"""

from hypernym.gpucheck.config import GpuCheckConfig
from hypernym.gpucheck.runner import PARTS, run_gpu_check

__all__ = ["PARTS", "GpuCheckConfig", "run_gpu_check"]
