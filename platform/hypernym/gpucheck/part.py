"""One part of the check, in its own process:
``python -m hypernym.gpucheck.part NAME MODULE:FUNCTION WORK``.

Reads the check's config and the earlier parts' results from WORK, runs the function
and writes ``WORK/parts/NAME.json``: ``{"status": "ok", "result": {...}}`` or ``{"status":
"failed", "error": ..., "result": {...what it had}}``. The runner (runner.py) starts it.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypernym.gpucheck.config import GpuCheckConfig
from hypernym.settings import Settings

__all__ = ["Context", "main"]


@dataclass
class Context:
    """What a part's function gets: the config, its work folder, the device, the figures of
    the parts before it (by name) and the check's own settings (home, embedded MLflow)."""

    config: GpuCheckConfig
    work: Path
    results: dict[str, dict[str, Any]]
    settings: Settings

    @property
    def device(self) -> str:
        return self.config.device


def _context(work: Path) -> Context:
    from hypernym.runtime import configure_logging
    from hypernym.settings import get_settings

    settings = get_settings()
    configure_logging(settings=settings)
    config = GpuCheckConfig.model_validate_json((work / "config.json").read_text())
    results = {}
    for path in sorted((work / "parts").glob("*.json")):
        entry = json.loads(path.read_text())
        if entry.get("status") == "ok":
            results[path.stem] = entry.get("result", {})
    return Context(config=config, work=work, results=results, settings=settings)


def main(argv: list[str]) -> int:
    name, (module, function), work = argv[0], argv[1].split(":"), Path(argv[2])
    out = work / "parts" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        ctx = _context(work)
        result = getattr(importlib.import_module(module), function)(ctx)
        entry = {"status": "ok", "result": result}
    except Exception as exc:  # noqa: BLE001 - the part's failure is its result
        traceback.print_exc()
        lines = traceback.format_exception_only(type(exc), exc)
        entry = {"status": "failed", "error": "".join(lines).strip(),
                 "result": getattr(exc, "results", {})}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(entry, indent=2, default=str))
    os.replace(tmp, out)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
