"""Training through fourfold.train.Trainer on a ShardDataset: exact resume, workers, 2-process DDP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.data.shard_train_job import train

from fourfold.data.shards import write_shards_from
from fourfold.data.toy import SpiralDataset

JOB = Path(__file__).with_name("shard_train_job.py")


@pytest.fixture(scope="module")
def spiral_shards(tmp_path_factory) -> Path:
    """72 spiral points in shards of 10 (the last one short), as ``x.npy`` + ``label.cls``."""
    out = tmp_path_factory.mktemp("spiral-shards")
    write_shards_from(
        SpiralDataset(72),
        out,
        to_sample=lambda i, item: {"x.npy": item["x"], "label.cls": item["label"]},
        max_samples_per_shard=10,
        progress=False,
    )
    return out


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_trainer_resumes_bit_exactly_on_shards(spiral_shards, tmp_path):
    # 12 steps of 16 rows = 2.7 passes over 4 whole batches per epoch, so the resume crosses epochs
    straight = train(spiral_shards, tmp_path / "a", 12)
    assert len(straight.losses) == 12 and all(torch.isfinite(torch.tensor(straight.losses)))
    train(spiral_shards, tmp_path / "b", 6, checkpoint_every=3)
    resumed = train(spiral_shards, tmp_path / "b", 12, checkpoint_every=3, resume=True)
    _equal(straight.model.state_dict(), resumed.model.state_dict())
    assert resumed.losses == straight.losses


def test_dataloader_workers_do_not_change_the_run(spiral_shards, tmp_path):
    serial = train(spiral_shards, tmp_path / "serial", 6)
    parallel = train(spiral_shards, tmp_path / "workers", 6, num_workers=2)
    _equal(serial.model.state_dict(), parallel.model.state_dict())


def test_two_process_ddp_reads_disjoint_halves_and_matches_one_process(spiral_shards, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    one = subprocess.run(
        [sys.executable, str(JOB), str(spiral_shards), str(tmp_path / "one"), "8"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            str(JOB),
            str(spiral_shards),
            str(tmp_path / "two"),
            "8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert (
        tmp_path / "two" / "world.txt"
    ).read_text() == "2"  # a failed fan-out would silently run 1 process
    single, double = (
        load_file(str(tmp_path / "one" / "weights.safetensors")),
        load_file(str(tmp_path / "two" / "weights.safetensors")),
    )
    for key in single:
        # each rank read its 8 rows of every 16-row global batch; DDP averages the halves: equal up to rounding
        torch.testing.assert_close(double[key], single[key], rtol=1e-4, atol=1e-5, msg=key)
