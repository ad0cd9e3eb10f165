"""The user tasks on a cluster whose hosts share nothing but the network (infra/local_stack.sh:
Ray head + one-CPU worker nodes, each in its own mount namespace on its own loopback address;
moto S3; MLflow with PostgreSQL, basic auth and artifacts on S3), with its faults, in one rig
start-up:

1. `hypernym submit` a prepare recipe, S3 to S3;
2. the head's tracking password is wrong: the job fails with a clear error before any Ray work;
3. `hypernym submit` a pretrain recipe, 2 workers on 2 worker nodes, checkpoints on S3: the node
   of rank 1 dies mid-epoch and a fresh node (empty home) joins;
4. mid-epoch the head dies (its GCS, the job's driver, Ray Train's controller) and the worker
   nodes with it; a fresh head and one 2-CPU worker node start (another shape of
   cluster); `hypernym runs list` shows the run abandoned, `hypernym runs show` prints the
   command that resumes it, and that command (`hypernym submit --resume RUN_ID`, with the
   recipe the run logged) continues it on the fresh cluster;
5. in the resumed attempt S3 stops for 20 s and the tracking server for 30 s; the run ends
   FINISHED in one MLflow run with every sample trained exactly once over the whole history
   and every metric logged; the backbone is registered once, its weights in the artifacts
   bucket through the tracking server;
6. a teacher store of the backbone written on S3 by a job (`hypernym distill store`, Ray actors
   on the fresh cluster); `hypernym submit` a fine-tune from ``NAME@alias`` distilled from that
   store, then pull and load it on the client.

Nothing a worker reads is on the client's disk: the nodes cannot see it (checked), and every
location in the recipes is on S3 or the tracking server. The sample trace (HYPERNYM_SAMPLE_TRACE)
is the one folder every node sees: the rig binds it into each namespace, as a log collector
would; hypernym itself never relies on it.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.cluster.conftest import (
    hypernym,
    hypernym_async,
    node_of,
    node_sees,
    wait_job,
)
from tests.integration.train.trace import (
    BATCH,
    attempts,
    check_exactly_once,
    checkpoint_recorded,
    surviving_history,
    trace_step,
    wait_until,
)


def attempt_step(trace: Path, start: int) -> int:
    """The highest step the attempt that started at step ``start`` has trained."""
    top = 0
    for path in trace.glob(f"from-{start:08d}-rank*.txt"):
        lines = path.read_text().splitlines()
        if lines:
            top = max(top, int(lines[-1].split()[1]))
    return top

# Where `unshare --mount` is not permitted (not root), the rig fixture skips, saying why.
# The time limit is a failure bound for a saturated machine.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

EVERY, LOG_EVERY = 8, 2  # checkpoint and metric intervals, in steps (20 steps an epoch)
ARCH = "test_resnet"  # timm's 0.4 M-parameter test model: small checkpoints to upload
SYSTEM_METRICS_S = 2
S3_OUTAGE_S, TRACKING_OUTAGE_S = 20, 30
SNAPSHOTS = "runs/hypernym/*/checkpoint_manager_snapshot.json"  # Ray Train's, on S3
EPOCHS = 2
# The head dies once the restarted attempt's first checkpoint is recorded: recording lags the
# step by a few steps, and killing a cluster takes a few more, so the loss lands mid-epoch
# with the run's end still far off.
HEAD_LOSS_AT = 2 * EVERY
STALE_S = 20  # `hypernym runs list --stale-after`: the run's silence that makes it abandoned
KD_STORE = "s3://data/kd-store"  # the backbone's teacher store, for the distilled fine-tune


def recipe(path: Path, body: dict) -> str:
    path.write_text(yaml.safe_dump(body))
    return str(path)


def test_user_tasks_and_faults_on_a_cluster_that_shares_nothing(rig, tmp_path, monkeypatch):
    import fsspec
    from mlflow.tracking import MlflowClient

    from hypernym.data.demo import DEMO_SYNSETS, make_winter21
    from hypernym.data.manifest import read_manifest
    from hypernym.jobs.submit import job_logs
    from hypernym.registry.models import load_backbone

    started = time.perf_counter()

    def clock() -> str:  # seconds since the rig was up, for the phase times in docs/cluster.md
        return f"{time.perf_counter() - started:4.0f} s"

    for key, value in rig.client_env().items():
        monkeypatch.setenv(key, value)
    home = Path(os.environ["HYPERNYM_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "canary").write_text("the client's disk")
    for name in rig.info["nodes"]:  # the nodes share nothing with the client but the network
        assert not node_sees(rig, name, home / "canary"), f"node {name} sees the client's home"
        assert not node_sees(rig, name, tmp_path), f"node {name} sees the client's tmp"
    fs = fsspec.filesystem("s3")
    make_winter21(tmp_path / "raw", images_per_class=42, image_size=(64, 56), seed=7,
                  classes=DEMO_SYNSETS[::2])
    fs.put(f"{tmp_path / 'raw'}/", "data/raw/", recursive=True)

    pretrain = recipe(tmp_path / "pretrain.yaml", {
        "kind": "pretrain", "name": "rig-pretrain", "experiment": "rig",
        # A rank's epoch here (160 samples) would fit the default shuffle buffer (512): the
        # reader would hold it all before a mid-epoch outage and never meet it.
        "data": {"path": "s3://data/ds", "img_size": 32, "batch_size": BATCH,
                 "loader_workers": 0, "shuffle_buffer": 16},
        "model": {"arch": ARCH}, "optim": {"lr": 1e-3, "warmup_epochs": 0},
        "train": {"epochs": EPOCHS, "log_every": LOG_EVERY, "checkpoint_every": EVERY,
                  "system_metrics_s": SYSTEM_METRICS_S},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1},
        "registry": {"name": "rig-backbone", "alias": "candidate"}})
    client = MlflowClient()

    # 1. prepare, S3 to S3, on the worker nodes; meanwhile (2.) the same pretrain recipe with a
    # wrong tracking password for the head: refused before any Ray work (no MLflow run)
    refused = hypernym_async("submit", pretrain, "--forward-credentials", "--follow",
                             env={"MLFLOW_TRACKING_PASSWORD": "not-the-password"})
    out = hypernym("submit", recipe(tmp_path / "prepare.yaml", {
        "kind": "prepare", "source": "s3://data/raw", "output": "s3://data/ds",
        "val_per_class": 2, "min_per_class": 0, "image_size": 36, "shard_samples": 8}),
        "--follow")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    manifest = read_manifest("s3://data/ds")
    total = manifest.num_samples("train")
    assert total == 8 * 40
    print(f"[{clock()}] prepare S3 -> S3: {total} training samples")

    out = refused.result()
    assert out.returncode != 0
    assert "refused the credentials of user 'admin'" in out.stdout, out.stdout[-3000:]
    assert "not-the-password" not in out.stdout + out.stderr
    assert client.get_experiment_by_name("rig") is None, "a run was started regardless"
    print(f"[{clock()}] wrong tracking password: refused before any Ray work (no run, no workers)")

    # 3. pretrain across the worker nodes; a node dies mid-epoch, a fresh one joins
    trace = Path(rig.info["shared"]) / "pretrain"
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(trace))  # travels with the job
    out = hypernym("submit", pretrain)
    assert out.returncode == 0, out.stderr[-3000:]
    steps = total // (2 * BATCH)
    wait_until(lambda: checkpoint_recorded(fs, SNAPSHOTS, EVERY), timeout_s=600,
               what=f"the checkpoint of step {EVERY} (node loss)")
    rank1 = next(trace.glob("from-00000000-rank1-pid*.txt"))
    victim = node_of(rig, int(re.search(r"pid(\d+)", rank1.name).group(1)))
    rank0 = next(trace.glob("from-00000000-rank0-pid*.txt"))
    assert victim != node_of(rig, int(re.search(r"pid(\d+)", rank0.name).group(1))), \
        "the two workers share a node"
    rig.kill_node(victim)
    fresh = rig.add_node()  # as an autoscaler would; returns once the head sees it
    print(f"[{clock()}] killed node {victim} (rank 1) after step {trace_step(trace)}; "
          f"fresh node {fresh.name} on {fresh.ip}")

    # 4. the head dies (and the old cluster with it) mid-epoch, after a recorded checkpoint; a
    # fresh cluster of another shape; find the run, resume it
    wait_until(lambda: checkpoint_recorded(fs, SNAPSHOTS, HEAD_LOSS_AT), timeout_s=600,
               what=f"the checkpoint of step {HEAD_LOSS_AT} (head loss)")
    rig.kill_cluster()
    killed_at, lost_at = time.monotonic(), trace_step(trace)
    assert lost_at % steps and lost_at < EPOCHS * steps, f"step {lost_at}: not mid-epoch"
    print(f"[{clock()}] head lost (with its job, and the worker nodes) at step {lost_at}")
    rig.start_cluster(workers=1, cpus=2)
    print(f"[{clock()}] fresh head and one 2-CPU worker node up")
    (run,) = client.search_runs([client.get_experiment_by_name("rig").experiment_id])
    run_id = run.info.run_id
    from hypernym.train.verify import SNAPSHOT_FILE, read_manifest, recorded_names

    run_dir = f"runs/hypernym/rig-pretrain-{run_id[:12]}"
    fs.invalidate_cache()
    latest = recorded_names(fs.cat_file(f"{run_dir}/{SNAPSHOT_FILE}"))[-1]
    resume_at = read_manifest(f"{run_dir}/{latest}", fs=fs).step
    time.sleep(max(0.0, STALE_S + 2 - (time.monotonic() - killed_at)))
    listed = hypernym("runs", "list", "--stale-after", f"{STALE_S}s")
    assert listed.returncode == 0, listed.stderr[-3000:]
    print(f"[{clock()}] $ hypernym runs list --stale-after {STALE_S}s\n{listed.stdout}")
    row = next(line for line in listed.stdout.splitlines() if line.startswith(run_id))
    assert run.info.status == "RUNNING" and " abandoned " in row, row
    assert f"step {resume_at}, " in row and resume_at < lost_at, row
    shown = hypernym("runs", "show", run_id, "--stale-after", f"{STALE_S}s")
    assert shown.returncode == 0, shown.stderr[-3000:]
    print(f"$ hypernym runs show {run_id} --stale-after {STALE_S}s\n{shown.stdout}")
    assert shown.stdout.splitlines()[1].startswith("state:        abandoned"), shown.stdout
    command = re.search(r"^resume:\s+hypernym (submit --resume \w+)$", shown.stdout, re.M)
    out = hypernym(*command.group(1).split())
    assert out.returncode == 0, out.stderr[-3000:]
    job = out.stdout.strip().splitlines()[-1]
    print(f"[{clock()}] resumed from {latest} (step {resume_at}): job {job}")

    # 5. S3 and tracking outages in the resumed attempt, the step before a checkpoint: the
    # reader's read-ahead (its 16-sample shuffle buffer and the shards it fetches ahead) runs
    # dry within a few steps, and the checkpoint due falls into the outage, so run storage must
    # wait it out too.
    outage_at = (resume_at // EVERY + 1) * EVERY - 1
    wait_until(lambda: attempt_step(trace, resume_at) >= outage_at, timeout_s=600,
               what=f"step {outage_at} of the resumed run (outages)")
    ts = rig.tracking_server()
    from infra.stack import tracking

    at = attempt_step(trace, resume_at)
    rig.s3_down()
    tracking.stop_server(ts)
    down_at = time.monotonic()
    time.sleep(S3_OUTAGE_S / 2)
    mid = attempt_step(trace, resume_at)
    time.sleep(S3_OUTAGE_S / 2)
    during = attempt_step(trace, resume_at)
    rig.s3_up()
    time.sleep(max(0.0, TRACKING_OUTAGE_S - (time.monotonic() - down_at)))
    tracking.start_server(ts, {**os.environ, **rig._base_env(rig._aws())})
    print(f"[{clock()}] S3 down {S3_OUTAGE_S} s and tracking down {TRACKING_OUTAGE_S} s from "
          f"step {at}; training reached step {during} while S3 was down")
    assert during == mid < 2 * steps, \
        f"training went on without data (step {mid} -> {during}): the outage did not bite"
    assert wait_job(job, timeout_s=600) == "SUCCEEDED", "".join(job_logs(job))[-5000:]

    # Workers log to their node's Ray logs (kept on the host: a log collector's view).
    retried = [p for p in Path(rig.state, "nodes").glob("*-ray/session_*/logs/worker-*")
               if "; retrying" in p.read_text(errors="replace")]
    assert retried, "the reader never retried a shard during the S3 outage"
    history = surviving_history(trace)
    trained = sum(len(ids) for ids in history.values())
    repeated = sum(len(ids) - len(set(ids)) for ids in history.values())
    lost = sum(total - len(set(ids)) for ids in history.values())
    print(f"[{clock()}] pretrain samples trained {trained}, repeated {repeated}, lost {lost} "
          f"({EPOCHS} epochs of {total}; each epoch may leave fewer than one step of "
          f"{2 * BATCH} untrained by design)")
    starts = sorted(map(int, attempts(trace)))
    assert len(starts) == 3 and starts[-1] == resume_at, \
        f"attempts from steps {starts}: one restart after the node loss, one resume"
    check_exactly_once(history, total, [2], epochs=EPOCHS)

    runs = client.search_runs([client.get_experiment_by_name("rig").experiment_id])
    assert [r.info.run_id for r in runs] == [run_id], "one MLflow run across every fault"
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["hypernym.resumes"] == "1"
    system = {key for key in run.data.metrics if key.startswith("system/")}
    for node in ("node_0", "node_1"):  # each node's first rank samples its node
        assert f"system/{node}/cpu_utilization_percentage" in system, sorted(system)
    # Every step from the node-loss restart on was logged (by the attempt that trained it or
    # by the resumed one), across the tracking outage and the head loss.
    last = max(step for p in trace.glob("from-*.txt")
               for step in (int(line.split()[1]) for line in p.read_text().splitlines()))
    expected = {s for s in range(starts[1] + 1, last + 1) if s % LOG_EVERY == 0}
    logged = {m.step for m in client.get_metric_history(run_id, "train/loss_step")}
    print(f"[{clock()}] train/loss_step logged for {len(expected & logged)} of "
          f"{len(expected)} expected steps after the node loss, across the "
          f"{TRACKING_OUTAGE_S} s tracking outage and the head loss")
    assert expected <= logged, sorted(expected - logged)

    versions = client.search_model_versions("name='rig-backbone'")
    assert [(v.version, v.run_id) for v in versions] == [("1", run_id)], "registered once"
    version = client.get_model_version_by_alias("rig-backbone", "candidate")
    fs.invalidate_cache()
    weights = fs.glob("mlflow/**/model.safetensors")
    assert weights, "the registered weights are not in the artifacts bucket"
    assert fs.glob("runs/hypernym/*/step-*") or fs.glob("runs/hypernym/*/epoch-*")
    print(f"[{clock()}] registered rig-backbone v{version.version}; weights on S3: {weights[0]}")

    # 6. the backbone's teacher store on S3, written by actors on the fresh cluster as a job;
    # a fine-tune from NAME@alias distilled from that store; then pull and load it here
    from hypernym.jobs.submit import submit_command

    store_job = submit_command(f"python -m hypernym distill store rig-backbone@candidate "
                               f"s3://data/ds --views 2 --topk 3 --out {KD_STORE}")
    assert wait_job(store_job, timeout_s=600) == "SUCCEEDED", \
        "".join(job_logs(store_job))[-5000:]
    assert fs.exists(f"{KD_STORE}/store.json")
    print(f"[{clock()}] teacher store of rig-backbone@candidate written to {KD_STORE}")
    monkeypatch.setenv("HYPERNYM_SAMPLE_TRACE", str(Path(rig.info["shared"]) / "finetune"))
    out = hypernym("submit", recipe(tmp_path / "finetune.yaml", {
        "kind": "finetune", "name": "rig-finetune", "experiment": "rig",
        "backbone": "rig-backbone@candidate",
        "data": {"path": "s3://data/ds", "img_size": 32, "batch_size": BATCH},
        "model": {"arch": ARCH}, "optim": {"lr": 1e-3},
        "train": {"epochs": 1, "log_every": 5, "system_metrics_s": None,
                  "distill": {"store": KD_STORE}},
        "scaling": {"num_workers": 2, "cpus_per_worker": 1},
        "registry": {"name": "rig-finetuned", "alias": "candidate"}}), "--follow")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (tuned,) = [r for r in client.search_runs(
        [client.get_experiment_by_name("rig").experiment_id])
        if r.data.tags.get("mlflow.runName", "").startswith("rig-finetune")]
    assert tuned.data.tags["hypernym.task"] == "classification+distill"
    for key in ("train/loss_distill", "val/teacher_agreement"):
        assert key in tuned.data.metrics, sorted(tuned.data.metrics)
    assert client.get_model_version_by_alias("rig-finetuned", "candidate").tags[
        "distill_store"] == KD_STORE
    print(f"[{clock()}] fine-tune from rig-backbone@candidate, distilled from the store, "
          "done")
    pulled = hypernym("models", "pull", "rig-finetuned@candidate", "--out",
                      str(tmp_path / "pulled"))
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    assert (tmp_path / "pulled" / "model.safetensors").exists()
    model = load_backbone("rig-finetuned@candidate", num_classes=0)
    assert model.num_classes == 0
    print(f"rig scenario done in {time.perf_counter() - started:.0f} s after start-up")
