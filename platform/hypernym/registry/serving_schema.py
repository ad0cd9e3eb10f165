"""The served model's request and response format: MLflow signature and input example.

One column ``image`` of base64 JPEG/PNG strings (or uint8 arrays, hence MLflow's ``Any`` type:
a ``string`` column would refuse arrays), a ``top_k`` parameter, and per image the top-k class
ids, labels, names, probabilities and an ``error`` (null when the image was classified). A
detector answers per image its boxes, their class ids, labels, names and scores, with a
``score_threshold`` parameter.
"""

from __future__ import annotations

import base64
import io

__all__ = ["encode_image", "input_example", "signature"]


def signature(detection: dict | None = None):
    """The MLflow ModelSignature of the registered pyfunc; ``detection``: a detector's card
    config (its answers are boxes, and its ``score_threshold`` is the parameter's default)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec(AnyType(), "image")])
    if detection:  # per image: boxes (x0 y0 x1 y1 pixels) with their classes and scores
        outputs = Schema([ColSpec(Array(Array("double")), "boxes"),
                          ColSpec(Array("long"), "class_ids"), ColSpec(Array("string"), "labels"),
                          ColSpec(Array("string"), "names"), ColSpec(Array("double"), "scores"),
                          ColSpec("string", "error", required=False)])
        params = ParamSchema([ParamSpec("score_threshold", "double",
                                        float(detection["score_threshold"]))])
        return ModelSignature(inputs=inputs, outputs=outputs, params=params)
    outputs = Schema([ColSpec(Array("long"), "class_ids"), ColSpec(Array("string"), "labels"),
                      ColSpec(Array("string"), "names"), ColSpec(Array("double"), "probs"),
                      ColSpec("string", "error", required=False)])
    params = ParamSchema([ParamSpec("top_k", "long", 5)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def encode_image(data: bytes) -> str:
    """Image file bytes -> the base64 text a request carries."""
    return base64.b64encode(data).decode("ascii")


def input_example():
    """A one-image request (a small gray JPEG), logged with every version (MLflow writes the
    ``serving_input_example.json`` a user can post as-is)."""
    import pandas as pd
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (128, 128, 128)).save(buffer, format="JPEG", quality=80)
    return pd.DataFrame({"image": [encode_image(buffer.getvalue())]})
