"""The two frozen encoders INTRA builds on, loaded from local directories, and tiny random stand-ins.

INTRA §3.1 / supp. B.1: image encoder DINOv2 ViT-B/14 (transformers ``Dinov2Model``); text encoder the
ALBEF text BERT (any BERT-style ``AutoModel`` + ``AutoTokenizer`` directory works). Nothing is downloaded:
directories are read with ``local_files_only=True`` and a missing directory or file is an error naming it.

The tiny builders make encoders for tests and the CPU demo: a random ``Dinov2Model``, and a tiny BERT that is
random or, given word clusters (a label and its synonyms), briefly pre-trained in-process so that texts of one
cluster encode nearby (a stand-in for the semantics of a real pretrained text encoder, not a language model).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from fourfold.nn import CheckpointError

__all__ = [
    "SPECIAL_TOKENS",
    "build_tiny_image_encoder",
    "build_tiny_text_encoder",
    "encoder_fingerprint",
    "load_image_encoder",
    "load_text_encoder",
]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def _require(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not str(path) or not path.is_dir():
        raise CheckpointError(
            f"{what} directory not found: {path!s} (pass a local transformers model directory)"
        )
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{what} directory {path} has no config.json")
    return path


def encoder_fingerprint(path: str | os.PathLike) -> str:
    """Short sha256 of the directory's ``config.json`` and weight file sizes, to notice a swapped encoder."""
    path = Path(path)
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def load_image_encoder(path: str | os.PathLike) -> torch.nn.Module:
    """``Dinov2Model`` (or ``Dinov2WithRegistersModel``) from a local directory, float32, frozen, eval mode."""
    from transformers import AutoConfig, Dinov2Model

    path = _require(path, "image encoder")
    try:
        cfg = AutoConfig.from_pretrained(path, local_files_only=True)
        if cfg.model_type == "dinov2_with_registers":
            from transformers import Dinov2WithRegistersModel as cls
        elif cfg.model_type == "dinov2":
            cls = Dinov2Model
        else:
            raise CheckpointError(
                f"image encoder {path}: model_type {cfg.model_type!r} is not a DINOv2 model"
            )
        model = cls.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load image encoder from {path}: {err}") from err
    return model.eval().requires_grad_(False)


def load_text_encoder(path: str | os.PathLike) -> tuple[torch.nn.Module, object]:
    """BERT-style ``AutoModel`` and its ``AutoTokenizer`` from one local directory, frozen, eval mode."""
    from transformers import AutoModel, AutoTokenizer

    path = _require(path, "text encoder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot load text encoder/tokenizer from {path}: {err}") from err
    return model.eval().requires_grad_(False), tokenizer


def build_tiny_image_encoder(
    out_dir: str | os.PathLike,
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    patch: int = 14,
    image_size: int = 112,
    seed: int = 0,
) -> Path:
    """Save a random ``Dinov2Model`` to ``out_dir`` (IntraConfig.tiny(): hidden 64, 2 layers, patch 14)."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    cfg = Dinov2Config(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        patch_size=patch,
        image_size=image_size,
    )
    model = Dinov2Model(cfg)
    model.save_pretrained(out_dir)
    return Path(out_dir)


def _pretrain_on_clusters(model, tokenizer, clusters, steps: int, seed: int, tau: float = 0.1) -> None:
    import torch.nn.functional as F

    texts = [t for group in clusters for t in group]
    ids = torch.tensor([c for c, group in enumerate(clusters) for _ in group])
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    eye = torch.eye(len(texts), dtype=torch.bool)
    positive = (ids[:, None] == ids[None, :]) & ~eye
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        cls = F.normalize(model(**batch).last_hidden_state[:, 0], dim=-1)
        sim = (cls @ cls.T / tau).masked_fill(eye, float("-inf"))
        logp = (sim - sim.logsumexp(1, keepdim=True)).masked_fill(eye, 0.0)
        loss = (-(logp * positive).sum(1) / positive.sum(1).clamp(min=1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def build_tiny_text_encoder(
    out_dir: str | os.PathLike,
    words: Sequence[str],
    *,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    clusters: Sequence[Sequence[str]] = (),
    pretrain_steps: int = 300,
    seed: int = 0,
) -> Path:
    """Save a tiny ``BertModel`` + WordPiece ``BertTokenizer`` whose vocabulary is ``words``.

    Random BERT weights give a CLS vector that barely depends on the words (cosine ≈ 1 between any two
    one-word texts), so when ``clusters`` (groups of texts, e.g. a label with its synonyms) are given the
    encoder is pre-trained in-process for ``pretrain_steps`` (a few seconds) with a supervised contrastive
    loss on the CLS vectors: texts of one cluster end up close, other clusters apart. This stands in for
    the word semantics a real pretrained text encoder brings; it is not a language model.
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab = list(SPECIAL_TOKENS)
    for text in words:
        for w in text.lower().split():
            if w not in vocab:
                vocab.append(w)
    vocab_file = out_dir / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * hidden,
        max_position_embeddings=64,
    )
    model = BertModel(cfg)
    if clusters and pretrain_steps:
        _pretrain_on_clusters(model, tokenizer, clusters, pretrain_steps, seed)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
