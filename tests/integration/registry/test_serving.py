"""Images over HTTP: `mlflow models serve` on the registered pyfunc, and `hypernym serve` on
Ray Serve, started once for the module (side by side: both are slow to start)."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from hypernym.data.transforms import eval_transform
from tests.integration.registry.helpers import jpeg_bytes, register_tiny, settings_at
from tests.servers import free_port, launch, routed

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _post(url: str, body: dict, timeout: float = 60) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Both servers on the registered model, started side by side (their start-ups overlap)."""
    root = tmp_path_factory.mktemp("serving")
    settings = settings_at(root / "home")
    _, model, _ = register_tiny(settings, name="served", alias="prod")
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri,
           "HYPERNYM_HOME": str(settings.home), "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled",
           # uvicorn is started by name: the venv's bin/ must be on PATH
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    mlflow_port, ray_port = free_port(), free_port()
    mlflow = launch([str(BIN / "mlflow"), "models", "serve", "-m", "models:/served@prod",
                     "--env-manager", "local", "--host", "127.0.0.1", "--port", str(mlflow_port),
                     "--workers", "1"], url=f"http://127.0.0.1:{mlflow_port}",
                    log=root / "mlflow.log", env=env)
    ray = launch([str(BIN / "python"), "-m", "hypernym", "serve", "served@prod", "--port",
                  str(ray_port), "--max-batch-size", "8", "--batch-wait-ms", "5"],
                 url=f"http://127.0.0.1:{ray_port}", log=root / "ray.log", env=env)
    with mlflow, ray:
        deadline = time.monotonic() + 240
        mlflow.wait("/ping", timeout_s=deadline - time.monotonic())
        ray.wait("/", timeout_s=max(1.0, deadline - time.monotonic()), accept=routed)
        yield model, {"mlflow": f"{mlflow.url}/invocations", "ray": f"{ray.url}/"}, \
            {"mlflow": mlflow.log, "ray": ray.log}


def _expected(model, data: bytes, k: int = 5) -> list[int]:
    """Top-k computed independently: the training pipeline's eval transform, then the model."""
    x = eval_transform(32)(data).float()[None] / 255
    x = (x - 0.4) / 0.2
    with torch.no_grad():
        return model(x).softmax(1).topk(k).indices[0].tolist()


def test_mlflow_models_serve_classifies_jpegs_and_isolates_a_corrupt_one(servers):
    model, urls, _ = servers
    jpeg, png = jpeg_bytes(seed=1), jpeg_bytes(70, 90, fmt="PNG", seed=2)
    corrupt = base64.b64encode(jpeg[: len(jpeg) // 3]).decode()  # a truncated JPEG
    body = {"dataframe_split": {"columns": ["image"], "data": [
        [base64.b64encode(jpeg).decode()], [corrupt], ["not base64 at all"]]}}
    status, answer = _post(urls["mlflow"], body)
    assert status == 200, answer
    rows = answer["predictions"]
    assert len(rows) == 3
    assert rows[0]["error"] is None and rows[0]["class_ids"] == _expected(model, jpeg)
    assert rows[0]["labels"][0] == f"n0000000{rows[0]['class_ids'][0]}"
    assert rows[0]["names"][0] == f"thing {rows[0]['class_ids'][0]}"
    assert abs(sum(rows[0]["probs"]) - 1) < 1e-4 and rows[0]["probs"] == sorted(
        rows[0]["probs"], reverse=True)
    assert rows[1]["class_ids"] == [] and "image 1: cannot decode" in rows[1]["error"]
    assert "image 2: not valid base64" in rows[2]["error"]

    status, answer = _post(urls["mlflow"], {"inputs": {"image": [base64.b64encode(png).decode()]},
                                            "params": {"top_k": 2}})
    assert status == 200 and answer["predictions"][0]["class_ids"] == _expected(model, png, 2)
    pixels = np.random.default_rng(0).integers(0, 255, (40, 50, 3)).tolist()
    status, answer = _post(urls["mlflow"], {"dataframe_records": [{"image": pixels}]})
    assert status == 200 and len(answer["predictions"][0]["class_ids"]) == 5


def test_ray_serve_answers_alike(servers):
    model, urls, logs = servers
    jpeg = jpeg_bytes(seed=1)
    body = {"dataframe_split": {"columns": ["image"], "data": [
        [base64.b64encode(jpeg).decode()], [base64.b64encode(b"garbage").decode()]]}}
    status, ray_answer = _post(urls["ray"], body)
    assert status == 200, ray_answer
    _, mlflow_answer = _post(urls["mlflow"], body)
    assert ray_answer["predictions"][0]["class_ids"] == _expected(model, jpeg)
    assert np.allclose(ray_answer["predictions"][0]["probs"],
                       mlflow_answer["predictions"][0]["probs"], atol=1e-5)
    assert "image 1: cannot decode" in ray_answer["predictions"][1]["error"]
    status, answer = _post(urls["ray"], {"columns": ["image"]})
    assert status == 400 and "dataframe_split" in answer["message"]
    # The proxy can route a moment before serve.run() returns and the CLI prints its URL.
    deadline = time.monotonic() + 60
    while ("serving served@prod at http://127.0.0.1:" not in logs["ray"].read_text()
           and time.monotonic() < deadline):
        time.sleep(0.2)
    assert "serving served@prod at http://127.0.0.1:" in logs["ray"].read_text()
