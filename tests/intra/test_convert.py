"""convert-albef on a synthetic ALBEF-style state dict."""

import argparse

import pytest
import torch
from typer.testing import CliRunner

from fourfold.intra.cli import app
from fourfold.intra.encoders import load_text_encoder
from fourfold.nn import CheckpointError


def synthetic_albef(tmp_path, prefix="text_encoder."):
    from transformers import BertConfig, BertModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hold", "pour"]
    (tmp_path / "vocab").mkdir()
    (tmp_path / "vocab" / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                intermediate_size=64), add_pooling_layer=False)  # fmt: skip
    state = {prefix + k: v for k, v in bert.state_dict().items()}
    # ALBEF's fusion layers carry cross-attention; the image side has its own keys
    state[prefix + "encoder.layer.2.crossattention.self.query.weight"] = torch.zeros(32, 32)
    state["visual_encoder.patch_embed.proj.weight"] = torch.zeros(8, 3, 4, 4)
    torch.save({"model": state}, tmp_path / "albef.pth")
    return bert


@pytest.mark.parametrize("prefix", ["text_encoder.", "text_encoder.bert."])
def test_convert_keeps_text_layers(tmp_path, prefix):
    bert = synthetic_albef(tmp_path, prefix)
    r = CliRunner().invoke(app, ["convert-albef", "--checkpoint", str(tmp_path / "albef.pth"), "--vocab",
                                 str(tmp_path / "vocab"), "--out", str(tmp_path / "out"), "--fusion-layer", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    model, tok = load_text_encoder(tmp_path / "out")
    assert model.config.num_hidden_layers == 2
    src = bert.state_dict()
    for k, v in model.state_dict().items():
        if k.startswith("pooler."):
            assert not v.any()  # zero pooler (ALBEF has none; INTRA uses the CLS state)
        elif not k.endswith("position_ids"):
            assert torch.equal(v, src[k]), k
    assert tok("hold")["input_ids"] == [2, 5, 3]


def test_convert_refuses_pickled_objects(tmp_path):
    synthetic_albef(tmp_path)
    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, tmp_path / "bad.pth")
    from fourfold.intra.convert import convert_albef

    with pytest.raises(CheckpointError, match="weights_only"):
        convert_albef(tmp_path / "bad.pth", tmp_path / "vocab", tmp_path / "out")
    assert not (tmp_path / "out").exists()
