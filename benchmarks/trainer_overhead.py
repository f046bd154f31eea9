"""Trainer overhead: optimizer-step time of fourfold's Trainer vs a plain PyTorch loop, same model and data.

Prints a table and writes benchmarks/results/trainer_overhead.json. Ratios come from one process and one
run (the machine is noisy); the target is a ratio <= 1.10 for a model whose step takes a few ms.
Usage: python benchmarks/trainer_overhead.py [--steps 300] [--hidden 512]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from fourfold.data.toy import SpiralDataset
from fourfold.train import Trainer, TrainerConfig
from fourfold.train.toy import SpiralNet, SpiralNetConfig, classification_loss


def plain_loop(steps: int, hidden: int, batch: int) -> float:
    torch.manual_seed(0)
    model = SpiralNet(SpiralNetConfig(hidden=hidden))
    data = SpiralDataset(4096)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    started = time.perf_counter()
    for step in range(steps):
        idx = torch.randperm(len(data))[:batch] if step % (len(data) // batch) == 0 else torch.arange(batch)
        loss = F.cross_entropy(model(data.x[idx]), data.labels[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - started) / steps


def trainer_loop(steps: int, hidden: int, batch: int) -> float:
    torch.manual_seed(0)
    model = SpiralNet(SpiralNetConfig(hidden=hidden))
    with tempfile.TemporaryDirectory() as tmp:
        config = TrainerConfig(
            output_dir=tmp,
            max_steps=steps,
            batch_size=batch,
            learning_rate=1e-3,
            progress=False,
            save_final_checkpoint=False,
            log_every=50,
        )
        result = Trainer(model, config, SpiralDataset(4096), classification_loss).fit()
    return result.seconds / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "trainer_overhead.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    plain_loop(20, args.hidden, args.batch)  # warm-up
    plain = plain_loop(args.steps, args.hidden, args.batch)
    trained = trainer_loop(args.steps, args.hidden, args.batch)
    ratio = trained / plain
    print(f"{'loop':<12}{'ms/step':>10}")
    print(f"{'plain torch':<12}{plain * 1e3:>10.3f}")
    print(f"{'Trainer':<12}{trained * 1e3:>10.3f}")
    print(f"ratio Trainer/plain = {ratio:.3f} (target <= 1.10)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "trainer_overhead",
                "steps": args.steps,
                "hidden": args.hidden,
                "batch": args.batch,
                "plain_ms_per_step": plain * 1e3,
                "trainer_ms_per_step": trained * 1e3,
                "ratio": ratio,
                "target_ratio": 1.10,
                "machine": platform.platform(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
