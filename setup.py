"""AlexNet (Krizhevsky et al., 2012) with Keras and TensorFlow: train, tune, evaluate, serve."""

from setuptools import find_packages, setup

setup(
    name="alexnet-pipeline",
    version="0.1.0",
    description=__doc__,
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["pipeline", "pipeline.*", "model_defs", "model_defs.*", "tuning", "tuning.*"]),
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tensorboard>=2.21,<2.22",  # not always brought by tensorflow
        "tensorflow-datasets>=4.9,<5",
        "importlib_resources",  # tensorflow-datasets needs it to prepare datasets but does not declare it
        "keras-tuner>=1.4.8,<2",
        "pyyaml>=6,<7",
        "pydantic>=2.6,<3",  # the typed, validated config tree
        "scikit-learn>=1.3",  # the bundled digits of the offline quickstart
        "matplotlib>=3.7,<4",  # the evaluation's pictures (pipeline.figures)
    ],
    extras_require={
        # pytest-xdist: the suite runs on two workers (pytest.ini), most tests keeping one core busy.
        # jax's CPU wheel: the equivalence tests run the model on TensorFlow and on JAX (tests/model_defs/test_backends.py);
        # 0.10.2 checked here; the GPU host's image has 0.11.2.
        "test": ["pytest>=8", "pytest-xdist>=3.5", "jax[cpu]>=0.10,<0.12"],
        # The PyTorch peer of the benchmarks (benchmarks/torch_reference.py, run from a checkout; not installed).
        "torch": ["torch>=2.4"],
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
    },
)
