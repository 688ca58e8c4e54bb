#!/usr/bin/env bash
# Downloads, here, the wheels that benchmarks/gpu/run.sh installs on a GPU host that reaches no package registry.
#
#   benchmarks/gpu/fetch_wheels.sh                  # for the H200 host (its python3 is CPython 3.12, x86-64)
#   benchmarks/gpu/fetch_wheels.sh 3.12 3.11        # and for a CPU rehearsal in a Python 3.11 virtual environment
#
# The host's image has JAX, PyTorch, NumPy and the rest of Keras' needs (absl-py, h5py, ml-dtypes, rich, packaging),
# but not Keras, namex and optree, nor what the project's config needs (pydantic, PyYAML): those go, as wheels, into
# wheels/ at the checkout's root (git-ignored; the `run` tool carries it when it is named in `carry`). About 5 MB
# per Python version.
set -euo pipefail
cd "$(dirname "$0")/../.."
# Keras and pydantic as installed here, and what they need that the host may lack.
PACKAGES=(keras==3.15.1 namex==0.1.0 optree==0.20.0 pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0
          typing-inspection==0.4.2 typing-extensions==4.15.0 pyyaml==6.0.3)
mkdir -p wheels
for version in "${@:-3.12}"; do
    python -m pip download --quiet --no-deps --only-binary=:all: --dest wheels \
        --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 "${PACKAGES[@]}"
done
ls -l wheels
