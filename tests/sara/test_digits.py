"""Procedural digits data for the SaRA demo (spec §5)."""

import pytest
import torch

from fourfold.data.digits import (
    DIGIT_TOKEN_OFFSET,
    STYLE,
    apply_style,
    digit_split,
    finetune_set,
    load_digit_images,
    source_set,
)


def test_images_split_and_prompts():
    x, y = load_digit_images(16)
    assert x.shape == (1797, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    train, test = digit_split(len(y))
    assert len(train) == 1438 and len(test) == 359 and not set(train.tolist()) & set(test.tolist())
    s = source_set("test", 8)
    assert s.images.shape == (359, 1, 8, 8) and bool((s.tokens[:, 1] == s.labels + DIGIT_TOKEN_OFFSET).all())
    ft = finetune_set("outline", "train", 16)
    assert (
        len(ft) == 200
        and set(ft.labels.tolist()) == {0, 1, 2, 3, 4}
        and bool((ft.tokens[:, 0] == STYLE).all())
    )


def test_styles_are_deterministic_transforms():
    x = -torch.ones(1, 1, 5, 5)
    x[0, 0, 1:4, 1:4] = 1.0  # a 3×3 ink square
    outline = apply_style(x, "outline")
    assert outline[0, 0, 2, 2] == -1.0  # interior: dilation = erosion → no ink
    assert outline[0, 0, 1, 1] == 1.0 and outline[0, 0, 0, 0] == 1.0  # edge and halo
    bold = apply_style(x, "bold")
    assert bool((bold == 1.0).all())
    assert torch.equal(apply_style(x, "inverse"), -x)
    with pytest.raises(ValueError, match="style"):
        apply_style(x, "italic")


def test_caption_folder_reader(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from fourfold.sara.data import CaptionedImages

    Image.fromarray(np.zeros((10, 14, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((12, 12, 3), 255, np.uint8)).save(tmp_path / "b.jpg")
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "red car"}) + "\n")
    (tmp_path / "b.txt").write_text("blue sky\n")
    ds = CaptionedImages(tmp_path, 8, prefix="<x> style, ")
    assert [ds[i]["text"] for i in range(2)] == ["<x> style, red car", "<x> style, blue sky"]
    assert ds[0]["pixel_values"].shape == (3, 8, 8) and float(ds[1]["pixel_values"].min()) == 1.0
    assert CaptionedImages(tmp_path, 8, instance_prompt="a sks dog")[0]["text"] == "a sks dog"
    (tmp_path / "c.png").write_bytes(b"not an image")
    (tmp_path / "c.txt").write_text("broken")
    with pytest.raises(ValueError, match=r"c\.png: cannot read image"):
        CaptionedImages(tmp_path, 8)


def test_faint_style_and_pretraining_set_with_known_styles():
    from fourfold.data.digits import PLAIN, TOKENS, pretrain_set, style_token

    x = -torch.ones(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    faint = apply_style(x, "faint")
    assert faint[0, 0, 1, 1] == 0.0 and faint[0, 0, 0, 0] == -1.0  # ink at half intensity, background kept
    s = source_set("train", 8)
    p = pretrain_set(8, ("bold", "inverse"))
    assert len(p) == 3 * len(s)
    first = p.tokens[:, 0]
    assert int((first == PLAIN).sum()) == len(s) and int((first == style_token("bold")).sum()) == len(s)
    assert not bool((first == STYLE).any())  # the fine-tune word is new to the base
    inv = p.images[first == style_token("inverse")]
    assert torch.equal(inv, -s.images)
    assert TOKENS[:2] == ("plain", "style") and TOKENS[2 + DIGIT_TOKEN_OFFSET - 2] == "0"
    with pytest.raises(ValueError, match="style"):
        style_token("italic")
