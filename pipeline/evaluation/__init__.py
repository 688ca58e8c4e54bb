"""Measuring a model: top-k error metrics (`metrics`, `references`), scoring a split (`scoring`), the
ten-crop test during training (`ten_crop`), the paper's pictures (`figures`, `pictures`), and evaluating
a finished run (`evaluator`)."""
