"""MLflow "models from code" entry: a timm model rebuilt from safetensors + card.json.

Logged as a plain .py file (not a pickle), so ``mlflow.pyfunc.load_model`` runs no serialized
code: it imports this file and loads weights with safetensors.
"""

import json

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class HypernymTimmModel(PythonModel):
    def load_context(self, context):
        import timm
        import torch
        from safetensors.torch import load_file

        with open(context.artifacts["card"]) as fh:
            self.card = json.load(fh)
        self.model = timm.create_model(
            self.card["arch"], pretrained=False, num_classes=self.card["num_classes"]
        )
        self.model.load_state_dict(load_file(context.artifacts["weights"]))
        self.model.eval()
        self._torch = torch

    def predict(self, context, model_input, params=None):
        """Normalised float32 images [N, 3, H, W] -> logits [N, num_classes]."""
        batch = self._torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with self._torch.no_grad():
            return self.model(batch).numpy()


mlflow.models.set_model(HypernymTimmModel())
