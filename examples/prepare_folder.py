"""Prepare a folder-per-class image collection into WebDataset shards + manifest.json.

    .venv/bin/python examples/prepare_folder.py /path/to/images /path/to/dataset
"""

import sys

from hypernym.config import parse_recipe
from hypernym.data.prepare import prepare

source, output = (sys.argv[1:3] + [None, None])[:2]
recipe = parse_recipe({
    "kind": "prepare",
    "source": source or ".hypernym/demo/raw/digits",
    "output": output or ".hypernym/examples/digits",
    "source_format": "folder",
    "val_per_class": 20,
    "min_per_class": 0,
    "image_size": 64,
    "overwrite": True,
})
manifest = prepare(recipe)
print(f"{len(manifest.classes)} classes, train {manifest.num_samples('train')}, "
      f"val {manifest.num_samples('val')}, fingerprint {manifest.fingerprint[:12]}")
