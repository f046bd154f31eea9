"""Train the spiral classifier on tar shards through the Trainer; run directly or under ``torchrun``.

``python shard_train_job.py SHARDS OUT STEPS`` writes ``OUT/weights.safetensors`` and ``OUT/world.txt``.
The data tests use it to compare a 2-process DDP run with a 1-process run on the same shard stream.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from fourfold.data.shards import ShardDataset
from fourfold.train import Trainer, TrainerConfig
from fourfold.train.toy import SpiralNet, SpiralNetConfig, classification_loss

GLOBAL_BATCH = 16


def train(
    shards: Path,
    out: Path,
    steps: int,
    *,
    num_workers: int = 0,
    checkpoint_every: int = 0,
    resume: bool = False,
    cpu: bool = False,
) -> Trainer:
    torch.manual_seed(0)
    config = TrainerConfig(
        output_dir=str(out),
        max_steps=steps,
        batch_size=GLOBAL_BATCH,
        checkpoint_every=checkpoint_every,
        num_workers=num_workers,
        progress=False,
        cpu=cpu,
    )
    data = ShardDataset(shards, shuffle_buffer=16, seed=3, batch_size=GLOBAL_BATCH)
    trainer = Trainer(SpiralNet(SpiralNetConfig(hidden=16)), config, data, classification_loss)
    trainer.fit(resume=resume)
    return trainer


if __name__ == "__main__":
    torch.set_num_threads(1)
    shards, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    trainer = train(shards, out, steps, cpu=True)
    if trainer.is_main:
        save_file(
            {k: v.contiguous() for k, v in trainer.model.state_dict().items()},
            str(out / "weights.safetensors"),
        )
        (out / "world.txt").write_text(str(trainer.world_size))
