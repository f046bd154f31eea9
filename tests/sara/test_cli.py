"""Acceptance test 10 (spec §8): CLI finetune (with exact resume), generate, merge, inspect on a tiny
Stable Diffusion directory the test builds and saves (tiny CLIP text encoder and a tokenizer from a
vocabulary written here; no download)."""

import json
import shutil
import string

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from fourfold import sara
from fourfold.sara.cli import app

MAX_LEN = 24


def _tokenizer(tmp):
    from transformers import CLIPTokenizer

    chars = string.ascii_lowercase + string.digits + ",.<>!?'-"
    vocab = {}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tmp / "vocab.json").write_text(json.dumps(vocab))
    (tmp / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(tmp / "vocab.json"), str(tmp / "merges.txt"), model_max_length=MAX_LEN), len(
        vocab
    )


def build_tiny_sd(root):
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok, vocab_size = _tokenizer(root.parent)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[8, 16], latent_channels=4, norm_num_groups=8,
        sample_size=16,
    )  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=MAX_LEN, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    ))  # fmt: skip
    sched = DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
    )
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)  # fmt: skip
    pipe.save_pretrained(root)
    return root


def build_style_folder(root, n=4):
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        arr = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img{i}.png")
        lines.append(json.dumps({"file_name": f"img{i}.png", "text": f"a picture {i}"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def sd_dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd")
    return build_tiny_sd(tmp / "model"), build_style_folder(tmp / "style")


def _finetune(model, data, out, *extra):
    args = ["finetune", "--model", str(model), "--data", str(data), "--out", str(out), "--fraction", "0.05",
            "--rank-min-dim", "8", "--lambda-rank", "0.01", "--steps", "6", "--batch-size", "2",
            "--checkpoint-every", "3", "--prefix", "<ink> style, ", "--no-progress", *extra]  # fmt: skip
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def test_finetune_resume_generate_merge_inspect(sd_dirs, tmp_path):
    model, data = sd_dirs
    run_a = tmp_path / "a"
    _finetune(model, data, run_a)
    assert (run_a / "adapter" / "adapter_config.json").is_file()
    log = [json.loads(x) for x in (run_a / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 6 and "rank_loss" in log[-1]
    # exact resume: drop the final checkpoint and the adapter, resume from step 3
    run_b = tmp_path / "b"
    shutil.copytree(run_a, run_b)
    shutil.rmtree(run_b / "adapter")
    for ck in run_b.glob("checkpoint-*"):
        if int(ck.name.split("-")[1]) == 6:
            shutil.rmtree(ck)
    _finetune(model, data, run_b, "--resume")
    wa = load_file(str(run_a / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(run_b / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    # the adapter changed the UNet and only on its support
    from diffusers import UNet2DConditionModel

    base = UNet2DConditionModel.from_pretrained(model / "unet")
    p0 = {k: v.clone() for k, v in base.state_dict().items()}
    sara.load(base, run_a / "adapter").merge_and_unload()
    changed = sum(int((base.state_dict()[k] != p0[k]).sum()) for k in p0)
    assert changed > 0
    # generate with the adapter (also scaled) and with none
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    for adapter in ([], ["--adapter", str(run_a / "adapter")], ["--adapter", f"{run_a / 'adapter'}:0.5"]):
        out = tmp_path / f"gen{len(adapter)}{adapter[-1][-3:] if adapter else ''}"
        res = CliRunner().invoke(app, ["generate", "--model", str(model), "--prompts", str(prompts), "--out", str(out),
                                       "--steps", "2", "--prefix", "<ink> style, ", *adapter], catch_exceptions=False)  # fmt: skip
        assert res.exit_code == 0, res.output
        assert sorted(p.name for p in out.iterdir()) == ["0000.png", "0001.png"]
    # merge writes a full diffusers dir whose UNet equals base + patch
    merged = tmp_path / "merged"
    res = CliRunner().invoke(
        app, ["merge", "--model", str(model), "--adapter", str(run_a / "adapter"), "--out", str(merged)]
    )
    assert res.exit_code == 0, res.output
    again = UNet2DConditionModel.from_pretrained(merged / "unet")
    for k, v in base.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k
    res = CliRunner().invoke(app, ["inspect", str(run_a / "adapter"), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["support"] > 0


def test_finetune_rejects_bad_input(sd_dirs, tmp_path):
    model, data = sd_dirs
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(bad / "x.png")
    with pytest.raises(ValueError, match=r"x\.png: no caption"):
        CliRunner().invoke(app, ["finetune", "--model", str(model), "--data", str(bad), "--out", str(tmp_path / "o"),
                                 "--steps", "1", "--no-progress"], catch_exceptions=False)  # fmt: skip
    res = CliRunner().invoke(app, ["finetune", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "o"),
                                   "--threshold", "1e-3", "--fraction", "0.1"])  # fmt: skip
    assert res.exit_code != 0


def test_eval_clip_score_fd_and_vlhi(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tok, vocab_size = _tokenizer(tmp_path)
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config={"vocab_size": vocab_size, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": MAX_LEN, "bos_token_id": vocab_size - 2,
                     "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 16, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    CLIPModel(cfg).save_pretrained(tmp_path / "clip")
    proc = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}),
                         tokenizer=tok)  # fmt: skip
    proc.save_pretrained(tmp_path / "clip")
    imgs = build_style_folder(tmp_path / "imgs", n=2)
    (tmp_path / "p.txt").write_text("a cat\na dog\n")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(50, 3)))
    np.save(tmp_path / "b.npy", rng.normal(size=(50, 3)) + 1.0)
    (tmp_path / "rows.json").write_text(
        json.dumps({"x": {"fid": 1.0, "clip": 0.0}, "y": {"fid": 2.0, "clip": 1.0}})
    )
    res = CliRunner().invoke(app, ["eval", "--images", str(imgs), "--prompts", str(tmp_path / "p.txt"), "--clip",
                                   str(tmp_path / "clip"), "--features", str(tmp_path / "a.npy"), "--ref-features",
                                   str(tmp_path / "b.npy"), "--rows", str(tmp_path / "rows.json")], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout[res.stdout.index("{\n") :])
    assert -100.0 <= out["clip_score"] <= 100.0
    assert out["fd"] > 1.0 and out["vlhi"] == {"x": 1.0, "y": 1.0}
