"""Measuring a model: top-k error metrics (`metrics`), the published errors and the table that sets a run's
beside them (`references`), scoring a split (`scoring`), the ten-crop test during training (`ten_crop`), the
paper's pictures (computed in `analysis`, laid out in `images`, drawn in `drawing`, written by `pictures`),
and evaluating a finished run (`evaluator`)."""
