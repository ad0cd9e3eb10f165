"""Processes the stack starts: each in its own session (so its process group is its pid), with
its output in a log file and its id in a file, stopped by that group only. Never a global
``ray stop`` or a kill by name: other Ray clusters and servers may share the machine."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["autogroup_nice", "free_port", "group_alive", "group_members", "spawn", "stop_group",
           "wait_for", "wait_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just had free on ``host`` (loopback only)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def spawn(argv: Sequence[str], *, env: Mapping[str, str], log: Path, pidfile: Path,
          cwd: Path | None = None) -> subprocess.Popen:
    """Start ``argv`` in a new session, output to ``log``; its pid (= process group) goes to
    ``pidfile``. The environment is exactly ``env``: secrets travel there, never in argv."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=cwd, start_new_session=True)
    pidfile.write_text(str(proc.pid))
    return proc


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry))
    return found


def autogroup_nice(session: int, nice: int) -> None:
    """Set the niceness of the session's scheduler autogroup. Where the kernel groups each
    session (``kernel.sched_autogroup_enabled``, the default), a process's nice value only
    ranks it within its session: against the other sessions (every Ray worker process of other
    clusters is one) only the autogroup's niceness counts."""
    try:
        Path(f"/proc/{session}/autogroup").write_text(str(nice))
    except OSError:  # no autogroups in this kernel, or the session is gone
        pass


def group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


def stop_group(pgid: int, *, first: int = signal.SIGTERM, grace_s: float = 10.0,
               proc: subprocess.Popen | None = None) -> None:
    """``first`` to the group, then SIGKILL after ``grace_s``; returns once it is gone."""
    for sig, wait_s in ((first, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait_s
        while group_alive(pgid) and time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our own child, so it does not linger as a zombie
            time.sleep(0.1)
        if not group_alive(pgid):
            break
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    if group_alive(pgid):
        raise RuntimeError(f"process group {pgid} survived SIGKILL")


def wait_for(check: Callable[[], bool], *, timeout_s: float, what: str,
             alive: Callable[[], bool] | None = None, log: Path | None = None) -> None:
    """Poll ``check`` until true; fail naming ``what`` and the log to read."""
    deadline = time.monotonic() + timeout_s
    while not check():
        where = f"; its log: {log}" if log else ""
        if alive is not None and not alive():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log else ""
            raise RuntimeError(f"{what} exited while starting{where}\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s{where}")
        time.sleep(0.2)


def wait_port(host: str, port: int, **kwargs) -> None:
    def listening() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(listening, **kwargs)
