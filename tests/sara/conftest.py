"""Tiny seeded models shared by the SaRA tests (no downloads)."""

import os

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)


class Stack(nn.Module):
    """Embedding → Linear → LayerNorm → Conv2d → GroupNorm → Linear: every parameter kind SaRA targets."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 24)
        self.fc1 = nn.Linear(24, 96)
        self.norm = nn.LayerNorm(96)
        self.conv = nn.Conv2d(6, 24, 3, padding=1)
        self.gn = nn.GroupNorm(4, 24)
        self.fc2 = nn.Linear(24 * 16, 80)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.fc1(self.emb(tokens)))  # (b, 96)
        h = self.gn(self.conv(h.reshape(-1, 6, 4, 4)))  # (b, 24, 4, 4)
        return self.fc2(torch.tanh(h).flatten(1))  # (b, 80)


def make_stack(seed: int = 0) -> Stack:
    torch.manual_seed(seed)
    return Stack()


def stack_batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 10, (n,), generator=g), torch.randn(n, 80, generator=g)


def make_unet_cond(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def make_unet2d(seed: int = 0):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )


def unet_cond_inputs(n: int = 2, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n, 1, 8, 8, generator=g),
        torch.tensor([10, 500][:n] * (n // 2 or 1))[:n],
        torch.randn(n, 4, 32, generator=g),
    )


@pytest.fixture
def stack() -> Stack:
    return make_stack()
