"""Measurements behind `python -m pipeline.benchmark`: the model's training step on any Keras backend (`step`)."""
