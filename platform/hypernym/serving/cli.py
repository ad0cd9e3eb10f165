"""`hypernym serve MODEL_REF`: a registered model on Ray Serve until Ctrl-C (thin)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

__all__ = ["serve"]

out = Console(stderr=True)


def serve(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@alias or NAME/VERSION")],
    host: Annotated[str, typer.Option(help="bind address (loopback unless you mean it)")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8000,
    replicas: Annotated[int, typer.Option(help="fixed number of replicas")] = 1,
    min_replicas: Annotated[int | None, typer.Option(help="autoscaling lower bound")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="autoscaling upper bound")] = None,
    max_batch_size: Annotated[int, typer.Option(help="images per forward pass at most")] = 32,
    batch_wait_ms: Annotated[float, typer.Option(help="how long a batch waits to fill")] = 10.0,
    num_cpus: Annotated[float, typer.Option(help="CPUs per replica")] = 1.0,
    num_gpus: Annotated[float, typer.Option(
        help="GPUs per replica (0.25: four replicas share one); 0: the CPU")] = 0.0,
    ingress: Annotated[str | None, typer.Option(
        help="direct (one replica's own port; the default for one replica), haproxy (HAProxy "
        "in front of the replicas; the default for several) or proxy (Ray Serve's Python "
        "proxy); on RAY_ADDRESS the cluster's setting")]
    = None,
    decode_threads: Annotated[int | None, typer.Option(
        help="threads per replica decoding images (default: one per CPU)")] = None,
    max_ongoing_requests: Annotated[int, typer.Option(
        help="requests a replica holds at once; more wait in the ingress")] = 64,
    access_log: Annotated[bool, typer.Option(help="Ray Serve's per-request log line")] = False,
) -> None:
    """Serve a registered model on Ray Serve with dynamic batching (POST images to /)."""
    import signal
    import threading

    from hypernym.errors import HypernymError
    from hypernym.serving.deployment import ServeConfig, serve_model

    try:
        config = ServeConfig(host=host, port=port, replicas=replicas, min_replicas=min_replicas,
                             max_replicas=max_replicas, max_batch_size=max_batch_size,
                             batch_wait_timeout_s=batch_wait_ms / 1000, num_cpus=num_cpus,
                             num_gpus=num_gpus, ingress=ingress, decode_threads=decode_threads,
                             max_ongoing_requests=max_ongoing_requests, access_log=access_log)
    except ValueError as exc:
        raise HypernymError(f"invalid serve options: {exc}") from None
    serving = serve_model(ref, config)
    url, plan = serving.url, serving.ingress
    # After Ray's start: its core worker installs a failure handler for SIGTERM that aborts the
    # process, skipping the shutdown below (and leaving the proxy and replicas to be reaped).
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scaling = (f"autoscaling {min_replicas}-{max_replicas} replicas" if max_replicas else
               f"{replicas} replica(s)")
    out.print(f"serving {ref} at {url} ({scaling}, batches of up to {max_batch_size}, "
              f"{batch_wait_ms:g} ms wait)", soft_wrap=True)
    if plan.warning:
        out.print(f"[yellow]warning:[/] {plan.warning}", soft_wrap=True)
    out.print(f"ingress: {plan.ingress} ({plan.detail})", soft_wrap=True, markup=False)
    body = '{"dataframe_split": {"columns": ["image"], "data": [["<base64 JPEG>"]]}}'
    out.print(f"try: curl -s {url} -H 'Content-Type: application/json' -d '{body}'",
              soft_wrap=True, markup=False)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        import ray
        from ray import serve as ray_serve

        from hypernym.settings import get_settings

        if get_settings().ray_address:  # a shared cluster: remove this application only
            ray_serve.delete("hypernym")
        # A local Ray of our own goes down with its proxy and replicas at once: serve.shutdown()
        # would first drain the proxy (about 30 s of Ray Serve's minimum draining period).
        ray.shutdown()
        plan.cleanup()
        out.print("stopped")
