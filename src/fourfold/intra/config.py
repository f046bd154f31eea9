"""``IntraConfig``: the model and loss hyper-parameters of INTRA (arXiv 2409.06210), one dataclass.

Paper values cite their section; values the paper leaves open are marked "ours".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

__all__ = ["IntraConfig"]

_NORMALIZERS = ("label", "positives")


def _help(text: str, default=dataclasses.MISSING):
    return field(default=default, metadata={"help": text})


@dataclass
class IntraConfig:
    """INTRA model + loss configuration. Encoder widths are read from the encoder directories."""

    image_encoder: str = _help("local Dinov2Model directory (paper: DINOv2-B/14, supp. B.1)", "")
    text_encoder: str = _help(
        "local BERT-style AutoModel+AutoTokenizer directory (paper: ALBEF text BERT)", ""
    )
    image_encoder_fingerprint: str = _help("fingerprint of the image encoder seen at save time", "")
    text_encoder_fingerprint: str = _help("fingerprint of the text encoder seen at save time", "")
    image_layer: int = _help(
        "encoder layer for F: -1 = last_hidden_state (post-norm), k = hidden_states[k] (ours)", -1
    )
    image_size: int = _help("square input size in pixels (§4.1: 336)", 336)
    resize_size: int = _help("resize before the random crop in training (§4.1: 384)", 384)
    fusion_layers: int = _help("fusion transformer layers (supp. B.1: 4)", 4)
    fusion_heads: int = _help("fusion attention heads (supp. B.1: 4)", 4)
    fusion_ffn: int = _help("fusion feed-forward width (ours: 2048)", 2048)
    dropout: float = _help("fusion dropout (ours: 0.1)", 0.1)
    fusion_norm_first: bool = _help(
        "pre-norm fusion layers (ours); False = post-norm, where the text token's scale can win attention",
        True,
    )
    head_hidden: int = _help("map head conv3x3 width (ours: 256; the paper says 2 conv layers)", 256)
    proj_layers: int = _help("projection MLP layers (Tab. S5: 3)", 3)
    proj_dim: int = _help("projection output width (Tab. S5: 128)", 128)
    temperature: float = _help("contrastive temperature τ (Tab. S9: 0.2)", 0.2)
    lambda_obj: float = _help("weight of the object-variance loss λ_obj (Tab. S8: 4)", 4.0)
    synonym_p: float = _help("probability of replacing a label text by a synonym (supp. B.2: 0.2)", 0.2)
    inter_normalizer: str = _help(
        "L_inter normaliser: 'label' = n(y_i)-1 as printed in Eq. 2; 'positives' = number of R-positives (ours)",
        "label",
    )
    use_relationship: bool = _help("False = R replaced by I (plain SupCon, Tab. 4 baseline)", True)

    def __post_init__(self) -> None:
        positive = [
            "image_size", "resize_size", "fusion_layers", "fusion_heads", "fusion_ffn", "head_hidden",
            "proj_layers", "proj_dim",
        ]  # fmt: skip
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise ValueError(f"IntraConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.resize_size < self.image_size:
            raise ValueError(
                f"IntraConfig.resize_size ({self.resize_size}) must be >= image_size ({self.image_size})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"IntraConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.temperature <= 0:
            raise ValueError(f"IntraConfig.temperature must be > 0, got {self.temperature}")
        if self.lambda_obj < 0:
            raise ValueError(f"IntraConfig.lambda_obj must be >= 0, got {self.lambda_obj}")
        if not 0.0 <= self.synonym_p <= 1.0:
            raise ValueError(f"IntraConfig.synonym_p must be in [0, 1], got {self.synonym_p}")
        if self.inter_normalizer not in _NORMALIZERS:
            raise ValueError(
                f"IntraConfig.inter_normalizer must be one of {_NORMALIZERS}, got {self.inter_normalizer!r}"
            )

    @classmethod
    def paper(cls, **overrides) -> IntraConfig:
        """Paper sizes (§4.1, supp. B.1): 336² input, 4-layer 4-head fusion, 3-layer projection to 128."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> IntraConfig:
        """CPU size for tests and the demo: 112² (8×8 tokens with patch 14), 1 fusion layer, 2 heads."""
        base = dict(
            image_size=112, resize_size=128, fusion_layers=1, fusion_heads=2, fusion_ffn=128, dropout=0.0,
            head_hidden=32, proj_layers=2, proj_dim=32,
        )  # fmt: skip
        base.update(overrides)
        return cls(**base)
