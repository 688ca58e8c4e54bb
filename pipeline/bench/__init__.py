"""Measurements behind `python -m pipeline.benchmark`: the one training-step timer (`step`), timing on a shared
machine (`timing`), the PyTorch peer (`peer`), the TensorFlow benchmark against the matmul ceiling and a real
fit (`report`), the step on any Keras backend (`backend`), the input pipeline (`input`)."""
