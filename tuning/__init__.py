"""KerasTuner search over the experiment config: `python -m tuning.search` (see tuning/search.py).

Importing it sets TensorFlow's CPU kernel choice before TensorFlow loads (see `model_defs`).
"""

import model_defs  # noqa: F401
