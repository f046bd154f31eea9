"""The one Trainer every fourfold system trains with, on Hugging Face Accelerate.

One process on a CPU, DDP over many GPUs or machines: the same code. Launch with ``torchrun`` or
``accelerate launch`` and Accelerate wraps the model; the data split, the seeds and the checkpoints
below are written so that a 2-process run gives the weights of a 1-process run with the same global
batch, and a run killed at any moment resumes bit-exactly from its last checkpoint.

Contract for ``loss_fn(model, batch)``: it must *call* ``model(...)`` (its forward), because DDP syncs
gradients through the wrapped forward; it returns a scalar loss tensor or ``(loss, {name: float})``.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType, set_seed
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torch.utils.data.dataloader import default_collate
from tqdm.auto import tqdm

from fourfold.nn.modeling import (
    CheckpointError,
    atomic_write_text,
    check_state_dict,
    load_safetensors_checked,
)
from fourfold.train import checkpoint as ckpt
from fourfold.train.config import TrainerConfig
from fourfold.train.ema import EMA

logger = logging.getLogger(__name__)

LossOutput = torch.Tensor | tuple[torch.Tensor, dict[str, float]]
LossFn = Callable[[nn.Module, Any], LossOutput]
Callback = Callable[["Trainer", int], None]


class NonFiniteLossError(RuntimeError):
    """The loss (or gradient norm) became NaN/inf; the weights were not updated with it."""


@dataclass
class TrainResult:
    step: int  # optimizer steps done
    losses: list[float]  # mean loss of every optimizer step since step 0 (resumed runs included)
    log_path: Path  # JSONL log
    last_checkpoint: Path | None
    eval_history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0  # wall time of this fit() call


# helpers


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        moved = [_to_device(v, device) for v in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch


def _unpack(out: LossOutput) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(out, tuple):
        loss, logs = out
        return loss, {k: float(v) for k, v in logs.items()}
    return out, {}


def lr_lambda(config: TrainerConfig) -> Callable[[int], float]:
    """Multiplier of ``learning_rate`` at optimizer step ``s``: linear warmup, then the chosen decay."""
    warmup, total, floor = config.warmup_steps, config.max_steps, config.min_lr_ratio

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if config.lr_schedule == "cosine":
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return floor + (1.0 - floor) * (1.0 - progress)

    return factor


def _make_accelerator(config: TrainerConfig) -> Accelerator:
    """An ``Accelerator`` for this run's precision/device, also when an earlier Trainer in this process chose others.

    Accelerate keeps one process-wide state and refuses a second precision; demos and tests train several
    models in one process, so the precision part of that state is reset (the process group is kept).
    """
    try:
        return Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)
    except ValueError as err:
        if "already been initialized" not in str(err):
            raise
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(cpu=config.cpu, mixed_precision=config.mixed_precision)


class Trainer:
    """Train ``model`` on ``train_data`` with ``loss_fn``; see :class:`TrainerConfig` for every knob.

    Args:
        model: the module to train (any ``nn.Module``); kept unwrapped in ``self.model``.
        config: the run's :class:`TrainerConfig`.
        train_data: a map-style ``Dataset`` (sampled by a seeded per-epoch permutation) or an
            ``IterableDataset`` (read in order; resume skips what was consumed).
        loss_fn: ``loss_fn(model, batch) -> loss | (loss, logs)``; must call ``model(...)``.
        collate_fn: batches a list of samples (default: ``torch.utils.data.default_collate``).
        params: the tensors to optimise (default: every parameter with ``requires_grad``).
        optimizer_fn: ``optimizer_fn(params) -> Optimizer`` (default AdamW from the config).
        eval_fn: ``eval_fn(model, step) -> {name: float}`` run on the main process every ``eval_every``
            steps and at the end (with EMA weights swapped in when EMA is on).
        callbacks: ``cb(trainer, step)`` after every optimizer step (e.g. SaRA's progressive re-selection).
        accelerator: an existing ``Accelerator`` (one is built from the config otherwise).
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainerConfig,
        train_data: Dataset | IterableDataset,
        loss_fn: LossFn,
        *,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        params: Iterable[torch.Tensor] | None = None,
        optimizer_fn: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
        eval_fn: Callable[[nn.Module, int], dict[str, float]] | None = None,
        callbacks: Sequence[Callback] = (),
        accelerator: Accelerator | None = None,
    ) -> None:
        self.config = config
        if config.mixed_precision == "fp16" and (config.cpu or not torch.cuda.is_available()):
            raise ValueError("mixed_precision='fp16' needs a CUDA GPU; use 'bf16' or 'no' on CPU")
        self.accelerator = accelerator or _make_accelerator(config)
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        if config.batch_size % self.world_size:
            raise ValueError(
                f"batch_size={config.batch_size} (global) does not split evenly over {self.world_size} processes"
            )
        self.output_dir = Path(config.output_dir)
        self.model = model
        self.train_data = train_data
        self.loss_fn = loss_fn
        self.collate_fn = collate_fn or default_collate
        self.eval_fn = eval_fn
        self.callbacks = list(callbacks)
        self.params = (
            list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
        )
        if not self.params:
            raise ValueError("nothing to train: the model has no parameter with requires_grad=True")
        optimizer = (
            optimizer_fn(self.params)
            if optimizer_fn is not None
            else torch.optim.AdamW(
                self.params,
                lr=config.learning_rate,
                betas=config.betas,
                eps=config.adam_eps,
                weight_decay=config.weight_decay,
            )
        )
        # The scheduler is deliberately not prepared: Accelerate would step it once per process.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        self.wrapped_model, self._accelerated_optimizer = self.accelerator.prepare(model, optimizer)
        self.ema = EMA(self.params, config.ema_decay) if config.ema_decay else None
        self.step = 0
        self.losses: list[float] = []
        self.eval_history: list[dict[str, float]] = []

    # public state

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The underlying torch optimizer (for callbacks that edit its state)."""
        return getattr(self._accelerated_optimizer, "optimizer", self._accelerated_optimizer)

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def log_path(self) -> Path:
        return self.output_dir / "train_log.jsonl"

    # data

    def _loader(
        self, batches: list[list[int]] | None, epoch: int, batch_size: int | None = None
    ) -> DataLoader:
        # A dedicated generator keeps DataLoader from drawing on the global RNG (which resume restores).
        generator = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        if batches is None:
            return DataLoader(
                self.train_data,
                batch_size=batch_size or self.config.batch_size,
                collate_fn=self.collate_fn,
                num_workers=self.config.num_workers,
                generator=generator,
            )
        return DataLoader(
            self.train_data,
            batch_sampler=batches,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            generator=generator,
        )

    def _epoch_order(self, epoch: int, n: int) -> torch.Tensor:
        if not self.config.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return torch.randperm(n, generator=g)

    def _micro_batches(self, start: int) -> Iterator[Any]:
        """Yield this process's share of global micro-batches ``start, start+1, ...`` forever."""
        bs, local = self.config.batch_size, self.config.batch_size // self.world_size
        lo, hi = self.rank * local, (self.rank + 1) * local
        if isinstance(self.train_data, IterableDataset):
            # A dataset that shards by rank itself (``splits_by_rank = True`` and ``set_rank``) yields only
            # this process's rows, batched locally; any other stream is read whole and sliced per rank.
            own_split = bool(getattr(self.train_data, "splits_by_rank", False))
            if own_split:
                self.train_data.set_rank(self.rank, self.world_size)
                if hasattr(self.train_data, "set_batch_size"):
                    # batches then do not depend on the number of processes or loader workers
                    self.train_data.set_batch_size(bs)
            if (
                own_split
                and hasattr(self.train_data, "set_start")
                and hasattr(self.train_data, "batches_per_epoch")
            ):
                yield from self._seekable_stream(start, local)
                return
            consumed, epoch = 0, 0
            while True:
                if hasattr(self.train_data, "set_epoch"):
                    self.train_data.set_epoch(epoch)
                produced = False
                for batch in self._loader(None, epoch, batch_size=local if own_split else bs):
                    produced = True
                    if consumed >= start:
                        rows = batch if own_split else _slice_batch(batch, lo, hi)
                        yield _to_device(rows, self.accelerator.device)
                    consumed += 1
                if not produced:
                    raise ValueError("the training IterableDataset yielded no batch")
                epoch += 1
        n = len(self.train_data)  # type: ignore[arg-type]
        per_epoch = n // bs if self.config.drop_last or self.world_size > 1 else math.ceil(n / bs)
        if per_epoch == 0:
            raise ValueError(f"the training set has {n} samples, fewer than batch_size={bs}")
        micro = start
        while True:
            epoch, first = divmod(micro, per_epoch)
            order = self._epoch_order(epoch, n).tolist()
            batches = [order[i * bs : (i + 1) * bs][lo:hi] for i in range(first, per_epoch)]
            for batch in self._loader(batches, epoch):
                yield _to_device(batch, self.accelerator.device)
            micro = (epoch + 1) * per_epoch

    def _seekable_stream(self, start: int, local: int) -> Iterator[Any]:
        """A stream that can start mid-epoch without reading what it skips (e.g. ``fourfold.data.ShardDataset``)."""
        data = self.train_data
        per_epoch = data.batches_per_epoch()
        if per_epoch == 0:
            raise ValueError("the training stream has fewer samples per epoch than one batch")
        epoch, first = divmod(start, per_epoch)
        while True:
            data.set_epoch(epoch)
            data.set_start(first)
            for batch in self._loader(None, epoch, batch_size=local):
                yield _to_device(batch, self.accelerator.device)
            epoch, first = epoch + 1, 0

    # checkpoints

    def save_checkpoint(self) -> Path:
        """Write ``checkpoint-<step>`` atomically (all processes must call this) and prune old ones."""
        acc = self.accelerator
        name = ckpt.checkpoint_name(self.step)
        final = self.output_dir / name
        tmp = self.output_dir / f".tmp-{name}"
        if self.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        ckpt.save_rng(tmp, self.rank)
        model_state = acc.get_state_dict(self.wrapped_model)  # collective under FSDP
        acc.wait_for_everyone()
        if self.is_main:
            ckpt.save_tensors(tmp / "model.safetensors", model_state)
            ckpt.optimizer_state_to_files(self.optimizer, tmp)
            (tmp / "scheduler.json").write_text(json.dumps(self.scheduler.state_dict()))
            if self.ema is not None:
                ckpt.save_tensors(tmp / "ema.safetensors", self.ema.state_dict())
            state = {
                "step": self.step,
                "micro_batches_consumed": self.step * self.config.grad_accum,
                "world_size": self.world_size,
                "losses": self.losses,
                "eval_history": self.eval_history,
                "config": asdict(self.config),
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state))
            if final.exists():  # a re-run over the same step: replace, never mix
                shutil.rmtree(final)
            tmp.rename(final)
            ckpt.prune_checkpoints(self.output_dir, self.config.keep_last)
        acc.wait_for_everyone()
        return final

    def load_checkpoint(self, directory: str | Path) -> None:
        """Restore everything ``save_checkpoint`` wrote; validates the weights before touching the model."""
        directory = Path(directory)
        sharded = self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if sharded:
            raise CheckpointError(
                f"resuming a {self.accelerator.distributed_type.value} run is not supported: its optimizer state is "
                "sharded across processes and this checkpoint holds one process's share; resume under DDP instead"
            )
        state = ckpt.read_trainer_state(directory)
        weights = load_safetensors_checked(directory / "model.safetensors")
        model = self.accelerator.unwrap_model(self.wrapped_model)
        check_state_dict(model.state_dict(), weights, source=str(directory / "model.safetensors"))
        optimizer_state = ckpt.optimizer_state_from_files(directory)
        model.load_state_dict(weights)
        try:
            self.optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError) as err:
            raise CheckpointError(
                f"{directory}: optimizer state does not match this model's parameters: {err}"
            ) from err
        self.scheduler.load_state_dict(ckpt.read_json(directory / "scheduler.json"))
        if self.ema is not None:
            ema_path = directory / "ema.safetensors"
            if ema_path.is_file():
                self.ema.load_state_dict(load_safetensors_checked(ema_path))
            else:
                logger.warning("%s has no EMA state; EMA restarts from the current weights", directory)
        if state.get("world_size") != self.world_size:
            logger.warning(
                "checkpoint written by %s processes, resuming on %s: data order is kept, RNG streams are not",
                state.get("world_size"),
                self.world_size,
            )
            set_seed(self.config.seed + self.rank + state["step"])
        elif not ckpt.load_rng(directory, self.rank):
            logger.warning("%s has no RNG state for rank %d", directory, self.rank)
        self.step = int(state["step"])
        self.losses = [float(x) for x in state.get("losses", [])][: self.step]
        self.eval_history = list(state.get("eval_history", []))

    # logging

    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.log_path, "a") as fh:
                fh.write(json.dumps(record) + "\n")

    def _truncate_log(self) -> None:
        """Drop log lines past the resumed step (written by the run that was killed after its checkpoint)."""
        if not self.is_main or not self.log_path.is_file():
            return
        kept = [
            ln
            for ln in self.log_path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= self.step
        ]
        atomic_write_text(self.log_path, "".join(ln + "\n" for ln in kept))

    # the loop

    def _evaluate(self) -> None:
        acc = self.accelerator
        if self.is_main and self.eval_fn is not None:
            model = acc.unwrap_model(self.wrapped_model)
            was_training = model.training
            model.eval()
            with self.ema.swapped_in() if self.ema is not None else nullcontext(), torch.no_grad():
                metrics = {k: float(v) for k, v in self.eval_fn(model, self.step).items()}
            model.train(was_training)
            record = {"step": self.step, **{f"eval/{k}": v for k, v in metrics.items()}}
            self.eval_history.append(record)
            self._log(record)
        acc.wait_for_everyone()

    def _grad_norm(self) -> torch.Tensor:
        """Total gradient norm before clipping; clips in place when ``max_grad_norm`` is set."""
        if self.config.max_grad_norm and self.config.max_grad_norm > 0:
            return self.accelerator.clip_grad_norm_(self.params, self.config.max_grad_norm)
        grads = [p.grad for p in self.params if p.grad is not None]
        return torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())

    def fit(self, resume: bool | str | Path = False) -> TrainResult:
        """Run until ``max_steps``; ``resume=True`` continues from the newest checkpoint in ``output_dir``.

        Raises :class:`NonFiniteLossError` when the loss or gradient norm is NaN/inf; the offending update
        is not applied and the last checkpoint on disk stays the last good one.
        """
        cfg, acc = self.config, self.accelerator
        started = time.perf_counter()
        if self.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(self.output_dir)
        acc.wait_for_everyone()
        set_seed(cfg.seed + self.rank)
        last_ckpt: Path | None = None
        if resume:
            found = ckpt.latest_checkpoint(self.output_dir) if resume is True else Path(resume)
            if found is None:
                logger.warning(
                    "resume requested but %s holds no checkpoint: starting from step 0", self.output_dir
                )
            else:
                self.load_checkpoint(found)
                last_ckpt = found
                self._truncate_log()
                if self.is_main:
                    logger.info("resumed from %s at step %d", found, self.step)
        elif self.is_main and self.log_path.exists():
            self.log_path.unlink()

        batches = self._micro_batches(self.step * cfg.grad_accum)
        self.wrapped_model.train()
        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not (cfg.progress and self.is_main),
            dynamic_ncols=True,
        )
        window_start, window_samples = time.perf_counter(), 0
        while self.step < cfg.max_steps:
            loss_sum = torch.zeros((), device=acc.device)
            logs_sum: dict[str, float] = {}
            nonfinite = torch.zeros((), device=acc.device)
            for micro in range(cfg.grad_accum):
                batch = next(batches)
                # DDP all-reduces gradients only on the last micro-batch of the step.
                sync = micro == cfg.grad_accum - 1
                with nullcontext() if sync else acc.no_sync(self.wrapped_model):
                    with acc.autocast():
                        loss, logs = _unpack(self.loss_fn(self.wrapped_model, batch))
                    if loss.dim() != 0:
                        raise ValueError(f"loss_fn must return a scalar loss, got shape {tuple(loss.shape)}")
                    if not torch.isfinite(loss.detach()):
                        nonfinite += 1
                    acc.backward(loss / cfg.grad_accum)
                loss_sum += loss.detach().float() / cfg.grad_accum
                for k, v in logs.items():
                    logs_sum[k] = logs_sum.get(k, 0.0) + v / cfg.grad_accum
            grad_norm = self._grad_norm().detach().float().reshape(())
            if cfg.mixed_precision != "fp16" and not torch.isfinite(grad_norm):
                nonfinite += 1
            if acc.reduce(nonfinite, "sum").item() > 0:
                self.optimizer.zero_grad(set_to_none=True)
                bar.close()
                where = f"last good checkpoint: {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at step {self.step + 1} (loss={loss_sum.item()}, "
                    f"grad_norm={grad_norm.item()}); the update was not applied; {where}"
                )
            self._accelerated_optimizer.step()
            self.scheduler.step()
            self._accelerated_optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            step_loss = acc.reduce(loss_sum, "mean").item()
            self.losses.append(step_loss)
            for callback in self.callbacks:
                callback(self, self.step)

            window_samples += cfg.batch_size * cfg.grad_accum
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                elapsed = time.perf_counter() - window_start
                record = {
                    "step": self.step,
                    "loss": step_loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm.item(),
                    "samples_per_s": window_samples / max(elapsed, 1e-9),
                    **logs_sum,
                }
                self._log(record)
                bar.set_postfix(loss=f"{step_loss:.4g}", samples_s=f"{record['samples_per_s']:.1f}")
                window_start, window_samples = time.perf_counter(), 0
            if self.eval_fn is not None and (
                (cfg.eval_every and self.step % cfg.eval_every == 0) or self.step == cfg.max_steps
            ):
                self._evaluate()
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or (
                self.step == cfg.max_steps and cfg.save_final_checkpoint
            ):
                last_ckpt = self.save_checkpoint()
        bar.close()
        return TrainResult(
            step=self.step,
            losses=list(self.losses),
            log_path=self.log_path,
            last_checkpoint=last_ckpt,
            eval_history=list(self.eval_history),
            seconds=time.perf_counter() - started,
        )


def _slice_batch(batch: Any, lo: int, hi: int) -> Any:
    """This process's rows ``[lo, hi)`` of a collated global batch."""
    if isinstance(batch, torch.Tensor):
        return batch[lo:hi]
    if isinstance(batch, dict):
        return {k: _slice_batch(v, lo, hi) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(_slice_batch(v, lo, hi) for v in batch)
    return batch
