"""Tiny random encoders saved to a temp dir and loaded back through IntraModel's own loading path."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(1)

WORDS = [
    "hold",
    "grasp",
    "grip",
    "carry",
    "haul",
    "cut with",
    "slice with",
    "pour",
    "sip",
    "stick",
    "wash",
    "x",
]


@pytest.fixture(scope="session")
def encoder_dirs(tmp_path_factory):
    """(image_dir, text_dir): Dinov2 hidden 32 at 56² (4×4 tokens), BERT hidden 32 with a test-written vocab."""
    from transformers import BertConfig, BertModel, BertTokenizer, Dinov2Config, Dinov2Model

    root = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    image_dir, text_dir = root / "dinov2", root / "bert"
    Dinov2Model(
        Dinov2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            patch_size=14,
            image_size=56,
        )
    ).save_pretrained(image_dir)
    text_dir.mkdir()
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted({w for t in WORDS for w in t.split()})]
    (text_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab=str(text_dir / "vocab.txt")).save_pretrained(text_dir)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=24,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=48,
            initializer_range=0.5,  # BERT's 0.02 makes every random CLS vector nearly the same
        )
    ).save_pretrained(text_dir)
    return str(image_dir), str(text_dir)


@pytest.fixture
def tiny_model(encoder_dirs):
    from fourfold.intra.config import IntraConfig
    from fourfold.intra.model import IntraModel

    torch.manual_seed(0)
    cfg = IntraConfig.tiny(
        image_encoder=encoder_dirs[0], text_encoder=encoder_dirs[1], image_size=56, resize_size=64
    )
    return IntraModel(cfg)
