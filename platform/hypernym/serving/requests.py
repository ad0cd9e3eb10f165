"""The request format both servers accept, parsed without MLflow (Ray Serve's side).

The same JSON bodies as ``mlflow models serve``'s ``/invocations``: ``dataframe_split``
(``{"columns": ["image"], "data": [[...], ...]}``), ``dataframe_records``
(``[{"image": ...}, ...]``), ``inputs`` (``{"image": [...]}``) or ``instances``; an optional
``params: {"top_k": K}`` (a detector's: ``{"score_threshold": S}``). Answers
``{"predictions": [row, ...]}``, one row per image.
"""

from __future__ import annotations

from typing import Any

from hypernym.errors import HypernymError

__all__ = ["parse_request", "score_threshold"]

_FORMS = "dataframe_split, dataframe_records, inputs or instances"


def _column(columns: list[str], rows: list[list[Any]]) -> list[Any]:
    if "image" in columns:
        index = columns.index("image")
    elif len(columns) == 1:
        index = 0
    else:
        raise HypernymError(f"send the images in a column named 'image'; got {columns}")
    return [row[index] for row in rows]


def parse_request(body: Any) -> tuple[list[Any], int | None]:
    """A decoded JSON body -> (images, top_k or None).

    Raises:
        HypernymError: the body is not one of the accepted forms (the message lists them).
    """
    if not isinstance(body, dict):
        raise HypernymError(f"the request body must be a JSON object with one of {_FORMS}")
    params = body.get("params") or {}
    top_k = params.get("top_k") if isinstance(params, dict) else None
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise HypernymError(f"params.top_k must be a positive integer, got {top_k!r}")
    if "dataframe_split" in body:
        split = body["dataframe_split"]
        if not isinstance(split, dict) or not isinstance(split.get("data"), list):
            raise HypernymError("dataframe_split needs {'columns': ['image'], 'data': [[...]]}")
        images = _column(list(split.get("columns") or ["image"]), split["data"])
    elif "dataframe_records" in body:
        records = body["dataframe_records"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise HypernymError("dataframe_records needs a list of {'image': ...} objects")
        images = [r.get("image") for r in records]
    elif "inputs" in body or "instances" in body:
        value = body.get("inputs", body.get("instances"))
        if isinstance(value, dict):
            value = value.get("image")
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [v.get("image") for v in value]
        if not isinstance(value, list):
            raise HypernymError("inputs needs {'image': [...]} or a list of images")
        images = value
    else:
        raise HypernymError(f"the request needs one of {_FORMS}; got keys {sorted(body)}")
    if not images:
        raise HypernymError("the request holds no images")
    return images, top_k


def score_threshold(body: dict) -> float | None:
    """A detector request's ``params.score_threshold`` (None: the model's own).

    Raises:
        HypernymError: it is not a number from 0 to 1.
    """
    params = body.get("params") or {}
    value = params.get("score_threshold") if isinstance(params, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise HypernymError(f"params.score_threshold must be a number from 0 to 1, got "
                            f"{value!r}")
    return float(value)
