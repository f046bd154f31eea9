"""A tiny classifier trained on spirals: the Trainer's own end-to-end job (CLI, demo and tests use it)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from fourfold.data.toy import SpiralDataset
from fourfold.nn.modeling import PretrainedModel
from fourfold.train.config import TrainerConfig
from fourfold.train.trainer import Trainer, TrainResult


@dataclass
class SpiralNetConfig:
    in_dim: int = 2
    hidden: int = 64
    depth: int = 3  # hidden layers
    classes: int = 2
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("in_dim", "hidden", "depth", "classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"SpiralNetConfig.{name} must be >= 1, got {getattr(self, name)}")


class SpiralNet(PretrainedModel):
    """MLP ``(batch, in_dim) -> (batch, classes)`` logits."""

    config_class = SpiralNetConfig

    def __init__(self, config: SpiralNetConfig) -> None:
        super().__init__(config)
        layers: list[nn.Module] = []
        width = config.in_dim
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.SiLU(), nn.Dropout(config.dropout)]
            width = config.hidden
        layers.append(nn.Linear(width, config.classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def classification_loss(
    model: nn.Module, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, dict[str, float]]:
    logits = model(batch["x"])
    loss = F.cross_entropy(logits, batch["label"])
    accuracy = (logits.argmax(-1) == batch["label"]).float().mean().item()
    return loss, {"accuracy": accuracy}


@torch.no_grad()
def accuracy(model: nn.Module, data: SpiralDataset) -> float:
    return (model(data.x).argmax(-1) == data.labels).float().mean().item()


def train_spirals(
    config: TrainerConfig,
    *,
    resume: bool = False,
    n_train: int = 1024,
    model_config: SpiralNetConfig | None = None,
    nan_at_step: int | None = None,
    step_delay: float = 0.0,
) -> tuple[SpiralNet, TrainResult]:
    """Train :class:`SpiralNet` on :class:`SpiralDataset`; saves the final model to ``output_dir/model``.

    ``nan_at_step`` injects a NaN loss from that optimizer step on and ``step_delay`` sleeps after each
    step; both exist so tests can exercise the divergence stop and a kill mid-run.
    """
    torch.manual_seed(config.seed)  # the same initial weights in every process and every launch
    model = SpiralNet(model_config or SpiralNetConfig())
    train = SpiralDataset(n_train, seed=config.seed)
    held_out = SpiralDataset(512, seed=config.seed + 1)
    loss_fn = classification_loss
    if nan_at_step is not None:
        trainer_ref: list[Trainer] = []

        def loss_fn(model: nn.Module, batch: dict[str, torch.Tensor]):  # type: ignore[no-redef]
            loss, logs = classification_loss(model, batch)
            if trainer_ref[0].step + 1 >= nan_at_step:
                loss = loss * float("nan")
            return loss, logs

    trainer = Trainer(
        model,
        config,
        train,
        loss_fn,
        eval_fn=lambda m, step: {"accuracy": accuracy(m, held_out)},
        callbacks=[lambda trainer, step: time.sleep(step_delay)] if step_delay > 0 else (),
    )
    if nan_at_step is not None:
        trainer_ref.append(trainer)
    result = trainer.fit(resume=resume)
    if trainer.is_main:
        trainer.model.save_pretrained(Path(config.output_dir) / "model")
    return trainer.model, result
