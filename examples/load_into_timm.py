"""Pull a registered model into timm (safetensors, no unpickling) and classify an image.

    .venv/bin/python examples/load_into_timm.py [REF] [IMAGE]
"""

import sys
from pathlib import Path

import timm
import torch
from PIL import Image

import hypernym

ref = sys.argv[1] if len(sys.argv) > 1 else "hypernym-demo-digits@candidate"
default = next(Path(".hypernym/demo/raw/digits/7").glob("*.png"), None)
image = Path(sys.argv[2]) if len(sys.argv) > 2 else default

model = hypernym.load_backbone(ref).eval()
card = model.hypernym_card
config = timm.data.resolve_data_config({}, model=model)  # input size, mean, std from the card
transform = timm.data.create_transform(**config)
with torch.no_grad():
    probs = model(transform(Image.open(image).convert("RGB"))[None]).softmax(-1)[0]
top = probs.topk(3)
for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True):
    print(f"{card.classes[i]['name']:>12}  {p:.3f}")
