"""Training, data, export and benchmark commands (`python -m pipeline.<command>`).

Importing it sets TensorFlow's CPU kernel choice before TensorFlow loads (see `model_defs`).
"""

import model_defs  # noqa: F401

__version__ = "0.2.0"
