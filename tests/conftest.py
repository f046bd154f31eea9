"""Test-wide settings: offline hubs, few threads, deterministic seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest
import torch

# pytest-xdist already runs one worker per core; more threads per worker make OpenMP spin-wait on shared cores
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Put the thread count back to one after each test: code under test (demos, trainers) may raise it,
    and the next test should not inherit that."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)
