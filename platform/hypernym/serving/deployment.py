"""A registered model on Ray Serve, with dynamic batching across requests.

Each HTTP request is parsed in the replica's event loop and its images are decoded and resized
at once in a small thread pool (PIL and torch release the GIL), so decoding overlaps the forward
pass of the batch before. The decoded images join a `serve.batch` queue, so images from
concurrent requests share one forward pass (the per-call cost of the model is paid once per
batch, not per request); the batch runs in a worker thread, so the loop keeps accepting
requests, which form the next batch. Preprocessing and the model are the registered pyfunc's
own `ImageClassifier` (or `ImageDetector`), so answers match ``mlflow models serve`` image for
image.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve

from hypernym.errors import HypernymError
from hypernym.serving.ingress import Ingress, IngressPlan, plan_ingress

__all__ = ["ServeConfig", "Serving", "build_app", "serve_model"]


class ServeConfig(BaseModel):
    """How `hypernym serve` deploys a model."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="address the ingress binds (loopback default)")
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
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (a fraction shares one); "
                            "0: the model runs on the CPU")
    ingress: Ingress | None = Field(None, description="how requests reach the replicas "
                                    "(serving/ingress.py); None: direct for one local "
                                    "replica, haproxy for several, the cluster's own "
                                    "setting on RAY_ADDRESS")
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
        from hypernym.registry.pyfunc_model import load_image_model
        from hypernym.settings import get_settings

        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
        self.config = ServeConfig.model_validate(config)
        from concurrent.futures import ThreadPoolExecutor

        threads = max(1, int(self.config.num_cpus))
        torch.set_num_threads(threads)
        # Ray hides the GPUs from a replica that asked for none (CUDA_VISIBLE_DEVICES="").
        device = "cuda" if self.config.num_gpus and torch.cuda.is_available() else "cpu"
        self.decoder = ThreadPoolExecutor(self.config.decode_threads or threads,
                                          thread_name_prefix="decode")
        with tempfile.TemporaryDirectory() as tmp:  # pull checks the weights' sha256
            local = pull(ref, tmp, timm_config=False, settings=get_settings())
            self.classifier = load_image_model(str(local / CARD_FILE),
                                               str(local / WEIGHTS_FILE), device=device)
        self.detector = getattr(self.classifier, "kind", None) == "detection"
        self.ref = ref
        self.classify.set_max_batch_size(self.config.max_batch_size)
        self.classify.set_batch_wait_timeout_s(self.config.batch_wait_timeout_s)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)  # set per deployment in __init__
    async def classify(self, items: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
        if self.detector:  # per image its own threshold: the batch scores with the lowest
            low = min(threshold for _, threshold in items)
            rows = await asyncio.to_thread(self.classifier.classify,
                                           [(t, None) for t, _ in items], None, low)
            return [_above(row, threshold) for row, (_, threshold) in zip(rows, items,
                                                                           strict=True)]
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

        from hypernym.serving.requests import parse_request, score_threshold

        try:
            body = json.loads(await request.body())
            images, top_k = parse_request(body)
            threshold = score_threshold(body)
        except (ValueError, HypernymError) as exc:
            return JSONResponse({"error_code": "BAD_REQUEST", "message": str(exc)},
                                status_code=400)
        k = top_k or self.config.default_top_k
        if self.detector:  # what the batch carries per image: its score threshold
            k = self.classifier.score_threshold if threshold is None else threshold
        elif self.classifier.multi_label:  # every label over its threshold, however many
            k = len(self.classifier.labels)
        prepared = await asyncio.get_running_loop().run_in_executor(self.decoder,
                                                                    self._prepare, images)
        readable = [(tensor, k) for tensor, error in prepared if error is None]
        answers = iter(await asyncio.gather(*(self.classify(item) for item in readable)))
        rows = [next(answers) if error is None else  # numbered per request, as the pyfunc does
                self.classifier.error_row(i, error) for i, (_, error) in enumerate(prepared)]
        return Response(json.dumps({"predictions": rows}), media_type="application/json")


def _above(row: dict[str, Any], threshold: float) -> dict[str, Any]:
    """A detector's row without the detections scoring under ``threshold``."""
    if row.get("error"):
        return row
    keep = [i for i, score in enumerate(row["scores"]) if score >= threshold]
    return {key: ([value[i] for i in keep] if isinstance(value, list) else value)
            for key, value in row.items()}


def build_app(ref: str, *, tracking_uri: str, config: ServeConfig):
    """The Serve application for ``ref`` (replicas, autoscaling and batching from config)."""
    actor = {"num_cpus": config.num_cpus, **({"num_gpus": config.num_gpus}
                                             if config.num_gpus else {})}
    options: dict[str, Any] = {"max_ongoing_requests": config.max_ongoing_requests,
                               "ray_actor_options": actor,
                               "logging_config": {"enable_access_log": config.access_log}}
    if config.max_replicas is not None:
        options["autoscaling_config"] = {
            "min_replicas": config.min_replicas, "max_replicas": config.max_replicas,
            "target_ongoing_requests": config.target_ongoing_requests}
    else:
        options["num_replicas"] = config.replicas
    deployment = serve.deployment(name="hypernym-model", **options)(ImageModelServer)
    return deployment.bind(ref, tracking_uri, config.model_dump())


@dataclass
class Serving:
    """A running `serve_model`: where to post, and how requests get there."""

    url: str
    ingress: IngressPlan


def serve_model(ref: str, config: ServeConfig, *, settings=None) -> Serving:
    """Deploy ``ref`` on Ray Serve (local Ray, or RAY_ADDRESS) and return where it answers.

    The ingress (`hypernym.serving.ingress`) is chosen before Ray starts; the call returns
    once the URL answers requests, leaving the application running (the caller stops Ray).

    Raises:
        HypernymError: the reference does not resolve or its weights fail the sha256 check
            (checked here, before any replica starts), or the ingress cannot work as asked.
    """
    from hypernym.registry.models import fetch_card, resolve
    from hypernym.runtime import ensure_ray
    from hypernym.settings import get_settings

    settings = settings or get_settings()
    version = resolve(ref, settings=settings)
    pinned = f"{version.name}/{version.version}"  # an alias may move while replicas start
    fetch_card(pinned, settings=settings)
    plan = plan_ingress(config.ingress, port=config.port, replicas=config.replicas,
                        autoscaling=config.max_replicas is not None,
                        on_cluster=bool(settings.ray_address))
    url = f"http://{config.host}:{config.port}{config.route_prefix.rstrip('/')}/"
    try:
        plan.apply()
        ensure_ray(settings=settings)
        _check_gpus(config, local=not settings.ray_address)
        try:
            serve.start(http_options={"host": config.host, "port": plan.proxy_port})
            serve.run(build_app(pinned, tracking_uri=settings.tracking_uri, config=config),
                      name="hypernym", route_prefix=config.route_prefix, blocking=False)
        except Exception as exc:
            _explain_ingress_failure(exc, plan)
            raise
        _wait_routed(url)
    except BaseException:
        if not settings.ray_address:  # our own Ray: nothing of it should outlive the failure
            import ray

            ray.shutdown()
        plan.cleanup()
        raise
    return Serving(url=url, ingress=plan)


def _check_gpus(config: ServeConfig, *, local: bool) -> None:
    """A local Ray without the GPUs asked for would leave the replicas pending for ever (a
    cluster's autoscaler may still add them)."""
    if not (local and config.num_gpus):
        return
    import ray

    have = ray.cluster_resources().get("GPU", 0)
    replicas = config.max_replicas or config.replicas
    if config.num_gpus * replicas > have:
        raise HypernymError(f"--num-gpus {config.num_gpus:g} for {replicas} replica(s) needs "
                            f"{config.num_gpus * replicas:g} GPUs; Ray sees {have:g} here: lower "
                            "--num-gpus or --replicas (0: serve on the CPU)")


def _explain_ingress_failure(exc: Exception, plan: IngressPlan) -> None:
    """Raise a `HypernymError` for HAProxy failing inside Ray (which would otherwise surface
    as a Ray actor's traceback); return for anything else."""
    text = str(exc)
    if plan.ingress != "haproxy" or "HAProxy" not in text:
        return
    # HAProxy's own reasons are its [ALERT] lines (a port in use, a bad config)
    alerts = [line.split(":", 1)[-1].strip() for line in text.splitlines() if "[ALERT]" in line]
    why = "; ".join(alerts) or [line for line in text.splitlines() if "HAProxy" in line][-1]
    raise HypernymError(
        f"HAProxy ({plan.detail}) did not start inside Ray: {why}. Serve with "
        "--ingress proxy (or direct), or point RAY_SERVE_HAPROXY_BINARY_PATH at a working "
        "haproxy; Ray's logs: /tmp/ray/session_latest/logs/serve") from None


def _wait_routed(url: str, timeout_s: float = 120.0) -> None:
    """Until ``url`` answers from a replica: serve.run returns when the replicas are up, but
    HAProxy adds a replica only after its health checks pass (a few seconds), and until then
    answers through its fallback."""
    import time

    from hypernym.serving.loadtest import routed_status

    host = url.split("//", 1)[1].split("/", 1)[0]
    if host.startswith("0.0.0.0:"):  # bound on every interface: ask loopback
        url = url.replace("0.0.0.0", "127.0.0.1", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        routed, status = routed_status(url)
        if routed:
            return
        if time.monotonic() > deadline:
            raise HypernymError(f"{url} did not answer within {timeout_s:.0f} s of the "
                                f"replicas starting (last status {status}); see Ray's logs "
                                "under /tmp/ray/session_latest/logs/serve")
        time.sleep(0.2)
