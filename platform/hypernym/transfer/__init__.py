"""Transfer: probing and comparing backbones, sweeps over fine-tunes, evaluating fine-tuned
models, checking evaluation data against pretraining data."""
