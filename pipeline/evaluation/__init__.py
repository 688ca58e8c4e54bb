"""Measuring a model: top-k error metrics (`metrics`), the published errors (`references`), scoring a split
(`scoring`), the ten-crop test during training (`ten_crop`), the paper's pictures (computed in `analysis`,
laid out in `images`, drawn in `drawing`, written by `pictures`), and evaluating a finished run
(`evaluator`)."""
