"""Transfer: sweeps over fine-tuning (and pretraining) runs."""
