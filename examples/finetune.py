"""Fine-tune a registered backbone on domain data: full, or a linear probe with `mode=linear`.

    .venv/bin/python examples/finetune.py [full|linear]
"""

import sys

from hypernym.config import load_recipe
from hypernym.train import run_training

mode = sys.argv[1] if len(sys.argv) > 1 else "full"
recipe = load_recipe(
    "pipelines/finetune/demo.yaml",
    [f"mode={mode}", f"name=example-finetune-{mode}", f"registry.name=example-digits-{mode}"],
)
result = run_training(recipe)
print(mode, "val top-1", result.metrics.get("val/top1"), "registered", result.registered)
