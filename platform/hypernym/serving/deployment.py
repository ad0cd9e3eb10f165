"""A registered model on Ray Serve, with dynamic batching across requests.

Each HTTP request is parsed in the replica's event loop and its images are decoded and resized
at once in a small thread pool (PIL and torch release the GIL), so decoding overlaps the forward
pass of the batch before. The decoded images join a `serve.batch` queue, so images from
concurrent requests share one forward pass (the per-call cost of the model is paid once per
batch, not per request); the batch runs in a worker thread, so the loop keeps accepting
requests, which form the next batch. Preprocessing and the model are the registered pyfunc's
own `ImageClassifier`, so answers match ``mlflow models serve`` image for image.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from hypernym.errors import HypernymError

__all__ = ["ServeConfig", "build_app", "serve_model"]


class ServeConfig(BaseModel):
    """How `hypernym serve` deploys a model."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address the HTTP proxy binds (loopback default)")
    port: int = Field(8000, ge=0, le=65535)
    route_prefix: str = "/"
    replicas: int = Field(1, ge=1, description="fixed replica count (without autoscaling)")
    min_replicas: int | None = Field(None, ge=0, description="autoscaling lower bound")
    max_replicas: int | None = Field(None, ge=1, description="autoscaling upper bound")
    target_ongoing_requests: float = Field(8.0, gt=0, description="autoscaling target per "
                                           "replica")
    max_batch_size: int = Field(32, ge=1)
    batch_wait_timeout_s: float = Field(0.01, ge=0)
    max_ongoing_requests: int = Field(64, ge=1, description="per replica; more queue upstream")
    num_cpus: float = Field(1.0, gt=0, description="CPUs per replica (torch threads follow)")
    default_top_k: int = Field(5, ge=1)
    decode_threads: int | None = Field(None, ge=1, description="threads decoding images "
                                       "(default: one per CPU of the replica)")
    access_log: bool = Field(False, description="Serve's per-request access log line (off: "
                             "written and flushed per request, it costs CPU at high rates)")

    @model_validator(mode="after")
    def _bounds(self) -> ServeConfig:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ValueError("autoscaling needs both --min-replicas and --max-replicas")
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(f"--min-replicas {self.min_replicas} exceeds --max-replicas "
                             f"{self.max_replicas}")
        if self.max_batch_size > self.max_ongoing_requests:
            raise ValueError("max_batch_size above max_ongoing_requests can never fill")
        return self


class ImageModelServer:
    """The Serve deployment's class (wrapped by `build_app`)."""

    def __init__(self, ref: str, tracking_uri: str, config: dict[str, Any]) -> None:
        import os

        import torch

        from hypernym.registry.card import CARD_FILE, WEIGHTS_FILE
        from hypernym.registry.models import pull
        from hypernym.registry.pyfunc_model import ImageClassifier
        from hypernym.settings import get_settings

        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        self.config = ServeConfig.model_validate(config)
        from concurrent.futures import ThreadPoolExecutor

        threads = max(1, int(self.config.num_cpus))
        torch.set_num_threads(threads)
        self.decoder = ThreadPoolExecutor(self.config.decode_threads or threads,
                                          thread_name_prefix="decode")
        with tempfile.TemporaryDirectory() as tmp:  # pull checks the weights' sha256
            local = pull(ref, tmp, timm_config=False, settings=get_settings())
            self.classifier = ImageClassifier.from_files(str(local / CARD_FILE),
                                                         str(local / WEIGHTS_FILE))
        self.ref = ref
        self.classify.set_max_batch_size(self.config.max_batch_size)
        self.classify.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)  # set per deployment in __init__
    async def classify(self, items: list[tuple[Any, int]]) -> list[dict[str, Any]]:
        k = max(top_k for _, top_k in items)
        rows = await asyncio.to_thread(self.classifier.classify, [(t, None) for t, _ in items],
                                       k)
        return [{key: (value[:top_k] if isinstance(value, list) else value)
                 for key, value in row.items()} for row, (_, top_k) in zip(rows, items,
                                                                          strict=True)]

    def _prepare(self, images: list[Any]) -> list[tuple[Any, str | None]]:
        return [self.classifier.prepare(image) for image in images]

    async def __call__(self, request) -> Any:
        from starlette.responses import JSONResponse, Response

        from hypernym.serving.requests import parse_request

        try:
            body = json.loads(await request.body())
            images, top_k = parse_request(body)
        except (ValueError, HypernymError) as exc:
            return JSONResponse({"error_code": "BAD_REQUEST", "message": str(exc)},
                                status_code=400)
        k = top_k or self.config.default_top_k
        if self.classifier.multi_label:  # every label over its threshold, however many
            k = len(self.classifier.labels)
        prepared = await asyncio.get_running_loop().run_in_executor(self.decoder,
                                                                    self._prepare, images)
        readable = [(tensor, k) for tensor, error in prepared if error is None]
        answers = iter(await asyncio.gather(*(self.classify(item) for item in readable)))
        rows = [next(answers) if error is None else  # numbered per request, as the pyfunc does
                self.classifier.error_row(i, error) for i, (_, error) in enumerate(prepared)]
        return Response(json.dumps({"predictions": rows}), media_type="application/json")


def build_app(ref: str, *, tracking_uri: str, config: ServeConfig):
    """The Serve application for ``ref`` (replicas, autoscaling and batching from config)."""
    options: dict[str, Any] = {"max_ongoing_requests": config.max_ongoing_requests,
                               "ray_actor_options": {"num_cpus": config.num_cpus},
                               "logging_config": {"enable_access_log": config.access_log}}
    if config.max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas, "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_ongoing_requests}
    else:
        options["num_replicas"] = config.replicas
    deployment = serve.deployment(name="hypernym-model", **options)(ImageModelServer)
    return deployment.bind(ref, tracking_uri, config.model_dump())


def serve_model(ref: str, config: ServeConfig, *, settings=None, blocking: bool = True) -> str:
    """Deploy ``ref`` on Ray Serve (local Ray, or RAY_ADDRESS) and return its URL.

    Raises:
        HypernymError: the reference does not resolve or its weights fail the sha256 check
            (checked here, before any replica starts).
    """
    from hypernym.registry.models import fetch_card, resolve
    from hypernym.runtime import ensure_ray
    from hypernym.settings import get_settings

    settings = settings or get_settings()
    version = resolve(ref, settings=settings)
    pinned = f"{version.name}/{version.version}"  # an alias may move while replicas start
    fetch_card(pinned, settings=settings)
    ensure_ray(settings=settings)
    serve.start(http_options={"host": config.host, "port": config.port})
    serve.run(build_app(pinned, tracking_uri=settings.tracking_uri, config=config),
              name="hypernym", route_prefix=config.route_prefix, blocking=blocking)
    return f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}/"
