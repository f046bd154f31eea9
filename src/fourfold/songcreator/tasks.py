"""The eight SongCreator tasks (Tab 2, App B) as attention-mask settings, and the masks themselves (§3.3).

A task fixes, per stream, the self-attention (SA) mode — ``"causal"`` (generated), ``"full"`` (a given
track, non-causal) or ``None`` (decoder unused) — and the bidirectional cross-attention (BCA) strategy:

=========  ==========================  ==========================
Strategy   vocals see accompaniment    accompaniment sees vocals
=========  ==========================  ==========================
BR         keys ``j <= i``             keys ``j <= i``
A2V        all keys                    none
V2A        none                        all keys
None       none                        none
=========  ==========================  ==========================

Masks are boolean, ``True`` = may attend, shape ``(batch, 1, queries, keys)``; PAD keys are always hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fourfold.nn.attention import causal_mask

__all__ = [
    "BCA_STRATEGIES",
    "TASKS",
    "TaskSpec",
    "bca_masks",
    "get_task",
    "self_attention_mask",
]

# Integer codes so a batch can mix strategies (training mixes tasks per sample).
BCA_STRATEGIES = ("BR", "A2V", "V2A", "None")
BR, A2V, V2A, NONE = range(4)


@dataclass(frozen=True)
class TaskSpec:
    """One row of Tab 2: SA mode of each decoder, BCA strategy, which streams the task returns."""

    name: str
    vocal: str | None  # "causal" | "full" | None (unused)
    accomp: str | None
    bca: str  # one of BCA_STRATEGIES
    outputs: tuple[str, ...]

    def __post_init__(self) -> None:
        for field, mode in (("vocal", self.vocal), ("accomp", self.accomp)):
            if mode not in ("causal", "full", None):
                raise ValueError(f"TaskSpec.{field} must be 'causal', 'full' or None, got {mode!r}")
        if self.bca not in BCA_STRATEGIES:
            raise ValueError(f"TaskSpec.bca must be one of {BCA_STRATEGIES}, got {self.bca!r}")
        if (self.vocal is None or self.accomp is None) and self.bca != "None":
            raise ValueError(f"task {self.name}: an unused decoder requires BCA 'None'")

    @property
    def bca_code(self) -> int:
        return BCA_STRATEGIES.index(self.bca)

    @property
    def stop_stream(self) -> str:
        """The stream whose EOS ends generation (spec §2.3: vocals, or accompaniment without vocals)."""
        return "vocal" if self.vocal == "causal" else "accomp"


TASKS: dict[str, TaskSpec] = {
    t.name: t
    for t in (
        TaskSpec("lyrics_to_song", "causal", "causal", "BR", ("song", "vocals", "accompaniment")),
        TaskSpec("lyrics_to_vocals", "causal", "causal", "BR", ("vocals",)),
        TaskSpec("lyrics_to_vocals_only", "causal", None, "None", ("vocals",)),
        TaskSpec("accompaniment_to_song", "causal", "full", "A2V", ("song", "vocals")),
        TaskSpec("vocals_to_song", "full", "causal", "V2A", ("song", "accompaniment")),
        TaskSpec("continue_music", None, "causal", "None", ("accompaniment",)),
        TaskSpec("edit_song", "causal", "causal", "BR", ("song", "vocals", "accompaniment")),
        TaskSpec("edit_vocals", "causal", None, "None", ("vocals",)),
        TaskSpec("edit_vocals_in_song", "causal", "full", "A2V", ("song", "vocals")),
    )
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name (``-`` or ``_``); unknown names raise ``ValueError`` listing the known ones."""
    key = name.replace("-", "_")
    if key not in TASKS:
        raise ValueError(f"unknown SongCreator task {name!r}; known: {sorted(TASKS)}")
    return TASKS[key]


def self_attention_mask(causal: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-sample SA mask.

    Args:
        causal: ``(batch,)`` bool, ``True`` = causal, ``False`` = full (non-causal).
        valid: ``(batch, seq)`` bool, ``False`` at PAD.
    Returns:
        ``(batch, 1, seq, seq)`` bool.
    """
    seq = valid.shape[1]
    tri = causal_mask(seq, seq, device=valid.device)
    base = torch.where(causal[:, None, None], tri, torch.ones_like(tri))
    return (base & valid[:, None, :])[:, None]


def bca_masks(
    strategy: torch.Tensor, valid_vocal: torch.Tensor, valid_accomp: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """BCA masks of Eq 1–3 for a batch of strategy codes.

    Args:
        strategy: ``(batch,)`` long, index into :data:`BCA_STRATEGIES`.
        valid_vocal, valid_accomp: ``(batch, seq)`` bool, ``False`` at PAD (both streams share ``seq``).
    Returns:
        ``(m_v, m_a)``, each ``(batch, 1, seq, seq)``: ``m_v`` for vocal queries over accompaniment keys,
        ``m_a`` for accompaniment queries over vocal keys.
    """
    seq = valid_vocal.shape[1]
    tri = causal_mask(seq, seq, device=strategy.device)
    full = torch.ones_like(tri)
    none = torch.zeros_like(tri)
    s = strategy[:, None, None]
    m_v = torch.where(s == BR, tri, torch.where(s == A2V, full, none))
    m_a = torch.where(s == BR, tri, torch.where(s == V2A, full, none))
    return (m_v & valid_accomp[:, None, :])[:, None], (m_a & valid_vocal[:, None, :])[:, None]
