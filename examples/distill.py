"""Distil a large teacher into a small student on the demo's glyphs, at a CPU budget.

    .venv/bin/python examples/distill.py [--set key=value ...] [--workdir DIR]

Generates the glyph mini-21K, pretrains and registers the teacher, writes its teacher store
(`hypernym distill store`), then trains the same small student three ways at the same budget for
each seed: without a teacher, distilled online, distilled from the store. It prints the students'
held-out top-1 (mean over the seeds) and writes ``summary.json`` beside the data. The knobs are
`hypernym.demo.distill.DistillDemoConfig` (``--set seeds=1 --set images_per_class=100``).
"""

import argparse
from pathlib import Path

from hypernym.config import apply_overrides
from hypernym.demo.distill import DistillDemoConfig, run_distill_demo
from hypernym.runtime import configure_logging

parser = argparse.ArgumentParser()
parser.add_argument("--set", dest="overrides", action="append", default=[],
                    help="a DistillDemoConfig key=value (repeatable)")
parser.add_argument("--workdir", type=Path, help="default: <hypernym home>/distill-demo")
args = parser.parse_args()
configure_logging()
config = DistillDemoConfig.model_validate(apply_overrides({}, args.overrides))
run_distill_demo(config, workdir=args.workdir)
