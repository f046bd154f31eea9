"""Thin layer over diffusers shared by Draw an Audio, SongCreator's renderer and the SaRA demos:
schedulers by name, the latent-diffusion training step, chained classifier-free guidance with a
sampling loop, and attention-processor utilities."""

from fourfold.diffusion.attention import (
    DecoupledCrossAttnProcessor,
    IgnoreKwargs,
    attach_decoupled_cross_attention,
    attention_modules,
    set_processors,
)
from fourfold.diffusion.guidance import (
    combine_guidance,
    concat_branches,
    dual_cfg,
    guided_prediction,
    joint_cfg,
    sample,
)
from fourfold.diffusion.schedulers import SCHEDULER_NAMES, make_scheduler, scheduler_class
from fourfold.diffusion.training import (
    DiffusionStepOutput,
    add_noise,
    call_model,
    diffusion_target,
    min_snr_weights,
    snr,
    training_step,
)

__all__ = [
    "SCHEDULER_NAMES",
    "DecoupledCrossAttnProcessor",
    "DiffusionStepOutput",
    "IgnoreKwargs",
    "add_noise",
    "attach_decoupled_cross_attention",
    "attention_modules",
    "call_model",
    "combine_guidance",
    "concat_branches",
    "diffusion_target",
    "dual_cfg",
    "guided_prediction",
    "joint_cfg",
    "make_scheduler",
    "min_snr_weights",
    "sample",
    "scheduler_class",
    "set_processors",
    "snr",
    "training_step",
]
