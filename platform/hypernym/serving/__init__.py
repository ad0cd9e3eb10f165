"""Registered models on Ray Serve (deployment.py); `mlflow models serve` needs nothing here."""
