"""Shared tiny components: one random Auffusion-layout base directory per test session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from fourfold.drawaudio.base import build_tiny_base, load_base
from fourfold.drawaudio.config import DrawAudioConfig
from fourfold.drawaudio.model import DrawAudioModel

VOCAB = ["a", "red", "ball", "blue", "square", "green", "triangle", "bounces", "bounce", "and", "something"]


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("drawaudio") / "base"
    build_tiny_base(path, DrawAudioConfig.tiny(), VOCAB, seed=0)
    return path


def _make_model(base_dir, **changes) -> DrawAudioModel:
    cfg = DrawAudioConfig.tiny()
    for section, values in changes.items():
        for k, v in values.items():
            setattr(getattr(cfg, section), k, v)
    cfg.base.path = str(base_dir)
    torch.manual_seed(0)
    return DrawAudioModel(cfg, load_base(base_dir, cfg)).eval()


@pytest.fixture
def make_model():
    """``make_model(base_dir, mam={"mode": "tokens"}, ...)``: a fresh tiny model over the session base."""
    return _make_model
