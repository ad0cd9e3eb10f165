"""Pretrain from a recipe file with overrides; the same call `hypernym pretrain` makes.

    .venv/bin/python examples/pretrain.py
"""

from hypernym.config import load_recipe
from hypernym.train import run_training

recipe = load_recipe(
    "pipelines/pretrain/demo.yaml",
    ["train.epochs=2", "name=example-pretrain", "registry.name=example-backbone"],
)
result = run_training(recipe)
print("run", result.run_id, "val top-1", result.metrics.get("val/top1"))
print("registered", result.registered)
