"""Reading an evaluation report back from its MLflow run, as a user of the MLflow UI sees it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

IMAGES = ("eval/confusion_matrix.png", "eval/reliability_diagram.png")


def read_eval_report(client, run_id: str, tmp_path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The report's two images (each checked to be a PNG over 200 px; returned as grayscale
    pixels) and ``eval/report.json``, downloaded from the run with ``client``."""
    names = {a.path for a in client.list_artifacts(run_id, "eval")}
    pixels = {}
    for image in IMAGES:
        assert image in names, (image, names)
        with Image.open(client.download_artifacts(run_id, image, str(tmp_path))) as img:
            assert img.format == "PNG" and min(img.size) > 200, (image, img.format, img.size)
            pixels[image] = np.asarray(img.convert("L"))
    with open(client.download_artifacts(run_id, "eval/report.json", str(tmp_path))) as f:
        return pixels, json.load(f)
