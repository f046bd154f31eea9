"""Baselines at SaRA's budget: PEFT LoRA whose trainable count matches a target (spec §8: within 10%)."""

from __future__ import annotations

import copy
import re

from torch import nn

LORA_TARGETS = r".*(to_q|to_k|to_v|to_out\.0|proj_in|proj_out|ff\.net\.0\.proj|ff\.net\.2|conv1|conv2)$"


def inject_lora_at_budget(model: nn.Module, budget: int, target_modules: str = LORA_TARGETS) -> dict:
    """Inject LoRA into ``model`` (in place) with a trainable count as close to ``budget`` as ranks allow.

    Every target gets rank r = ⌊budget / count(r=1)⌋ (at least 1); then targets are bumped to r+1,
    largest first, while that does not overshoot, via PEFT's ``rank_pattern``. Only LoRA weights stay
    trainable. Returns ``{"rank": r, "bumped": n, "trainable": count}``.
    """
    from peft import LoraConfig, inject_adapter_in_model

    probe = inject_adapter_in_model(
        LoraConfig(r=1, lora_alpha=1, target_modules=target_modules), copy.deepcopy(model)
    )
    per_module: dict[str, int] = {}
    for name, p in probe.named_parameters():
        if ".lora_" in name:
            owner = name.split(".lora_")[0]
            per_module[owner] = per_module.get(owner, 0) + p.numel()
    del probe
    if not per_module:
        raise ValueError("inject_lora_at_budget: no module matches the LoRA targets")
    per_rank = sum(per_module.values())
    rank = max(1, budget // per_rank)
    remaining = budget - rank * per_rank
    pattern = {}
    for owner, count in sorted(per_module.items(), key=lambda kv: -kv[1]):
        if 0 < count <= remaining:
            pattern[re.escape(owner)] = rank + 1
            remaining -= count
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=target_modules, rank_pattern=pattern,
                     alpha_pattern={k: v for k, v in pattern.items()})  # fmt: skip
    inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"rank": rank, "bumped": len(pattern), "trainable": trainable}
