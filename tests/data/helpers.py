"""Shared builders for the data tests: small shard folders and a DataLoader reader."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fourfold.data.shards import ShardDataset, ShardWriter


def write_numbered(out: Path, n: int, per_shard: int) -> Path:
    """Shards holding samples ``{"__key__": "s0007", "i.cls": 7, "x.npy": [7., 7.5]}`` for ``i < n``."""
    with ShardWriter(out, per_shard) as writer:
        for i in range(n):
            writer.write({"__key__": f"s{i:04d}", "i.cls": i, "x.npy": torch.tensor([i, i + 0.5])})
    return out


def read_ids(ds: ShardDataset, *, batch_size: int = 4, num_workers: int = 0) -> list[list[int]]:
    """The batches of sample numbers a DataLoader makes from ``ds``."""
    loader = DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
    return [batch["i"].tolist() for batch in loader]


def flat(batches: list[list[int]]) -> list[int]:
    return [i for batch in batches for i in batch]


class SlowRows(torch.utils.data.Dataset):
    """Map-style rows that take a while each, so a conversion can be killed mid-way."""

    def __init__(self, n: int, delay: float = 0.0) -> None:
        self.n, self.delay = n, delay

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        import time

        time.sleep(self.delay)
        return {"x.npy": torch.full((2, 3), float(i)), "caption.txt": f"row {i}", "label.cls": i}
