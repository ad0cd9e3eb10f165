"""Every shipped recipe validates, and the demo recipes match what `hypernym demo` runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypernym.config import load_recipe, parse_recipe
from hypernym.demo import DemoConfig, demo_recipes

PIPELINES = Path(__file__).resolve().parents[3] / "pipelines"


@pytest.mark.parametrize("path", sorted(PIPELINES.rglob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipe_validates(path):
    recipe = load_recipe(path)
    assert recipe.kind == path.parent.name


def test_demo_recipes_in_pipelines_match_the_demo():
    ran = demo_recipes(DemoConfig(), Path(".hypernym/demo"))
    for shipped, name in (("pretrain/demo.yaml", "pretrain"), ("finetune/demo.yaml", "finetune"),
                          ("prepare/folder.yaml", "prepare-digits")):
        file_recipe = load_recipe(PIPELINES / shipped).model_dump()
        demo_recipe = parse_recipe(ran[name]).model_dump()
        # the demo overwrites its own outputs; a user's recipe must not by default
        demo_recipe.pop("overwrite", None), file_recipe.pop("overwrite", None)
        keys = ("data", "model", "optim", "scaling", "registry", "backbone", "source", "output")
        for key in keys:
            assert file_recipe.get(key) == demo_recipe.get(key), (shipped, key)
