"""Lineage from MLflow alone, guarded promotion, and concurrent registrations of one name."""

from __future__ import annotations

import json
import multiprocessing as mp
import time

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from hypernym.errors import HypernymError
from hypernym.registry.models import fetch_card, pull
from hypernym.registry.promote import promote
from tests.integration.registry.helpers import make_run, register_run, register_tiny, settings_at

pytestmark = pytest.mark.integration

DIGITS = {"name": "digits", "fingerprint": "d" * 64, "uri": "/data/digits",
          "images": {"train": 1500, "val": 297}, "excluded_subtrees": [],
          "recipe": {"source_format": "folder"}}


def _register(root: str, jobs, seed: int) -> None:
    """A child process: import the heavy stack first, then register when the parent says so."""
    from pathlib import Path

    from hypernym.registry.card import ModelCard

    run_id, card_json = jobs.get(timeout=1800)  # the parent registers first (slow when loaded)
    register_run(settings_at(Path(root)), run_id, ModelCard.model_validate_json(card_json),
                 "ft", "candidate", seed=seed)


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """bb v1 (pretrain), then two processes registering ft at once (val/top1 0.7 and 0.9).

    The children start first, so their imports (torch, timm, mlflow: most of their time)
    overlap the parent's own registration; both get their run at the same moment.
    """
    root = tmp_path_factory.mktemp("lineage")
    settings = settings_at(root)
    ctx = mp.get_context("spawn")
    jobs = [ctx.Queue() for _ in range(2)]
    children = [ctx.Process(target=_register, args=(str(root), queue, seed))
                for seed, queue in enumerate(jobs)]
    for child in children:
        child.start()
    try:
        register_tiny(settings, name="bb", metrics={"val/top1": 0.61})
        runs = [make_run(settings, "ft", kind="finetune", metrics={"val/top1": top1},
                         parent="bb/1", dataset=DIGITS) for top1 in (0.7, 0.9)]
    except BaseException:
        for child in children:  # they would wait for a run that never comes
            child.terminate()
        raise
    for queue, (run_id, card) in zip(jobs, runs, strict=True):
        queue.put((run_id, card.model_dump_json()))
    seen = set()
    c = MlflowClient(settings.tracking_uri)
    while any(child.is_alive() for child in children):
        try:  # whatever the alias points at, at any moment, is a complete version
            version = c.get_model_version_by_alias("ft", "candidate")
        except Exception:  # noqa: BLE001 - not registered yet
            time.sleep(0.5)
            continue
        if version.version not in seen:
            assert version.status == "READY"
            fetch_card(f"ft/{version.version}", settings=settings)  # card sha256 verified
            seen.add(version.version)
        time.sleep(0.5)
    for child in children:
        child.join(300)
        assert child.exitcode == 0
    return settings


def test_concurrent_registrations_both_get_versions(chain, tmp_path):
    c = MlflowClient(chain.tracking_uri)
    versions = sorted(int(v.version) for v in c.search_model_versions("name='ft'"))
    assert versions == [1, 2]
    holder = c.get_model_version_by_alias("ft", "candidate")
    assert holder.status == "READY"
    pull("ft@candidate", tmp_path, settings=chain)  # complete, sha256 verified


def test_lineage_json_and_tree(chain, monkeypatch):
    from hypernym.cli import app

    monkeypatch.setenv("MLFLOW_TRACKING_URI", chain.tracking_uri)
    result = CliRunner().invoke(app, ["models", "lineage", "ft/1", "--json"])
    assert result.exit_code == 0, result.output
    nodes = json.loads(result.output)["chain"]
    assert [n["kind"] for n in nodes] == ["dataset", "run", "model_version", "dataset", "run",
                                          "model_version"]
    data, pre_run, backbone, ft_data, ft_run, model = nodes
    assert (data["name"], data["fingerprint"], data["uri"]) == ("mini-in21k", "f" * 64,
                                                               "/data/mini")
    assert data["excluded_subtrees"] == ["n00007846"] and data["images"]["val"] == 50
    assert data["recipe"]["source_format"] == "winter21"
    assert pre_run["status"] == "FINISHED" and pre_run["metrics"]["val/top1"] == 0.61
    assert pre_run["task"] == "pretrain" and pre_run["recipe"]["model.arch"] == "resnet10t"
    assert (backbone["name"], backbone["version"], backbone["aliases"]) == ("bb", 1,
                                                                           ["candidate"])
    assert ft_data["name"] == "digits" and ft_run["task"] == "finetune"
    assert model["name"] == "ft" and model["parent"] == "bb/1"
    assert model["run_id"] == ft_run["run_id"] and backbone["run_id"] == pre_run["run_id"]

    tree = CliRunner().invoke(app, ["models", "lineage", "ft/1"], terminal_width=200)
    assert tree.exit_code == 0, tree.output
    for text in ("dataset mini-in21k", "excluded subtrees: n00007846", "pretrain run",
                 "bb v1 @candidate", "finetune run", "dataset digits", "ft v1"):
        assert text in tree.output
    assert tree.output.index("mini-in21k") < tree.output.index("bb v1") < \
        tree.output.index("ft v1")


def test_promote_only_when_better(chain, monkeypatch):
    from hypernym.cli import app

    c = MlflowClient(chain.tracking_uri)
    better = {v.version: float(c.get_run(v.run_id).data.metrics["val/top1"])
              for v in c.search_model_versions("name='ft'")}
    best = max(better, key=better.get)
    worse = min(better, key=better.get)
    first = promote(f"ft/{worse}", alias="champion", if_better="val/top1", settings=chain)
    assert first.moved and first.reason == "no version held @champion"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", chain.tracking_uri)
    result = CliRunner().invoke(app, ["models", "promote", f"ft/{best}", "--alias", "champion",
                                      "--if-better", "val/top1"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"moved ft@champion -> v{best}: v{best} val/top1 0.9000 beats @champion " \
           f"v{worse}'s 0.7000 (max)" in result.output
    again = promote(f"ft/{worse}", alias="champion", if_better="val/top1", settings=chain)
    assert not again.moved and "0.7000 is not higher than @champion" in again.reason
    assert int(c.get_model_version_by_alias("ft", "champion").version) == int(best)
    lower = promote(f"ft/{worse}", alias="champion", if_better="val/top1", mode="min",
                    settings=chain)
    assert lower.moved  # for a loss-like metric, lower wins
    with pytest.raises(HypernymError, match="recorded no 'val/top5'; it has: val/top1"):
        promote(f"ft/{best}", alias="champion", if_better="val/top5", settings=chain)
    with pytest.raises(HypernymError, match="reserved"):
        promote("ft/1", alias="latest", settings=chain)
