"""AlexNet's layers and model (`model_defs.alexnet`), and the process settings they run best under.

Importing this package (or `pipeline`, or `tuning`, which import it) before
TensorFlow does two things to the TensorFlow the process loads later:

- It turns on TensorFlow's oneDNN CPU kernels unless the environment says
  otherwise. TensorFlow enables them by itself only on CPUs with AVX-512
  VNNI/BF16 or AMX; on the others (AVX2 CPUs such as AMD Zen) it falls back to
  Eigen kernels, on which AlexNet's training step is slower (README, Speed).
  `TF_ENABLE_ONEDNN_OPTS=0` keeps the Eigen kernels.
- It keeps TensorFlow's start-up notices off the terminal (`quiet_startup`):
  the oneDNN notice printed twice, the CPU-instructions notice, and "failed
  call to cuInit" on every host without a GPU. Setting TF_CPP_MIN_LOG_LEVEL
  (to any value; 0 shows everything) leaves TensorFlow's logging as it is.
"""

import os
import sys

from model_defs.startup import quiet_startup


def prefer_onednn():
    """Sets TF_ENABLE_ONEDNN_OPTS=1 unless it is set already or TensorFlow is loaded (too late then).

    Returns:
        True if the oneDNN kernels will be used by the TensorFlow this process loads.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    return os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "1"


prefer_onednn()
quiet_startup()
