"""``IntraModel``: frozen DINOv2 + frozen BERT, trainable text adapter, fusion transformer, map head and
projection (INTRA §3.1, supp. B.1).

Axes: B batch, N = h·w image tokens, d image width, d_t text width, P projection width.

    pixels (B,3,H,W) --DINOv2 (frozen)--> F (B,N,d)
    text   --BERT CLS (frozen)--> t (B,d_t) --adapter--> (B,1,d)
    [t ; F] --fusion (4 layers, 4 heads)--> image tokens --(B,d,h,w)--> conv head --> A (B,h,w)
    M = minmax(A);  f = (1/N) Σ F·M  (Eq. 1);  z = normalize(MLP(f)) (B,P)

Only adapter, fusion, head and projection train; the checkpoint holds those alone.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from fourfold.intra.config import IntraConfig
from fourfold.intra.encoders import encoder_fingerprint, load_image_encoder, load_text_encoder
from fourfold.intra.relations import RelationshipMap, SynonymTable
from fourfold.nn import PretrainedModel

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "IntraModel", "IntraOutput", "minmax_per_sample"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # DINOv2's preprocessing
IMAGENET_STD = (0.229, 0.224, 0.225)
MINMAX_EPS = 1e-6  # §3.1: per-sample min-max of the map
RELATIONSHIP_FILE = "relationship.csv"
SYNONYMS_FILE = "synonyms.json"
LABELS_FILE = "labels.json"


def minmax_per_sample(a: torch.Tensor) -> torch.Tensor:
    """(B, h, w) -> (B, h, w) in [0, 1]: (a - min) / (max - min + 1e-6) per sample."""
    flat = a.flatten(1)
    lo = flat.min(dim=1).values[:, None, None]
    hi = flat.max(dim=1).values[:, None, None]
    return (a - lo) / (hi - lo + MINMAX_EPS)


@dataclass
class IntraOutput:
    """heatmap M (B,h,w) in [0,1]; logits A (B,h,w); pooled f (B,d) (Eq. 1); z (B,P) L2-normalised."""

    heatmap: torch.Tensor
    logits: torch.Tensor
    pooled: torch.Tensor
    z: torch.Tensor


class IntraModel(PretrainedModel):
    """INTRA's grounding network. Build with ``IntraModel(IntraConfig(image_encoder=DIR, text_encoder=DIR))``.

    ``relationship``, ``synonyms`` and ``labels`` are optional attributes the trainer sets; they are saved
    next to the weights so a run directory is self-contained.
    """

    config_class = IntraConfig
    _non_persistent_prefixes: ClassVar[tuple[str, ...]] = ("image_encoder.", "text_encoder.")

    def __init__(self, config: IntraConfig) -> None:
        super().__init__(config)
        self.image_encoder = load_image_encoder(config.image_encoder)
        self.text_encoder, self.tokenizer = load_text_encoder(config.text_encoder)
        for name, path in (("image_encoder", config.image_encoder), ("text_encoder", config.text_encoder)):
            found = encoder_fingerprint(path)
            saved = getattr(config, f"{name}_fingerprint")
            if saved and saved != found:
                warnings.warn(
                    f"{name} at {path} differs from the one this model was trained with "
                    f"(fingerprint {found} vs {saved}); heatmaps may be meaningless",
                    UserWarning,
                    stacklevel=2,
                )
            setattr(config, f"{name}_fingerprint", found)
        self.patch_size = int(self.image_encoder.config.patch_size)
        self.num_prefix_tokens = 1 + int(getattr(self.image_encoder.config, "num_register_tokens", 0) or 0)
        d = int(self.image_encoder.config.hidden_size)
        d_t = int(self.text_encoder.config.hidden_size)
        if d % config.fusion_heads:
            raise ValueError(
                f"IntraConfig.fusion_heads ({config.fusion_heads}) must divide the image width {d}"
            )
        self.dim = d
        # trainable parts (§3.1)
        self.text_adapter = nn.Linear(d_t, d)
        layer = nn.TransformerEncoderLayer(
            d,
            config.fusion_heads,
            config.fusion_ffn,
            config.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=config.fusion_norm_first,
        )
        final_norm = nn.LayerNorm(d) if config.fusion_norm_first else None  # post-norm layers end normalised
        self.fusion = nn.TransformerEncoder(
            layer, config.fusion_layers, norm=final_norm, enable_nested_tensor=False
        )
        self.head = nn.Sequential(
            nn.Conv2d(d, config.head_hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(config.head_hidden, 1, 1)
        )
        mlp: list[nn.Module] = []
        for _ in range(config.proj_layers - 1):
            mlp += [nn.Linear(d, d), nn.ReLU()]
        self.projection = nn.Sequential(*mlp, nn.Linear(d, config.proj_dim))
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._text_cache: dict[str, torch.Tensor] = {}
        self.relationship: RelationshipMap | None = None
        self.synonyms: SynonymTable | None = None
        self.labels: list[str] | None = None

    # frozen parts

    def train(self, mode: bool = True) -> IntraModel:
        super().train(mode)
        self.image_encoder.eval()  # frozen encoders never switch to train mode (no dropout, fixed features)
        self.text_encoder.eval()
        return self

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {
            "text_adapter": self.text_adapter,
            "fusion": self.fusion,
            "head": self.head,
            "projection": self.projection,
        }

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.trainable_modules().values() for p in m.parameters()]

    @torch.no_grad()
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B,3,H,W) in [0,1] -> frozen features F (B, h·w, d) without CLS/register tokens."""
        pixels = (images.to(self.pixel_mean.dtype) - self.pixel_mean) / self.pixel_std
        if self.config.image_layer == -1:
            hidden = self.image_encoder(pixel_values=pixels).last_hidden_state
        else:
            hidden = self.image_encoder(pixel_values=pixels, output_hidden_states=True).hidden_states[
                self.config.image_layer
            ]
        return hidden[:, self.num_prefix_tokens :]

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> frozen CLS vectors (B, d_t); each distinct string is encoded once and cached."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        if missing:
            tok = self.tokenizer(missing, padding=True, return_tensors="pt")
            tok = {k: v.to(self.text_adapter.weight.device) for k, v in tok.items()}
            cls = self.text_encoder(**tok).last_hidden_state[:, 0]
            for t, v in zip(missing, cls, strict=True):
                self._text_cache[t] = v
        return torch.stack([self._text_cache[t] for t in texts])

    def _apply(self, fn, recurse=True):  # moving the model moves (drops) the cached text vectors
        self._text_cache = {}
        return super()._apply(fn, recurse)

    # trainable parts

    def forward(
        self,
        images: torch.Tensor | None = None,
        *,
        image_features: torch.Tensor | None = None,
        grid: tuple[int, int] | None = None,
        texts: list[str] | None = None,
        text_embeds: torch.Tensor | None = None,
    ) -> IntraOutput:
        """Ground one text per image.

        Args:
            images: (B,3,H,W) in [0,1]; or ``image_features`` (B,h·w,d) precomputed by :meth:`encode_image`
                with ``grid=(h, w)`` (square grids are inferred).
            texts: B strings; or ``text_embeds`` (B, d_t) from :meth:`encode_text`.
        """
        if image_features is None:
            if images is None:
                raise ValueError("IntraModel.forward needs images or image_features")
            h, w = images.shape[-2] // self.patch_size, images.shape[-1] // self.patch_size
            image_features = self.encode_image(images)
        else:
            n = image_features.shape[1]
            h, w = grid if grid is not None else (round(n**0.5),) * 2
            if h * w != n:
                raise ValueError(f"image_features has {n} tokens, not a {h}x{w} grid; pass grid=(h, w)")
        if text_embeds is None:
            if texts is None:
                raise ValueError("IntraModel.forward needs texts or text_embeds")
            text_embeds = self.encode_text(list(texts))
        if text_embeds.shape[0] != image_features.shape[0]:
            raise ValueError(f"{text_embeds.shape[0]} texts for {image_features.shape[0]} images")
        feats = image_features.detach()  # F stays frozen; gradients reach the map only through M
        tokens = torch.cat([self.text_adapter(text_embeds)[:, None], feats], dim=1)  # (B, 1+N, d)
        fused = (self.fusion(tokens) if self.training else self._fusion_eval(tokens))[:, 1:]
        logits = self.head(rearrange(fused, "b (h w) d -> b d h w", h=h, w=w))[:, 0]  # (B, h, w)
        heatmap = minmax_per_sample(logits)
        # Eq. 1: weights the frozen encoder features by M and divides by h·w (not by ΣM).
        pooled = (feats * rearrange(heatmap, "b h w -> b (h w) 1")).sum(1) / (h * w)
        z = F.normalize(self.projection(pooled), dim=-1)
        return IntraOutput(heatmap=heatmap, logits=logits, pooled=pooled, z=z)

    def _fusion_eval(self, x: torch.Tensor) -> torch.Tensor:
        """``self.fusion(x)`` for inference (B, 1+N, d) -> (B, 1+N, d), computed with the same weights through
        ``F.scaled_dot_product_attention`` (fused attention kernel; the nn.TransformerEncoder fast path uses
        separate bmm + softmax, about 1.5x slower at 577 tokens on CPU). Equal to the module output (tested)."""
        for layer in self.fusion.layers:
            attn = layer.self_attn
            heads = attn.num_heads

            def self_attention(y: torch.Tensor, attn=attn, heads=heads) -> torch.Tensor:
                q, k, v = F.linear(y, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
                q, k, v = (rearrange(t, "b n (h e) -> b h n e", h=heads) for t in (q, k, v))
                out = rearrange(F.scaled_dot_product_attention(q, k, v), "b h n e -> b n (h e)")
                return attn.out_proj(out)

            def feed_forward(y: torch.Tensor, layer=layer) -> torch.Tensor:
                return layer.linear2(layer.activation(layer.linear1(y)))

            if layer.norm_first:
                x = x + self_attention(layer.norm1(x))
                x = x + feed_forward(layer.norm2(x))
            else:
                x = layer.norm1(x + self_attention(x))
                x = layer.norm2(x + feed_forward(x))
        return self.fusion.norm(x) if self.fusion.norm is not None else x

    # saving

    def _extra_files(self) -> dict[str, str]:
        """The relationship map, synonym table and label list, when set, saved beside the trainable weights."""
        files = {}
        if self.relationship is not None:
            files[RELATIONSHIP_FILE] = self.relationship.to_csv_text()
        if self.synonyms is not None:
            files[SYNONYMS_FILE] = json.dumps({k: list(v) for k, v in self.synonyms.table.items()})
        if self.labels is not None:
            files[LABELS_FILE] = json.dumps(list(self.labels))
        return files

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **kwargs: Any) -> IntraModel:
        """Load a run; ``image_encoder=DIR`` / ``text_encoder=DIR`` point at the encoders on this machine."""
        model = super().from_pretrained(directory, **kwargs)
        directory = Path(directory)
        if (directory / LABELS_FILE).is_file():
            model.labels = json.loads((directory / LABELS_FILE).read_text())
        if (directory / RELATIONSHIP_FILE).is_file():
            model.relationship = RelationshipMap.load(directory / RELATIONSHIP_FILE, model.labels)
        if (directory / SYNONYMS_FILE).is_file():
            model.synonyms = SynonymTable.load(directory / SYNONYMS_FILE)
        return model.eval()
