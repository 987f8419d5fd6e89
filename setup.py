"""Package definition for the research codebase (see README.md)."""

from setuptools import find_packages, setup

setup(
    name="lmrl",
    version="0.1.0",
    description="JAX/Flax research code: RL for LMs, federated LMs, PEFT, tree tokenisation.",
    python_requires=">=3.11",
    packages=find_packages(
        include=[
            "launch*",
            "train*",
            "models*",
            "data*",
            "rl*",
            "fed*",
            "parsing*",
            "configs*",
            "bench*",
            "peft*",
        ]
    ),
    install_requires=[
        "jax>=0.7,<0.11",
        "flax>=0.11.2,<0.13",
        "optax>=0.2.5,<0.3",
        "orbax-checkpoint>=0.11,<0.13",
        "chex>=0.1.90,<0.2",
        "tensorflow-datasets>=4.9.9,<4.10",
        "array-record>=0.8,<0.9",
        "grain>=0.2.12,<0.3",
        "sentencepiece>=0.2,<0.3",
        "ml-collections>=1.1,<2",
        "absl-py>=2.1,<3",
        "tensorboardX>=2.6,<3",
        "dp-accounting>=0.5,<0.7",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "numpy>=1.26,<3",
        # jax needs >=0.5; 0.7.0's extension takes ~1.4 s to import (0.6.0: ~0.02 s), paid by
        # every process that imports jax: each CLI run, test subprocess and notebook kernel.
        "ml-dtypes>=0.5,<0.7",
        "scipy>=1.11,<2",
        "sympy>=1.12,<2",
        "safetensors>=0.4,<1",
        "tokenizers>=0.21,<0.24",  # local HF tokenizer.json of pretrained bases (llada8b)
    ],
    extras_require={
        "test": [
            "pytest>=8,<10",
            "pytest-xdist>=3.7,<4",  # make test: 2 workers, whole files, --no-loadscope-reorder
            "hypothesis>=6.100,<7",
            "ruff>=0.6",
            # notebooks/: paired .py <-> .ipynb and headless execution (tests/notebooks)
            "jupytext>=1.16,<2",
            "nbclient>=0.10,<0.11",
            "nbformat>=5.10,<6",
            "ipykernel>=6.29,<8",
        ],
    },
)
