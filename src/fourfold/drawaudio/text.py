"""Text conditioning of the frozen base (spec §2.1, after Auffusion [A]).

Each entry of ``condition_config.json`` names a text encoder directory and a condition-adapter directory.
A prompt is tokenised *unpadded*, encoded, its ``last_hidden_state`` zero-padded/truncated to
``max_tokens``, passed through the adapter (Linear(dim -> cross_attention_dim) + LayerNorm), and the
encoders' outputs are concatenated along tokens. The unconditional embedding is all zeros (not the
encoding of ""), as the base UNet learned it.

Encoders: any transformers text model (CLIP/T5/CLAP) with its tokenizer in the same directory, or
:class:`WordEncoder` (tiny scale: whitespace words, a learned table and one transformer layer).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from torch.nn import functional as F

from fourfold.nn.modeling import CheckpointError, PretrainedModel, atomic_write_dir, load_safetensors_checked

__all__ = ["ConditionAdapter", "TextConditioner", "WordEncoder", "WordEncoderConfig"]


@dataclass
class WordEncoderConfig:
    """Tiny text encoder: lower-case words looked up in ``vocab`` (index 0 = unknown)."""

    vocab: list[str] = field(default_factory=lambda: ["<unk>"])
    dim: int = 32  # hidden size
    max_positions: int = 16  # longest prompt in words
    heads: int = 2
    layers: int = 1

    def __post_init__(self) -> None:
        if not self.vocab or self.vocab[0] != "<unk>":
            raise ValueError("WordEncoderConfig.vocab must start with '<unk>'")
        if self.dim % self.heads:
            raise ValueError(f"WordEncoderConfig.dim ({self.dim}) must be divisible by heads ({self.heads})")


class WordEncoder(PretrainedModel):
    """``ids`` (B, L) -> ``last_hidden_state`` (B, L, dim)."""

    config_class = WordEncoderConfig

    def __init__(self, config: WordEncoderConfig):
        super().__init__(config)
        self.embed = nn.Embedding(len(config.vocab), config.dim)
        self.pos = nn.Embedding(config.max_positions, config.dim)
        layer = nn.TransformerEncoderLayer(
            config.dim, config.heads, 2 * config.dim, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.index = {w: i for i, w in enumerate(config.vocab)}

    def tokenize(self, text: str) -> torch.Tensor:
        words = re.findall(r"[a-z0-9']+", text.lower())[: self.config.max_positions] or ["<unk>"]
        return torch.tensor([[self.index.get(w, 0) for w in words]])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.encoder(self.embed(ids) + self.pos(pos))


class ConditionAdapter(nn.Module):
    """Auffusion's condition adapter: Linear(condition_dim -> cross_attention_dim) + LayerNorm.

    Directory: ``config.json`` (``condition_dim``, ``cross_attention_dim``) with ``condition_adapter.safetensors``
    (ours) or Auffusion's ``condition_adapter.pt`` (read with ``weights_only=True``).
    """

    def __init__(self, condition_dim: int, cross_attention_dim: int):
        super().__init__()
        self.proj = nn.Linear(condition_dim, cross_attention_dim)
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))

    def save_pretrained(self, path: str | Path) -> None:
        def write(tmp: Path) -> None:
            cfg = {"condition_dim": self.proj.in_features, "cross_attention_dim": self.proj.out_features}
            (tmp / "config.json").write_text(json.dumps(cfg))
            save_file(
                {k: v.contiguous() for k, v in self.state_dict().items()},
                str(tmp / "condition_adapter.safetensors"),
            )

        atomic_write_dir(path, write)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ConditionAdapter:
        path = Path(path)
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise CheckpointError(f"condition adapter config missing: {cfg_path}")
        cfg = json.loads(cfg_path.read_text())
        try:
            adapter = cls(int(cfg["condition_dim"]), int(cfg["cross_attention_dim"]))
        except KeyError as err:
            raise CheckpointError(f"{cfg_path} lacks {err}") from err
        st, pt = path / "condition_adapter.safetensors", path / "condition_adapter.pt"
        if st.is_file():
            state = load_safetensors_checked(st)
        elif pt.is_file():
            state = torch.load(pt, map_location="cpu", weights_only=True)
        else:
            raise CheckpointError(f"condition adapter weights missing: {st} (or {pt.name})")
        missing, unexpected = adapter.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(f"{path}: adapter weights missing {missing}, unexpected {unexpected}")
        return adapter


class _HFText(nn.Module):
    """A transformers text encoder with its tokenizer, both from one local directory."""

    def __init__(self, path: Path, architecture: str):
        super().__init__()
        import transformers

        # the text tower Auffusion would pick for this architecture (CLIP / T5 encoder / CLAP text)
        if "T5" in architecture:
            model_cls = transformers.T5EncoderModel
        elif "Clap" in architecture:
            model_cls = transformers.ClapTextModelWithProjection
        elif architecture.startswith("CLIP"):
            model_cls = transformers.CLIPTextModel
        else:
            model_cls = transformers.AutoModel
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path))
        self.model = model_cls.from_pretrained(str(path), dtype=torch.float32)

    def tokenize(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, return_tensors="pt").input_ids

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids).last_hidden_state


def _load_text_encoder(path: Path) -> nn.Module:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"text encoder config missing: {cfg_path}")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("model_type") == "WordEncoder":
        return WordEncoder.from_pretrained(path)
    if "model_type" in cfg or "architectures" in cfg:
        return _HFText(path, (cfg.get("architectures") or [""])[0])
    raise CheckpointError(f"{cfg_path}: neither a transformers config nor a WordEncoder config")


class TextConditioner(nn.Module):
    """All text encoders + adapters of a base; ``(prompts) -> (B, sum of max_tokens, cross_attention_dim)``."""

    def __init__(self, encoders: list[nn.Module], adapters: list[ConditionAdapter], max_tokens: int):
        super().__init__()
        if len(encoders) != len(adapters) or not encoders:
            raise ValueError(f"need one adapter per text encoder, got {len(encoders)} and {len(adapters)}")
        self.encoders, self.adapters, self.max_tokens = (
            nn.ModuleList(encoders),
            nn.ModuleList(adapters),
            max_tokens,
        )

    @classmethod
    def from_base_dir(cls, root: Path, max_tokens: int) -> TextConditioner:
        cc = root / "condition_config.json"
        if not cc.is_file():
            raise CheckpointError(
                f"base directory lacks {cc} (list of text_encoder_name/condition_adapter_name)"
            )
        entries = json.loads(cc.read_text())
        encs, adps = [], []
        for i, e in enumerate(entries):
            if "text_encoder_name" not in e or "condition_adapter_name" not in e:
                raise CheckpointError(f"{cc}[{i}] needs text_encoder_name and condition_adapter_name")
            encs.append(_load_text_encoder(root / e["text_encoder_name"]))
            adps.append(ConditionAdapter.from_pretrained(root / e["condition_adapter_name"]))
        return cls(encs, adps, max_tokens)

    @property
    def num_tokens(self) -> int:
        return self.max_tokens * len(self.encoders)

    def forward(self, prompts: list[str]) -> torch.Tensor:
        device = next(self.parameters()).device
        rows = []
        for prompt in prompts:
            parts = []
            for enc, adapter in zip(self.encoders, self.adapters, strict=True):
                hidden = enc(enc.tokenize(prompt).to(device))[:, : self.max_tokens]
                hidden = F.pad(
                    hidden, (0, 0, 0, self.max_tokens - hidden.shape[1])
                )  # zero-pad, then adapt ([A])
                parts.append(adapter(hidden))
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)
