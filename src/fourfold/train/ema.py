"""Exponential moving average of trainable tensors (fp32 shadows)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class EMA:
    """shadow <- decay * shadow + (1 - decay) * param, after every optimizer step.

    Shadows are kept in fp32 whatever the parameter dtype, so bf16 training does not lose the average.
    ``swapped_in()`` temporarily puts the averages into the parameters (for evaluation).
    """

    def __init__(self, params: Iterable[torch.Tensor], decay: float) -> None:
        self.params = list(params)
        self.decay = decay
        self.shadows = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        for shadow, p in zip(self.shadows, self.params, strict=True):
            shadow.lerp_(p.detach().float(), 1.0 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"shadow.{i}": s for i, s in enumerate(self.shadows)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if len(state) != len(self.shadows):
            raise ValueError(
                f"EMA state has {len(state)} tensors, the model has {len(self.shadows)} trainable tensors"
            )
        for i, shadow in enumerate(self.shadows):
            shadow.copy_(state[f"shadow.{i}"])

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        backup = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for p, s in zip(self.params, self.shadows, strict=True):
                p.copy_(s.to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for p, b in zip(self.params, backup, strict=True):
                    p.copy_(b)
