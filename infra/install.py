"""Create a virtual environment and install the package into it: `python infra/install.py VENV
SPEC`.

`make demo` and `make test` call this. The install runs through uv (`uv pip install`), with pip's
own configuration (indexes, find-links, constraints, certificate, timeout) passed on, so it
resolves the versions pip would: pip took 229 s to install the stack into a new venv on the
2-core machine, uv 62 s, bytecode included (docs/benchmarks.md, "Suite and install"). Where uv
cannot be installed or fails, pip installs as before. Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import venv
from pathlib import Path

# pip option -> uv option; each pip value may hold several whitespace-separated entries.
_LIST_OPTIONS = {"index-url": "--index-url", "extra-index-url": "--extra-index-url",
                 "find-links": "--find-links", "constraint": "--constraint",
                 "trusted-host": "--allow-insecure-host"}


def pip_config(python: Path) -> dict[str, str]:
    """pip's effective settings (files and PIP_* variables) as option -> value, as
    `pip config list` prints them: `global.find-links='/opt/wheels'`, `:env:.cert='...'`."""
    out = subprocess.run([str(python), "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=False).stdout
    rank = {"global": 0, "install": 1, ":env:": 2}  # pip's precedence: PIP_* over the files
    found: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        section, _, option = key.rpartition(".")
        if sep and section in rank and rank[section] >= found.get(option, (-1, ""))[0]:
            found[option] = (rank[section], " ".join(shlex.split(value)))
    return {option: value for option, (_, value) in found.items()}


def uv_command(python: Path, spec: str, config: dict[str, str]) -> tuple[list[str], dict]:
    """The `uv pip install` command and environment equivalent to `pip install -e SPEC`."""
    command = [str(python.parent / "uv"), "pip", "install", "--quiet", "--python", str(python),
               # pip takes the best version across all indexes; uv by default the first index
               # that has the package
               "--index-strategy", "unsafe-best-match",
               # as pip does: with PYTHONDONTWRITEBYTECODE set, nothing would ever write them,
               # and every process would compile torch from source (17 s to import timm, ray
               # and mlflow instead of 7 s)
               "--compile-bytecode"]
    for option, flag in _LIST_OPTIONS.items():
        for value in config.get(option, "").split():
            command += [flag, value]
    if config.get("no-index", "").lower() in ("1", "true", "yes"):
        command.append("--no-index")
    env = dict(os.environ)
    if config.get("cert"):
        env["SSL_CERT_FILE"] = config["cert"]  # uv reads its CA bundle from here
    if config.get("default-timeout"):
        env.setdefault("UV_HTTP_TIMEOUT", config["default-timeout"])
    return command + ["-e", spec], env


def install(target: Path, spec: str) -> None:
    python = target / "bin" / "python"
    if not python.exists():
        venv.create(target, with_pip=True)
    quiet = ["--quiet", "--disable-pip-version-check"]
    # -qq: pip warns of every configured index that lacks uv, which is noise here
    got_uv = subprocess.run([str(python), "-m", "pip", "install", *quiet, "-q", "uv"],
                            check=False).returncode == 0
    if got_uv:
        command, env = uv_command(python, spec, pip_config(python))
        if subprocess.run(command, env=env, check=False).returncode == 0:
            return
        print("uv could not install the package; installing with pip", file=sys.stderr)
    subprocess.run([str(python), "-m", "pip", "install", *quiet, "-e", spec], check=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python infra/install.py VENV SPEC   (e.g. .venv '.[test,demo]')")
    try:
        install(Path(sys.argv[1]).absolute(), sys.argv[2])
    except subprocess.CalledProcessError as exc:
        sys.exit(f"installing {sys.argv[2]} into {sys.argv[1]} failed (exit {exc.returncode})")
