"""Configurations (spec §4): ``paper()`` follows the paper's Tab 12 / §4.1, ``tiny()`` is the CI size."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["NUM_STREAM_SPECIALS", "PAPER_LYRICS_VOCAB", "DSLMConfig", "parameter_breakdown"]

# Stream vocabulary = codes, then PAD, BOS, EOS, EDIT, MASK (spec §2.3).
NUM_STREAM_SPECIALS = 5
# The paper's DSLM has 631M parameters (§4.1). Every size the paper states (d 1024, 16 heads, FFN 4096,
# layers 4 / 8 / 8 / 4, 16,384 codes) gives 523.3M with a 512-row lyrics table; the one size it leaves
# open is the lyric vocabulary (it names no lyric unit; its songs are Chinese and English, where text
# vocabularies run to ~100k entries). paper() fills the 107.7M gap there (ours): 105,664 rows -> 631.0M.
PAPER_LYRICS_VOCAB = 105_664


@dataclass
class DSLMConfig:
    """Dual-sequence language model (§3.2, Tab 12)."""

    codebook_size: int = field(default=16384, metadata={"help": "semantic codes (VQ size, App A.2)"})
    lyrics_vocab_size: int = field(
        default=512, metadata={"help": "lyrics front-end table size (upper bound)"}
    )
    dim: int = field(default=1024, metadata={"help": "model width d (Tab 12)"})
    heads: int = field(default=16, metadata={"help": "attention heads (Tab 12)"})
    ffn_dim: int = field(default=4096, metadata={"help": "feed-forward width (Tab 12)"})
    lyrics_layers: int = field(default=4, metadata={"help": "lyrics encoder layers"})
    vocal_layers: int = field(default=8, metadata={"help": "vocal decoder blocks"})
    accomp_layers: int = field(
        default=8, metadata={"help": "accompaniment decoder blocks (lockstep: = vocal)"}
    )
    song_layers: int = field(default=4, metadata={"help": "song decoder layers (non-autoregressive)"})
    dropout: float = field(default=0.1, metadata={"help": "dropout (ours)"})
    max_lyrics_tokens: int = field(default=256, metadata={"help": "lyrics tokens (Tab 12)"})
    max_stream_tokens: int = field(default=1500, metadata={"help": "generated frames: 30 s at 50 Hz (§5)"})
    max_prompt_tokens: int = field(default=500, metadata={"help": "prompt frames: 10 s at 50 Hz (§3.4)"})
    token_rate: float = field(default=50.0, metadata={"help": "semantic tokens per second (App A.2)"})

    def __post_init__(self) -> None:
        for name in (
            "codebook_size",
            "lyrics_vocab_size",
            "dim",
            "heads",
            "ffn_dim",
            "vocal_layers",
            "song_layers",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"DSLMConfig.{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.heads:
            raise ValueError(f"DSLMConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")
        if self.dim % 2:
            raise ValueError(f"DSLMConfig.dim must be even (sinusoidal positions), got {self.dim}")
        if self.accomp_layers != self.vocal_layers:
            raise ValueError(
                "DSLMConfig.accomp_layers must equal vocal_layers: the decoders run in lockstep (BCA)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DSLMConfig.dropout must be in [0, 1), got {self.dropout}")

    # stream token ids
    @property
    def pad_id(self) -> int:
        return self.codebook_size

    @property
    def bos_id(self) -> int:
        return self.codebook_size + 1

    @property
    def eos_id(self) -> int:
        return self.codebook_size + 2

    @property
    def edit_id(self) -> int:
        return self.codebook_size + 3

    @property
    def mask_id(self) -> int:
        return self.codebook_size + 4

    @property
    def stream_vocab_size(self) -> int:
        return self.codebook_size + NUM_STREAM_SPECIALS

    @property
    def eos_class(self) -> int:
        """Index of EOS in the stream heads' output (codes, then EOS)."""
        return self.codebook_size

    @property
    def max_positions(self) -> int:
        # prompt + BOS/EDIT + frames + EOS; an edit's moved tail counts as prompt.
        return self.max_prompt_tokens + self.max_stream_tokens + 2

    @classmethod
    def paper(cls, lyrics_vocab_size: int = PAPER_LYRICS_VOCAB) -> DSLMConfig:
        """Tab 12 sizes; ``lyrics_vocab_size`` defaults to the row count that gives the paper's 631M
        (see :data:`PAPER_LYRICS_VOCAB`); pass your front end's size for a leaner model (512 -> 523.3M)."""
        return cls(lyrics_vocab_size=lyrics_vocab_size)

    @classmethod
    def tiny(cls, codebook_size: int = 256, lyrics_vocab_size: int = 128) -> DSLMConfig:
        return cls(
            codebook_size=codebook_size,
            lyrics_vocab_size=lyrics_vocab_size,
            dim=64,
            heads=4,
            ffn_dim=256,
            lyrics_layers=2,
            vocal_layers=2,
            accomp_layers=2,
            song_layers=1,
            dropout=0.0,
            max_lyrics_tokens=128,
            max_stream_tokens=200,
            max_prompt_tokens=100,
            token_rate=25.0,
        )


def parameter_breakdown(config: DSLMConfig) -> dict[str, int]:
    """Parameters per DSLM part, counted on the meta device (no memory, ~0.1 s at paper size)."""
    import torch

    from fourfold.songcreator.dslm import DSLM

    with torch.device("meta"):
        model = DSLM(config)
    parts = {name: sum(p.numel() for p in module.parameters()) for name, module in model.named_children()}
    parts = {k: v for k, v in parts.items() if v}
    parts["total"] = sum(p.numel() for p in model.parameters())
    return parts
