"""The check's report: the CUDA-only paths' statuses and the Markdown page."""

from __future__ import annotations

from hypernym.gpucheck.report import cuda_paths, render_markdown


def _results(mode="gpu", **parts):
    return {"mode": mode, "complete": True, "started": "2026-12-07T00:00:00+00:00",
            "budget_s": 450, "wall_s": 300, "parts": parts}


def test_a_path_is_only_ok_when_its_evidence_is_there():
    results = _results(
        cuda_probes={"status": "ok", "result": {
            "bf16_autocast": {"ok": True}, "collectives": {"ok": True},
            "pinned_memory": {"ok": True, "gb_per_s": 20.0}}},
        pretrain_loader={"status": "ok", "result": {"system_metrics": ["system/cpu_util"]}},
        pretrain_device={"status": "failed", "error": "Traceback\nRuntimeError: nvjpeg"},
        fsdp={"status": "skipped", "reason": "budget: 3 s left"})
    rows = {r["path"]: r for r in cuda_paths(results)}
    assert rows["bf16 autocast"]["status"] == "ok" and rows["pinned memory"]["status"] == "ok"
    assert rows["MLflow GPU system metrics"]["status"] == "failed"  # no system/gpu_* logged
    assert rows["GPU JPEG decode (data.decode_on: device)"]["detail"] == "RuntimeError: nvjpeg"
    assert rows["FSDP2 on a GPU"]["status"] == "not run"
    assert rows["Ray Serve batching on a GPU"]["status"] == "not run"
    assert rows["the images in infra/"]["status"] == "not run"


def test_the_dry_run_says_where_it_ran():
    results = _results(mode="cpu-dry-run", cuda_probes={"status": "ok", "result": {
        "bf16_autocast": {"ok": True}, "collectives": {"ok": True},
        "pinned_memory": {"ok": True, "skipped": "pinned memory needs CUDA"}}})
    rows = {r["path"]: r for r in cuda_paths(results)}
    assert rows["NCCL"] == {**rows["NCCL"], "status": "ok", "detail": "ran on the CPU (dry run)"}
    assert rows["pinned memory"]["status"] == "not run"


def test_markdown_shows_the_figures():
    results = _results(
        environment={"status": "ok", "result": {"gpu": "NVIDIA H100", "nccl": "2.27.3"}},
        ceiling={"status": "ok", "result": {"arch": "resnet50", "img_size": 224,
                                            "batch_size": 256, "eager": {"images_per_s": 3955.0},
                                            "compiled": {"images_per_s": 5552.0}}},
        pretrain_loader={"status": "ok", "result": {"images_per_s": 5100.0,
                                                    "ratio_to_ceiling": 0.919,
                                                    "data_wait_frac": 0.02}})
    results["cuda_paths"] = cuda_paths(results)
    text = render_markdown(results)
    assert "- gpu: NVIDIA H100" in text and "- nccl: 2.27.3" in text
    assert "| ceiling, compiled (synthetic) | 5,552.0 | | |" in text
    assert "| hypernym pretrain, loader decode | 5,100.0 | 0.919 | 0.020 |" in text
    assert "| pretrain_loader | ok |" in text
