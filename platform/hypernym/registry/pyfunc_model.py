"""MLflow "models from code" entry: images in, top-k labels out, from safetensors + card.json.

Logged as a plain .py file (not a pickle), so ``mlflow.pyfunc.load_model`` runs no serialized
code: it imports this file and loads weights with safetensors. The file is self-contained (torch,
torchvision, timm, safetensors, numpy, pandas, Pillow; not hypernym), because MLflow copies it
into the model's artifacts and a serving host may not have hypernym installed. Ray Serve
(hypernym.serving) uses the same `ImageClassifier`, so both servers answer alike.

Inputs: a column ``image`` (``dataframe_split``, ``dataframe_records`` or ``inputs``) whose cells
are base64-encoded JPEG/PNG strings (a ``data:image/...;base64,`` prefix is allowed), raw bytes,
or uint8 arrays ``[H, W, 3]`` / ``[H, W]`` (nested lists over JSON). A bare uint8 array
``[N, H, W, 3]`` works from Python. Output, one row per image: ``class_ids``, ``labels`` (the
class ids of the dataset, e.g. WordNet synsets), ``names``, ``probs`` (softmax over the classes,
top ``top_k`` first) and ``error`` (null, or why this image was not classified: the other images
of the batch are still answered).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

DEFAULT_TOP_K = 5
_OUTPUT_COLUMNS = ("class_ids", "labels", "names", "probs", "error")


class IntegrityError(ValueError):
    """The weights are not the bytes the model card records."""


def verify_weights(weights_path: str, expected_sha256: str, *, where: str = "") -> None:
    """Raise `IntegrityError` naming the file when its sha256 is not the expected one."""
    if not expected_sha256:  # a card from before integrity checks: nothing to compare
        return
    digest = hashlib.sha256()
    with open(weights_path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != expected_sha256:
        raise IntegrityError(
            f"{where or weights_path}: sha256 {digest.hexdigest()[:16]}... does not match the "
            f"{expected_sha256[:16]}... recorded in the model card at registration; the file "
            "was modified or corrupted after registration. Restore the artifact or register "
            "the model again.")


class ImageClassifier:
    """A timm classifier with the card's evaluation preprocessing and class names."""

    def __init__(self, card: dict[str, Any], weights_path: str, *, verify: bool = True,
                 device: str | None = None) -> None:
        """Args:
            device: where the model runs; default: the GPU when torch sees one (decoding and
                resizing stay on the CPU, per image).
        """
        import timm
        import torch
        from safetensors.torch import load_file

        if verify:
            verify_weights(weights_path, card.get("weights_sha256", ""))
        self.card = card
        self.model = timm.create_model(card["arch"], pretrained=False,
                                       num_classes=card["num_classes"])
        self.model.load_state_dict(load_file(weights_path))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        _, self.height, self.width = card["input_size"]
        self.crop_pct = float(card.get("crop_pct", 0.875))
        self.mean = torch.tensor(card["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(card["std"], device=self.device).view(1, 3, 1, 1)
        classes = card.get("classes") or [{"id": str(i), "name": str(i)}
                                          for i in range(card["num_classes"])]
        self.labels = [c["id"] for c in classes]
        self.names = [c.get("name", c["id"]) for c in classes]

    @classmethod
    def from_files(cls, card_path: str, weights_path: str, *,
                   device: str | None = None) -> ImageClassifier:
        with open(card_path) as fh:
            return cls(json.load(fh), weights_path, device=device)

    def preprocess(self, item: Any):
        """One image (base64 str, bytes or uint8 array) -> a uint8 [3, H, W] tensor.

        The validation split's transform (hypernym.data.transforms.eval_transform): resize the
        shorter side to H / crop_pct (antialiased bilinear), then center-crop H x W.

        Raises:
            ValueError: not an image this model can read (the message says why).
        """
        import torch
        from torchvision.transforms.v2 import functional as TF

        if isinstance(item, str):
            text = item.split(",", 1)[1] if item.startswith("data:") else item
            try:
                item = base64.b64decode(text, validate=True)
            except ValueError:
                raise ValueError("not valid base64 (send the image file's bytes, "
                                 "base64-encoded)") from None
        if isinstance(item, (bytes, bytearray)):
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(io.BytesIO(item)) as image:
                    return self._crop(TF.pil_to_tensor(image.convert("RGB")))
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise ValueError(f"cannot decode the image ({len(item)} bytes): {exc}") from None
        else:
            pixels = np.asarray(item)
            if pixels.dtype != np.uint8:
                if not np.issubdtype(pixels.dtype, np.integer) or pixels.size == 0 or \
                        pixels.min() < 0 or pixels.max() > 255:
                    raise ValueError(f"an array image must hold uint8 pixels 0-255, got "
                                     f"dtype {pixels.dtype}")
                pixels = pixels.astype(np.uint8)
            if pixels.ndim == 2:
                pixels = np.repeat(pixels[:, :, None], 3, axis=2)
            if pixels.ndim != 3 or pixels.shape[2] != 3 or min(pixels.shape[:2]) < 1:
                raise ValueError(f"an array image must be [H, W, 3] or [H, W], got shape "
                                 f"{list(pixels.shape)}")
        return self._crop(torch.from_numpy(np.array(pixels)).permute(2, 0, 1))

    def _crop(self, tensor):
        from torchvision.transforms.v2 import functional as TF

        if self.height == self.width:
            tensor = TF.resize(tensor, [round(self.height / self.crop_pct)], antialias=True)
        else:
            tensor = TF.resize(tensor, [round(self.height / self.crop_pct),
                                        round(self.width / self.crop_pct)], antialias=True)
        return TF.center_crop(tensor, [self.height, self.width])

    def prepare(self, item: Any) -> tuple[Any, str | None]:
        """One image -> (uint8 [3, H, W] tensor, None), or (None, why it cannot be read).

        The per-image half of `predict`: a server may run it as each request arrives (PIL
        releases the GIL while decoding), so it overlaps the forward pass of the batch before.
        """
        try:
            return self.preprocess(item), None
        except ValueError as exc:
            return None, str(exc)

    @staticmethod
    def error_row(index: int, error: str) -> dict[str, Any]:
        """The answer for an image that could not be read: empty top-k, the reason numbered."""
        return {"class_ids": [], "labels": [], "names": [], "probs": [],
                "error": f"image {index}: {error}"}

    def classify(self, prepared: list[tuple[Any, str | None]],
                 top_k: int = DEFAULT_TOP_K) -> list[dict[str, Any]]:
        """Top-k rows of `prepare`'d images: one forward pass for all that were readable."""
        import torch

        k = max(1, min(int(top_k), len(self.labels)))
        rows: list[dict[str, Any]] = []
        batch, where = [], []
        for i, (tensor, error) in enumerate(prepared):
            rows.append(self.error_row(i, error) if error else {})
            if not error:
                batch.append(tensor)
                where.append(i)
        if batch:
            # uint8 crosses to the device (a quarter of the float bytes), then normalised there
            x = torch.stack(batch).to(self.device, non_blocking=True)
            x = (x.float() / 255.0 - self.mean) / self.std
            with torch.inference_mode():
                probs = self.model(x).float().softmax(dim=1)
            top = probs.topk(k, dim=1)
            for i, values, indices in zip(where, top.values.tolist(), top.indices.tolist(),
                                          strict=True):
                rows[i] = {"class_ids": indices, "labels": [self.labels[j] for j in indices],
                           "names": [self.names[j] for j in indices],
                           "probs": [round(p, 6) for p in values], "error": None}
        return rows

    def predict(self, items: list[Any], top_k: int = DEFAULT_TOP_K) -> list[dict[str, Any]]:
        """Top-k classes of each image; an unreadable image gets an ``error``, not an exception."""
        return self.classify([self.prepare(item) for item in items], top_k)


def images_from_input(model_input: Any) -> list[Any]:
    """The images of a pyfunc input: a DataFrame/dict column ``image`` (or the only column),
    a list of images, or a uint8 array ``[N, H, W, 3]``."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "image" in model_input.columns:
            column = model_input["image"]
        elif len(model_input.columns) == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(f"send the images in a column named 'image'; got columns "
                             f"{list(model_input.columns)}")
        cells = column.tolist()
    elif isinstance(model_input, dict):
        if "image" not in model_input:
            raise ValueError(f"send the images under 'image'; got keys {list(model_input)}")
        cells = list(model_input["image"])
    elif isinstance(model_input, np.ndarray) and model_input.dtype != object:
        return list(model_input) if model_input.ndim == 4 else [model_input]
    else:
        cells = list(model_input)
    images: list[Any] = []
    for cell in cells:  # MLflow folds an `inputs` list of strings into one row holding the list
        if isinstance(cell, (list, np.ndarray)) and len(cell) and \
                all(isinstance(c, (str, bytes)) for c in cell):
            images.extend(cell)
        else:
            images.append(cell)
    return images


class HypernymImageModel(PythonModel):
    def load_context(self, context):
        self.classifier = ImageClassifier.from_files(context.artifacts["card"],
                                                     context.artifacts["weights"])

    def predict(self, context, model_input, params=None):
        """Images -> one row per image: class_ids, labels, names, probs, error."""
        import pandas as pd

        top_k = int((params or {}).get("top_k", DEFAULT_TOP_K))
        rows = self.classifier.predict(images_from_input(model_input), top_k=top_k)
        # object columns: a null error stays None (JSON null), never NaN
        return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object)
                             for c in _OUTPUT_COLUMNS})


mlflow.models.set_model(HypernymImageModel())
