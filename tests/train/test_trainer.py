"""The shared Trainer: exact resume after SIGKILL, DDP parity, accumulation, NaN stop, checkpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fourfold.data.toy import SpiralDataset
from fourfold.nn.modeling import CheckpointError
from fourfold.train import NonFiniteLossError, Trainer, TrainerConfig, lr_lambda
from fourfold.train.checkpoint import list_checkpoints
from fourfold.train.toy import SpiralNet, SpiralNetConfig, classification_loss, train_spirals

FOURFOLD = [sys.executable, "-m", "fourfold.cli"]


def _env() -> dict[str, str]:
    # one thread per process makes CPU float reductions reproducible run to run
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _toy_args(out: Path, steps: int, *extra: str) -> list[str]:
    return [
        *FOURFOLD,
        "trainer",
        "toy",
        "--out",
        str(out),
        "--steps",
        str(steps),
        "--batch-size",
        "16",
        "--checkpoint-every",
        "5",
        "--dropout",
        "0.2",
        "--ema",
        "0.9",
        "--no-progress",
        *extra,
    ]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    steps = 40
    reference = tmp_path / "reference"
    subprocess.run(_toy_args(reference, steps), check=True, env=_env(), capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _toy_args(killed, steps, "--step-delay", "0.05"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (killed / "checkpoint-00000015").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.02)
    time.sleep(0.12)  # land the kill between checkpoints, mid-step
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model").exists(), "the run finished before it was killed"
    done_before_kill = max(int(p.name.split("-")[1]) for p in list_checkpoints(killed))
    assert 15 <= done_before_kill < steps

    resumed = subprocess.run(_toy_args(killed, steps, "--resume"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ref, got = _weights(reference), _weights(killed)
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), f"{key} differs after resume"
    # the JSONL log of the resumed run has each step once, in order
    steps_logged = [
        json.loads(line)["step"]
        for line in (killed / "train_log.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps_logged == sorted(set(steps_logged)) and steps_logged[-1] == steps
    assert len(list_checkpoints(killed)) == 2  # keep_last
    assert not list(killed.glob(".tmp-*"))


def test_two_process_ddp_matches_one_process(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    common = ["--steps", "20", "--batch-size", "32", "--checkpoint-every", "0", "--no-progress", "--cpu"]
    single = subprocess.run(
        [*FOURFOLD, "trainer", "toy", "--out", str(tmp_path / "one"), *common],
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "fourfold.cli",
            "trainer",
            "toy",
            "--out",
            str(tmp_path / "two"),
            *common,
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]
    # failures of a multi-process launch are silent: check that there really were two processes
    state = json.loads((list_checkpoints(tmp_path / "two")[-1] / "trainer_state.json").read_text())
    assert state["world_size"] == 2
    one, two = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    for key in one:
        # each process averages half the batch and DDP averages the two: equal up to float rounding
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5, msg=key)
    assert not torch.equal(one["net.0.weight"], SpiralNet(SpiralNetConfig()).net[0].weight)


def _trainer(tmp_path: Path, **overrides) -> Trainer:
    torch.manual_seed(0)
    settings = {"max_steps": 6, "batch_size": 8, "progress": False, "max_grad_norm": None, **overrides}
    config = TrainerConfig(output_dir=str(tmp_path / "run"), **settings)
    return Trainer(SpiralNet(SpiralNetConfig(hidden=16)), config, SpiralDataset(64), classification_loss)


def test_gradient_accumulation_equals_one_big_batch(tmp_path):
    big = _trainer(tmp_path / "a", batch_size=8, grad_accum=1, shuffle=False)
    big.fit()
    accumulated = _trainer(tmp_path / "b", batch_size=4, grad_accum=2, shuffle=False)
    accumulated.fit()
    for (k, a), (_, b) in zip(
        big.model.state_dict().items(), accumulated.model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=k)


def test_clipping_sees_the_real_gradient_norm(tmp_path):
    trainer = _trainer(tmp_path, max_steps=3, log_every=1)
    trainer.config.max_grad_norm = 1e-3
    trainer.fit()
    norms = [
        json.loads(line)["grad_norm"]
        for line in trainer.log_path.read_text().splitlines()
        if "grad_norm" in line
    ]
    assert len(norms) == 3 and all(n > 1e-3 for n in norms)  # the pre-clip norm is reported


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    config = TrainerConfig(
        output_dir=str(tmp_path / "run"), max_steps=20, batch_size=16, checkpoint_every=4, progress=False
    )
    with pytest.raises(NonFiniteLossError, match=r"step 10 .*last good checkpoint: .*checkpoint-00000008"):
        train_spirals(config, nan_at_step=10)
    last = list_checkpoints(tmp_path / "run")[-1]
    assert last.name == "checkpoint-00000008"
    weights = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_resume_rejects_a_checkpoint_of_another_model(tmp_path):
    trainer = _trainer(tmp_path)
    trainer.fit()
    torch.manual_seed(0)
    config = TrainerConfig(output_dir=str(tmp_path / "run"), max_steps=8, batch_size=8, progress=False)
    other = Trainer(SpiralNet(SpiralNetConfig(hidden=32)), config, SpiralDataset(64), classification_loss)
    with pytest.raises(CheckpointError, match=r"net\.0\.weight: checkpoint \(16, 2\) vs model \(32, 2\)"):
        other.fit(resume=True)


def test_stale_temporary_checkpoint_is_ignored_and_removed(tmp_path):
    trainer = _trainer(tmp_path, checkpoint_every=3)
    trainer.fit()
    stale = tmp_path / "run" / ".tmp-checkpoint-00000009"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    torch.manual_seed(0)
    config = TrainerConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=9,
        batch_size=8,
        progress=False,
        checkpoint_every=3,
        max_grad_norm=None,
    )
    again = Trainer(SpiralNet(SpiralNetConfig(hidden=16)), config, SpiralDataset(64), classification_loss)
    result = again.fit(resume=True)
    assert result.step == 9 and not stale.exists() and len(result.losses) == 9


def test_lr_schedules():
    cosine = lr_lambda(TrainerConfig(max_steps=110, warmup_steps=10, lr_schedule="cosine"))
    assert cosine(0) == pytest.approx(0.1) and cosine(9) == pytest.approx(1.0)
    assert cosine(60) == pytest.approx(0.5) and cosine(110) == pytest.approx(0.0)
    linear = lr_lambda(TrainerConfig(max_steps=100, lr_schedule="linear", min_lr_ratio=0.1))
    assert linear(50) == pytest.approx(0.55)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lr_schedule", "step", "lr_schedule must be one of"),
        ("batch_size", 0, "batch_size must be >= 1"),
        ("mixed_precision", "fp8", "mixed_precision must be one of"),
        ("ema_decay", 1.5, "ema_decay"),
    ],
)
def test_bad_config_values_are_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainerConfig(**{field: value})


def test_ema_tracks_the_weights(tmp_path):
    trainer = _trainer(tmp_path, ema_decay=0.5, max_steps=4)
    trainer.fit()
    shadow = trainer.ema.shadows[0]
    assert not torch.equal(shadow, trainer.params[0].float())
    assert (shadow - trainer.params[0]).abs().max() < 0.05


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    _trainer(
        tmp_path / "fp32"
    ).fit()  # a full-precision Trainer earlier in the same process must not block bf16
    trainer = _trainer(tmp_path / "bf16", mixed_precision="bf16", max_steps=30, learning_rate=1e-2)
    result = trainer.fit()
    assert trainer.accelerator.mixed_precision == "bf16"
    assert all(p.dtype == torch.float32 for p in trainer.params)  # fp32 masters, bf16 autocast compute
    assert sum(result.losses[-5:]) / 5 < sum(result.losses[:5]) / 5


class _Stream(torch.utils.data.IterableDataset):
    """Spiral rows in a fixed order; optionally shards by rank itself."""

    def __init__(self, splits_by_rank: bool) -> None:
        self.data = SpiralDataset(64)
        self.splits_by_rank = splits_by_rank
        self.rank, self.world = 0, 1

    def set_rank(self, rank: int, world_size: int) -> None:
        self.rank, self.world = rank, world_size

    def __iter__(self):
        for i in range(self.rank, len(self.data), self.world):
            yield self.data[i]


@pytest.mark.parametrize("splits_by_rank", [False, True])
def test_iterable_dataset_trains_and_resumes_exactly(tmp_path, splits_by_rank):
    def run(out: Path, steps: int, resume: bool) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        config = TrainerConfig(
            output_dir=str(out), max_steps=steps, batch_size=8, checkpoint_every=3, progress=False
        )
        trainer = Trainer(
            SpiralNet(SpiralNetConfig(hidden=16)), config, _Stream(splits_by_rank), classification_loss
        )
        trainer.fit(resume=resume)
        return trainer.model.state_dict()

    straight = run(tmp_path / "a", 12, False)  # 12 steps of 8 rows = 1.5 passes over 64 rows
    run(tmp_path / "b", 6, False)
    resumed = run(tmp_path / "b", 12, True)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


class _SeekableStream(_Stream):
    """A stream that can start mid-epoch; counts the rows it actually produced."""

    def __init__(self) -> None:
        super().__init__(splits_by_rank=True)
        self.start, self.produced, self.batch_size = 0, 0, None

    def set_batch_size(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches_per_epoch(self) -> int:
        return len(self.data) // self.world // self.batch_size

    def set_start(self, batches: int) -> None:
        self.start = batches

    def __iter__(self):
        rows = list(range(self.rank, len(self.data), self.world))
        for i in rows[self.start * self.batch_size :]:
            self.produced += 1
            yield self.data[i]


def test_seekable_stream_resumes_without_reading_the_skipped_rows(tmp_path):
    def run(out: Path, steps: int, resume: bool) -> tuple[Trainer, _SeekableStream]:
        torch.manual_seed(0)
        stream = _SeekableStream()
        config = TrainerConfig(
            output_dir=str(out), max_steps=steps, batch_size=8, checkpoint_every=5, progress=False
        )
        trainer = Trainer(SpiralNet(SpiralNetConfig(hidden=16)), config, stream, classification_loss)
        trainer.fit(resume=resume)
        return trainer, stream

    straight, _ = run(tmp_path / "a", 12, False)
    run(tmp_path / "b", 5, False)
    resumed, stream = run(tmp_path / "b", 12, True)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    # 5 steps done = 40 rows of the 64-row first epoch skipped, never produced: 24 + 64 rows remain (7 steps)
    assert stream.produced <= 24 + 64
