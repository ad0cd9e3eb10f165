"""Part functions for the runner's tests (imported by the part processes)."""

from __future__ import annotations

import time


def ok(ctx):
    return {"device": ctx.device, "before": sorted(ctx.results)}


def hang(ctx):
    time.sleep(600)


def boom(ctx):
    raise ValueError("the part went wrong")
