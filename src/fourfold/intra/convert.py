"""ALBEF checkpoint -> a plain ``BertModel`` directory holding ALBEF's unimodal text encoder.

INTRA §4.1 uses the text encoder of ALBEF fine-tuned on RefCOCO+. ALBEF's BERT has 12 layers; the first
``fusion_layer`` (6 in ALBEF's ``config_bert.json``) are text-only, the rest add cross-attention to the image.
We keep the embeddings and those first layers (keys ``text_encoder.`` or ``text_encoder.bert.``) and write a
``fusion_layer``-layer ``BertModel`` plus the tokenizer from ``vocab_dir``. Loading is ``weights_only=True``.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from fourfold.nn import CheckpointError, atomic_write_dir, check_state_dict

__all__ = ["convert_albef"]

_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")


def _load(checkpoint: Path) -> dict[str, torch.Tensor]:
    if not checkpoint.is_file():
        raise CheckpointError(f"ALBEF checkpoint not found: {checkpoint}")
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{checkpoint}: refused by torch.load(weights_only=True): {err}. Re-save just the weights, e.g. "
            "torch.save(torch.load(path, weights_only=False)['model'], 'albef_state_dict.pth') on a machine you trust."
        ) from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{checkpoint}: expected a state dict of tensors (optionally under 'model')")
    return state


def convert_albef(
    checkpoint: str | Path, vocab_dir: str | Path, out_dir: str | Path, fusion_layer: int = 6
) -> Path:
    """Write ``out_dir`` (config.json, model.safetensors, tokenizer files) and return it."""
    from transformers import BertConfig, BertModel, BertTokenizer

    checkpoint, vocab_dir = Path(checkpoint), Path(vocab_dir)
    state = _load(checkpoint)
    prefix = (
        "text_encoder.bert." if any(k.startswith("text_encoder.bert.") for k in state) else "text_encoder."
    )
    text = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if "embeddings.word_embeddings.weight" not in text:
        raise CheckpointError(
            f"{checkpoint}: no '{prefix}embeddings.word_embeddings.weight'; not an ALBEF checkpoint?"
        )
    kept = {}
    for k, v in text.items():
        m = _LAYER.match(k)
        if k.startswith("embeddings.") or (
            m and int(m.group(1)) < fusion_layer and "crossattention" not in k
        ):
            kept[k] = v
    layers = {int(m.group(1)) for k in kept if (m := _LAYER.match(k))}
    if layers != set(range(fusion_layer)):
        raise CheckpointError(
            f"{checkpoint}: expected text layers 0..{fusion_layer - 1}, found {sorted(layers)}"
        )
    vocab, hidden = kept["embeddings.word_embeddings.weight"].shape
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=fusion_layer,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=kept["encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=kept["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=kept["embeddings.token_type_embeddings.weight"].shape[0],
    )
    model = BertModel(cfg)
    # ALBEF has no pooler and INTRA reads the CLS hidden state; a zero pooler is saved only so that
    # AutoModel loads the directory without initialising missing weights at random.
    torch.nn.init.zeros_(model.pooler.dense.weight)
    torch.nn.init.zeros_(model.pooler.dense.bias)
    expected = {
        k: v
        for k, v in model.state_dict().items()
        if not k.endswith("position_ids") and not k.startswith("pooler.")
    }
    kept = {k: v for k, v in kept.items() if not k.endswith("position_ids")}
    check_state_dict(expected, kept, source=f"{checkpoint} ({prefix}*, first {fusion_layer} layers)")
    model.load_state_dict(kept, strict=False)
    vocab_file = vocab_dir / "vocab.txt"
    if not vocab_file.is_file():
        raise CheckpointError(
            f"vocabulary not found: {vocab_file} (pass the bert-base-uncased directory ALBEF used)"
        )
    tokenizer = BertTokenizer(vocab=str(vocab_file))
    if len(tokenizer) != vocab:
        raise CheckpointError(
            f"{vocab_file} has {len(tokenizer)} tokens but the checkpoint's embeddings have {vocab}"
        )

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic_write_dir(out_dir, write)
