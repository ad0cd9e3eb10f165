"""What `hypernym gpu-check` runs, and how big: one typed config, a full size and a toy size."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GpuCheckConfig"]


class GpuCheckConfig(BaseModel):
    """The check's sizes and budget. The defaults are the full check on one GPU;
    `GpuCheckConfig.dry_run` is the same check at toy sizes on the CPU."""

    model_config = ConfigDict(extra="forbid")

    device: Literal["cuda", "cpu"] = "cuda"
    budget_s: float = Field(460.0, gt=0, description="the check stops itself before this "
                            "(parts that would not fit are skipped and reported)")
    arch: str = Field("resnet50", description="timm model of every part")
    img_size: int = Field(224, ge=16)
    batch_size: int = Field(256, ge=2, description="training batch (ceiling and pretrain)")
    classes: int = Field(100, ge=2, le=1000)
    images_per_class: int = Field(260, ge=4, description="generated JPEGs per class")
    val_per_class: int = Field(10, ge=1)
    jpeg_size: tuple[int, int] = Field((224, 224), description="generated JPEGs (width, "
                                       "height); 224x224 is the ImageNet-21K-P size")
    epochs: int = Field(2, ge=1, description="pretraining epochs per decode mode")
    log_every: int = Field(10, ge=1, description="steps per throughput window")
    system_metrics_s: float = Field(2.0, gt=0, description="seconds between MLflow's system "
                                    "metric samples in the pretraining runs")
    ray_train: bool = Field(True, description="train through Ray Train, as `hypernym "
                            "pretrain` does; False trains in the part's process with the same "
                            "core (`run_training(in_process=True)`), without Ray's start-up")
    compile: bool = Field(True, description="torch.compile in the pretraining runs (the "
                          "fine-tune runs eager: it measures nothing)")
    compile_backend: str = Field("inductor", description="the compiled ceiling's torch.compile "
                                 "backend (the dry run traces with `eager`: inductor's code "
                                 "generation takes a minute on a small CPU)")
    ceiling_steps: int = Field(30, ge=2, description="timed synthetic steps (after warm-up)")
    warmup_steps: int = Field(10, ge=1)
    cpus: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    serve_clients: list[int] = Field(default_factory=lambda: [16, 64, 256])
    serve_seconds: float = Field(6.0, gt=0, description="per load run")
    serve_requests: int = Field(20000, ge=1, description="per load run, at most")
    serve_max_batch_size: int = Field(64, ge=1)
    serve_batch_wait_ms: float = Field(5.0, ge=0)
    serve_replicas: int | None = Field(None, ge=1, description="hypernym serve replicas "
                                       "sharing the device (default: one per 4 CPUs)")
    serve_ingress: Literal["haproxy", "direct", "proxy"] | None = Field(
        None, description="hypernym serve's --ingress (default: its own, haproxy for several "
        "replicas)")
    mlflow_workers: int | None = Field(None, ge=1, description="mlflow models serve's "
                                       "workers (default: its own, one per CPU)")

    @classmethod
    def dry_run(cls, **overrides) -> GpuCheckConfig:
        """The same check on the CPU at toy sizes: every part's code runs, in minutes."""
        toy = dict(device="cpu", arch="resnet10t", img_size=32, batch_size=8, classes=4,
                   images_per_class=12, val_per_class=2, jpeg_size=(40, 40), epochs=1,
                   log_every=1, ray_train=False,
                   # a toy run lasts a few seconds: sampled often enough to log some
                   system_metrics_s=0.5, compile=False, compile_backend="eager",
                   ceiling_steps=2,
                   warmup_steps=1, cpus=1,
                   serve_clients=[1, 2], serve_seconds=1.5, serve_requests=40,
                   serve_max_batch_size=4, serve_replicas=1, mlflow_workers=1,
                   # the ingress the GPU check's several replicas get, on one replica
                   serve_ingress="haproxy")
        return cls(**{**toy, **overrides})

    @property
    def replicas(self) -> int:
        return self.serve_replicas or max(1, self.cpus // 4)

    @property
    def loader_workers(self) -> int:
        """DataLoader processes of the one training worker: the CPUs it has, less the loop's."""
        return max(1, self.cpus - 3) if self.device == "cuda" else 1
