"""Distillation through the real stack: a teacher trained and registered in MLflow, refused when
its classes or hierarchy are not the student's, run online in process (consistent teaching,
resizing, metrics, lineage), written as a teacher store on an S3 server by Ray actors, replayed
offline from S3 (the same views on any worker layout, exactly once across a resume). Everything
trains in process but one run on Ray Train (two workers, FSDP, the teacher loaded once per
worker); Ray runs the dataset's preparation and the store's actors."""

from __future__ import annotations

import hashlib
import sys

import pytest
import timm
import torch
import torch.nn.functional as F

from hypernym.config import parse_recipe
from hypernym.data.dataset import open_dataset
from hypernym.data.schedule import EpochProgress
from hypernym.errors import HypernymError
from hypernym.registry.card import ModelCard
from hypernym.registry.models import fetch_card, register_model, resolve
from hypernym.settings import get_settings
from hypernym.tracking import metric_history, run_summary, start_run
from hypernym.train import Trainer, build_task, run_training
from hypernym.train.core import Hooks
from hypernym.train.distill.store_job import write_store
from hypernym.train.distributed import all_reduce_sum
from hypernym.train.loaders import ShardLoaders
from hypernym.train.tasks.distill import DistillTask
from tests.servers import moto_s3

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def hypernym_home(tmp_path_factory):
    """One home (MLflow registry) for the module: the teacher is registered once."""
    home = tmp_path_factory.mktemp("distill-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HYPERNYM_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def s3(hypernym_home):
    import ray

    with moto_s3("hyp"):
        # Ray workers take the driver's environment when Ray starts: start a fresh one now.
        ray.shutdown()
        ray.init(address="local", num_cpus=2, include_dashboard=False)
        yield "s3://hyp"
        ray.shutdown()


@pytest.fixture(scope="module")
def glyphs(s3, tmp_path_factory):
    """20 glyph classes (16 leaves under 4 groups: a two-level hierarchy), 24 images each."""
    from hypernym.data.demo import DEMO_CLASSES, make_winter21
    from hypernym.data.prepare import prepare

    root = tmp_path_factory.mktemp("glyphs")
    make_winter21(root / "raw", images_per_class=24, image_size=(40, 40), seed=3,
                  classes=DEMO_CLASSES)
    prepare(parse_recipe({
        "kind": "prepare", "source": str(root / "raw"), "output": str(root / "ds"),
        "val_per_class": 4, "min_per_class": 0, "image_size": 36, "shard_samples": 128,
    }), show_progress=False)
    return str(root / "ds")


def recipe(data, name, *, distill=None, img_size=32, arch="test_resnet", epochs=1, train=None,
           scaling=None, registry=None, data_kw=None):
    return parse_recipe({
        "kind": "pretrain", "name": name, "experiment": "distill",
        "data": {"path": data, "img_size": img_size, "batch_size": 16, "crop_scale": [0.5, 1],
                 **(data_kw or {})},
        "model": {"arch": arch}, "optim": {"lr": 3e-3, "warmup_epochs": 0},
        "train": {"epochs": epochs, "log_every": 1, "system_metrics_s": None,
                  **({"distill": distill} if distill else {}), **(train or {})},
        "scaling": {"num_workers": 1, **(scaling or {})},
        "registry": {"name": None, **(registry or {})},
    })


@pytest.fixture(scope="module")
def teacher(glyphs):
    """A resnet10t trained one epoch on the glyphs at 32 px and registered (``teacher/1``)."""
    result = run_training(recipe(glyphs, "teacher", arch="resnet10t",
                                 registry={"name": "teacher"}),
                          in_process=True, show_progress=False)
    return f"teacher/{result.registered.version}"


def register_other(name: str, card: dict) -> str:
    """A registered resnet10t with the given card fields (no training: only its card matters)."""
    settings = get_settings()
    run_id = start_run(experiment="t", run_name=name, settings=settings, tags={})
    fields = {"arch": "test_resnet", "input_size": [3, 32, 32], "mean": [0.485, 0.456, 0.406],
              "std": [0.229, 0.224, 0.225], "task": "pretrain", "run_id": run_id, **card}
    model = timm.create_model("test_resnet", num_classes=fields["num_classes"])
    reg = register_model(run_id=run_id, name=name, model=model, card=ModelCard(**fields),
                         settings=settings)
    return f"{name}/{reg.version}"


def all_runs() -> int:
    """How many runs the tracking server holds, over every experiment."""
    from mlflow.tracking import MlflowClient

    c = MlflowClient(get_settings().tracking_uri)
    return len(c.search_runs([e.experiment_id for e in c.search_experiments()]))


def test_a_teacher_that_cannot_teach_is_refused_before_any_run(glyphs, teacher):
    data = open_dataset(glyphs)
    ids = data.class_ids
    paths = data.manifest.hierarchy["class_paths"]
    other = register_other("other-classes", {"num_classes": 3, "classes": [
        {"id": c, "name": c} for c in ids[:2] + ["n09999999"]]})
    flat = register_other("flat-tree", {"num_classes": len(ids), "classes": [
        {"id": c, "name": c} for c in reversed(ids)],
        "hierarchy": {"kind": "flat", "class_paths": {c: [c] for c in ids}}})
    semantic = register_other("semantic-teacher", {
        "num_classes": len(ids), "classes": [{"id": c, "name": c} for c in ids],
        "loss": "semantic", "hierarchy": {"kind": "wordnet", "class_paths": paths}})
    runs_before = all_runs()
    cases = [
        ({"teacher": other}, [other, "test_resnet", "'mismatch'", "18 of the student's classes",
                              "n09999999"]),
        ({"teacher": flat, "loss": "semantic"}, [flat, "class hierarchy", "'mismatch'"]),
        ({"teacher": semantic}, [semantic, "semantic softmax", "'mismatch'"]),
    ]
    for distill, needles in cases:
        with pytest.raises(HypernymError) as err:
            run_training(recipe(glyphs, "mismatch", distill=distill), in_process=True,
                         show_progress=False)
        for needle in needles:
            assert needle in str(err.value), (needle, str(err.value))
    # the same class list in another order teaches (its outputs are reordered), with kl
    build_task(recipe(glyphs, "reordered", distill={"teacher": flat}), open_dataset(glyphs))
    assert all_runs() == runs_before


def test_online_teacher_sees_the_students_mixed_batch_resized(glyphs, teacher):
    """Consistent teaching: the teacher's input is the student's batch after Mixup/CutMix, brought
    to the teacher's input size (32) from the student's (24) on the device."""
    r = recipe(glyphs, "consistent", img_size=24,
               distill={"teacher": teacher, "temperature": 2.0, "alpha": 0.3},
               train={"mixup_alpha": 0.8, "cutmix_alpha": 1.0})
    trainer = Trainer.from_recipe(r)
    seen = {}
    trainer.state.model.register_forward_pre_hook(lambda m, a: seen.__setitem__("student", a[0]))
    trainer.task._teacher.model.register_forward_pre_hook(
        lambda m, a: seen.__setitem__("teacher", a[0]))
    batch = next(iter(trainer.loaders.train(0, trainer.state.progress)))
    unmixed = trainer.normalize(batch.image)
    result = trainer.train_step([batch])
    student, taught = seen["student"], seen["teacher"]
    assert student.shape[-1] == 24 and taught.shape[-1] == 32
    assert not torch.allclose(student, unmixed)  # mixed (mix_prob 1)
    assert torch.allclose(taught, F.interpolate(student, size=(32, 32), mode="bilinear",
                                                antialias=True, align_corners=False))
    assert set(result.parts) == {"hard", "distill"} and result.loss > 0
    assert not any(p.requires_grad for p in trainer.task._teacher.model.parameters())
    assert not trainer.task._teacher.model.training


def test_online_distillation_in_process(glyphs, teacher):
    from hypernym.registry.lineage import lineage
    from hypernym.registry.lineage_view import tree
    from hypernym.registry.models import pull

    result = run_training(recipe(glyphs, "online", epochs=2,
                                 distill={"teacher": "teacher@candidate", "temperature": 2.0},
                                 train={"ema_decay": 0.9}, registry={"name": "student"}),
                          in_process=True, show_progress=False)
    m = result.metrics
    for key in ("val/teacher_agreement", "val/teacher_top1", "val_ema/teacher_agreement"):
        assert 0 <= m[key] <= 1, key
    run = run_summary(result.run_id)
    assert run.tags["hypernym.teacher"] == teacher
    assert run.tags["hypernym.task"] == "classification+distill"
    for key in ("train/loss_hard", "train/loss_distill"):
        assert len(metric_history(result.run_id, key)) >= 2, key
    version = resolve("student@candidate")
    sha = fetch_card(teacher).weights_sha256
    assert version.tags["teacher"] == teacher and version.tags["teacher_sha256"] == sha
    card = fetch_card("student@candidate")
    assert card.lineage["teacher_arch"] == "resnet10t" and card.lineage["distill_loss"] == "kl"
    node = lineage("student@candidate")["chain"][-1]
    assert node["teacher"]["teacher"] == teacher
    from rich.console import Console

    console = Console(record=True, width=300)
    console.print(tree(lineage("student@candidate")))
    assert f"distilled from teacher {teacher}" in console.export_text()
    readme = (pull("student@candidate", get_settings().home / "pulled") / "README.md").read_text()
    assert f"Distilled from the registered teacher `{teacher}`" in readme
    assert f"weights sha256 `{sha}`" in readme


class CountingDistill(DistillTask):
    """The recipe's distillation task, counting the teachers its process loads; its meter adds
    ``teacher_loads``, summed over the ranks (logged as ``val/teacher_loads``)."""

    loads = 0

    def setup(self, device):
        before = self._teacher
        super().setup(device)
        if self._teacher is not before:
            self.loads += 1

    def meter(self, device):
        return LoadsMeter(super().meter(device), self, device)


class LoadsMeter:
    def __init__(self, base, task, device) -> None:
        self.base, self.task, self.device = base, task, device

    def update(self, outputs, target) -> None:
        self.base.update(outputs, target)

    def compute(self) -> dict[str, float]:
        loads = all_reduce_sum(torch.tensor([float(self.task.loads)], device=self.device))
        return {**self.base.compute(), "teacher_loads": loads.item()}


def test_online_distillation_on_ray_train_with_two_workers_and_fsdp(glyphs, teacher):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the task class above
    r = recipe(glyphs, "fsdp", epochs=2, distill={"teacher": teacher, "temperature": 2.0},
               scaling={"num_workers": 2, "strategy": "fsdp"})
    task = CountingDistill.from_recipe(r, open_dataset(glyphs),
                                       base=build_task(recipe(glyphs, "base"),
                                                       open_dataset(glyphs)))
    result = run_training(r, task=task, show_progress=False)
    assert task.loads == 0  # the driver never loads the teacher
    run = run_summary(result.run_id)
    assert run.tags["hypernym.teacher"] == teacher and run.status == "FINISHED"
    # each of the 2 workers loaded the teacher once (each needs one: a sum of 2 is 1 each),
    # for both epochs
    assert metric_history(result.run_id, "val/teacher_loads") == [2.0, 2.0]
    for key in ("train/loss_hard", "train/loss_distill"):
        assert len(metric_history(result.run_id, key)) >= 2, key
    assert 0 <= result.metrics["val/teacher_agreement"] <= 1
    assert result.metrics["val/teacher_top1"] > 0


@pytest.fixture(scope="module")
def store(glyphs, teacher, s3):
    """The teacher's store on the S3 server: semantic soft labels, 4 views, top-3 per level."""
    out = f"{s3}/store"
    manifest = write_store(teacher, glyphs, out=out, views=4, topk=3, loss="semantic",
                           crop_scale=(0.5, 1.0), show_progress=False)
    return out, manifest


def test_the_store_on_s3(glyphs, store):
    from hypernym.data.storage import open_fs
    from hypernym.train.distill.store_format import decode_sidecar

    out, manifest = store
    data = open_dataset(glyphs)
    assert manifest.kind == "semantic" and manifest.views == 4
    assert len(manifest.levels) == 2 and manifest.topk == [3, 3]
    assert {s: [i.shard for i in v] for s, v in manifest.sidecars.items()} == {
        s: [i.name for i in v] for s, v in data.manifest.splits.items()}
    fs = open_fs(out)[0]
    names = {p.rsplit("/", 1)[-1] for p in fs.ls(out)}
    assert "store.json" in names and "_parts" not in names
    info = manifest.sidecars["train"][0]
    sidecar = decode_sidecar(fs.cat_file(f"{out}/{info.name}"))
    a = sidecar.arrays
    n = info.samples
    assert a["box"].shape == (n, 4, 4) and a["prob"].shape == (n, 4, 6)
    assert a["conf"].shape == (n, 4, 2) and a["rest"].shape == (n, 4, 2)
    # each level's kept probabilities and its rest make one distribution
    totals = a["prob"].astype("float32").reshape(n, 4, 2, 3).sum(-1) + a["rest"]
    assert abs(totals - 1).max() < 0.01
    # the bytes per view are those of the arrays, measured (plus the keys, once per image)
    per_view = 8 + 1 + 2 * (2 * 3 * 2 + 2 + 2)
    assert per_view <= manifest.bytes_per_view < per_view + 10
    with pytest.raises(HypernymError, match="already holds a teacher store"):
        write_store(manifest.teacher, glyphs, out=out, views=4, topk=3, loss="semantic",
                    crop_scale=(0.5, 1.0), show_progress=False)


def test_offline_distillation_from_s3(glyphs, store):
    out, manifest = store
    with pytest.raises(HypernymError, match="needs flat ones"):
        run_training(recipe(glyphs, "wrong-kind", distill={"store": out}), in_process=True,
                     show_progress=False)
    with pytest.raises(HypernymError, match="crop_scale"):
        run_training(recipe(glyphs, "wrong-crop", distill={"store": out, "loss": "semantic"},
                            data_kw={"crop_scale": [0.08, 1.0]}),
                     in_process=True, show_progress=False)
    result = run_training(recipe(glyphs, "offline", distill={"store": out, "loss": "semantic"},
                                 train={"mixup_alpha": 0.8, "loss": "semantic"},
                                 registry={"name": "student-offline"}),
                          in_process=True, show_progress=False)
    assert 0 <= result.metrics["val/teacher_agreement"] <= 1
    assert result.metrics["val/teacher_top1"] > 0
    card = fetch_card("student-offline@candidate")
    assert card.lineage["distill_store_fingerprint"] == manifest.fingerprint
    assert card.lineage["distill_store"] == out and card.lineage["teacher"] == manifest.teacher


def seen_samples(r, *, world: int, workers: int, epoch: int = 1) -> dict[int, tuple]:
    """id -> (image digest, stored soft label) of an epoch's training samples over ``world``
    ranks with ``workers`` loader processes each."""
    data = open_dataset(r.data.path)
    task = build_task(r, data)
    out = {}
    spec = r.data.model_copy(update={"loader_workers": workers})
    for rank in range(world):
        loaders = ShardLoaders(spec, data, task.codec(), rank=rank, world=world)
        for batch in loaders.train(epoch, EpochProgress(loaders.split_sizes(), epoch)):
            for i, sample_id in enumerate(batch.id.tolist()):
                image = hashlib.sha256(batch.image[i].contiguous().numpy().tobytes()).hexdigest()
                out[sample_id] = (image, tuple(batch.target.cls[i].tolist()),
                                  tuple(batch.target.prob[i].tolist()))
    return out


def test_views_do_not_depend_on_the_worker_layout_and_resume_exactly_once(glyphs, store):
    out, _ = store
    r = recipe(glyphs, "layout", distill={"store": out, "loss": "semantic_kl"})
    one = seen_samples(r, world=1, workers=0)
    two = seen_samples(r, world=2, workers=2)
    common = one.keys() & two.keys()  # the epoch's remainder differs with the world size
    assert len(common) > 0.8 * len(one)
    assert all(one[i] == two[i] for i in common)
    assert seen_samples(r, world=1, workers=0, epoch=2) != one  # another epoch, other views

    # A run interrupted mid-epoch and resumed from its checkpoint state (with loader processes
    # now) trains each sample once, on the view an uninterrupted run gives it.
    class Trace:
        def __init__(self):
            self.seen = {}

        def add(self, epoch, step, batches):
            for b in batches:
                for i, sample_id in enumerate(b.id.tolist()):
                    assert sample_id not in self.seen, "a sample trained twice"
                    self.seen[sample_id] = tuple(b.target.prob[i].tolist())

    class Interrupted(Exception):
        pass

    class StopAtFirstCheckpoint(Hooks):
        def mid_epoch(self, trainer):
            self.state = trainer.state_dict()
            raise Interrupted

    r = r.model_copy(update={"train": r.train.model_copy(update={"checkpoint_every": 3})})
    trace, hooks = Trace(), StopAtFirstCheckpoint()
    first = Trainer.from_recipe(r, hooks=hooks)
    first.records.append(trace)
    with pytest.raises(Interrupted):
        first.train_epoch(0)
    assert len(trace.seen) == 3 * 16
    second = Trainer.from_recipe(r.model_copy(update={"data": r.data.model_copy(
        update={"loader_workers": 2})}))
    second.load_state_dict(hooks.state)
    second.records.append(trace)
    second.train_epoch(0)
    reference = seen_samples(r, world=1, workers=0, epoch=0)
    assert set(trace.seen) == set(reference)
    assert all(trace.seen[i] == reference[i][2] for i in trace.seen)
