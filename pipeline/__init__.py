"""A TFX-style pipeline for MNIST-family image classifiers: `run`, `step`, `validate`, `drift` and `predict` mirror the commands."""
from pipeline.api import drift, predict, run, step, validate

__all__ = ["drift", "predict", "run", "step", "validate"]
