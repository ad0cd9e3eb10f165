"""Transfer: evaluating fine-tuned models, probing backbones, checking evaluation data."""
