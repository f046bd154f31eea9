"""Shared neural-network building blocks and the model base class."""

from fourfold.nn.modeling import (
    CheckpointError,
    PretrainedModel,
    atomic_write_dir,
    atomic_write_text,
    check_state_dict,
    config_from_dict,
    config_to_dict,
    load_safetensors_checked,
)

__all__ = [
    "CheckpointError",
    "PretrainedModel",
    "atomic_write_dir",
    "atomic_write_text",
    "check_state_dict",
    "config_from_dict",
    "config_to_dict",
    "load_safetensors_checked",
]
