"""Acceptance test 10 (spec §8): CLI finetune (with exact resume), generate, merge, inspect on a tiny
Stable Diffusion directory the test builds and saves (``fourfold.sara.tiny.build_tiny_sd_pipeline``: tiny
CLIP text encoder, character tokenizer; no download)."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from fourfold import sara
from fourfold.sara.cli import app
from fourfold.sara.tiny import TINY_SD_MAX_LEN as MAX_LEN
from fourfold.sara.tiny import (
    build_style_folder,
    build_tiny_sd3_pipeline,
    build_tiny_sd_pipeline,
    build_tiny_sdxl_pipeline,
    tiny_clip_tokenizer,
)


@pytest.fixture(scope="module")
def sd_dirs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd")
    return build_tiny_sd_pipeline(tmp / "model"), build_style_folder(tmp / "style", n=4)


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

    tok, vocab_size = tiny_clip_tokenizer()
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


def test_tiny_builders_are_seeded_and_load_back(tmp_path):
    from diffusers import StableDiffusionPipeline

    a = build_tiny_sd_pipeline(tmp_path / "a", seed=0)
    b = build_tiny_sd_pipeline(tmp_path / "b", seed=0)
    c = build_tiny_sd_pipeline(tmp_path / "c", seed=1)
    unet_file = "unet/diffusion_pytorch_model.safetensors"
    assert (a / unet_file).read_bytes() == (b / unet_file).read_bytes() != (c / unet_file).read_bytes()
    pipe = StableDiffusionPipeline.from_pretrained(a, safety_checker=None, requires_safety_checker=False)
    ids = pipe.tokenizer("ink style, a cat", padding="max_length", max_length=MAX_LEN).input_ids
    assert len(ids) == MAX_LEN and ids[0] == pipe.tokenizer.bos_token_id
    style = build_style_folder(tmp_path / "s", n=3, caption="ink")
    lines = [json.loads(x) for x in (style / "metadata.jsonl").read_text().splitlines()]
    assert [x["text"] for x in lines] == ["ink 0", "ink 1", "ink 2"]
    assert all(Image.open(style / x["file_name"]).size == (32, 32) for x in lines)


def test_dreambooth_instance_prompt_and_prior_preservation(sd_dirs, tmp_path):
    model, _ = sd_dirs
    # instance images without captions: only --instance-prompt names them
    inst = tmp_path / "dog"
    inst.mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(inst / f"d{i}.png")
    cls = build_style_folder(tmp_path / "class", n=3)
    out = tmp_path / "db"
    args = ["finetune", "--model", str(model), "--data", str(inst), "--out", str(out), "--fraction", "0.05",
            "--steps", "2", "--batch-size", "2", "--no-progress", "--instance-prompt", "a sks dog",
            "--class-data", str(cls), "--class-prompt", "a dog", "--prior-loss-weight", "0.5"]  # fmt: skip
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert "prior_loss" in log[-1] and (out / "adapter" / "adapter_model.safetensors").is_file()
    from fourfold.sara.data import CaptionedImages, WithPriorImages

    ds = WithPriorImages(CaptionedImages(inst, 8, instance_prompt="a sks dog"),
                         CaptionedImages(cls, 8, instance_prompt="a dog"))  # fmt: skip
    assert [ds[i]["text"] for i in range(2)] == ["a sks dog"] * 2 and ds[1]["class_text"] == "a dog"
    with pytest.raises(ValueError, match="class_data_dir needs"):
        from fourfold.sara.train import SaraTrainConfig

        SaraTrainConfig(class_data_dir=str(cls), instance_prompt="a sks dog")


@pytest.mark.parametrize("builder", [build_tiny_sdxl_pipeline, build_tiny_sd3_pipeline], ids=["sdxl", "sd3"])
def test_finetune_generate_merge_sdxl_and_sd3(builder, sd_dirs, tmp_path):
    from fourfold.sara.pipelines import denoiser_of, load_pipeline

    _, data = sd_dirs
    model = builder(tmp_path / "model")
    run = tmp_path / "run"
    res = _finetune(model, data, run, "--steps", "2", "--checkpoint-every", "2")
    assert json.loads(res.stdout[res.stdout.index("{") :])["kind"] in ("sdxl", "sd3")
    base = denoiser_of(load_pipeline(model)[0])
    p0 = {k: v.clone() for k, v in base.state_dict().items()}
    sara.load(base, run / "adapter").merge_and_unload()
    assert sum(int((base.state_dict()[k] != p0[k]).sum()) for k in p0) > 0
    (tmp_path / "p.txt").write_text("a cat\n")
    res = CliRunner().invoke(app, ["generate", "--model", str(model), "--prompts", str(tmp_path / "p.txt"),
                                   "--out", str(tmp_path / "gen"), "--steps", "2", "--adapter", str(run / "adapter")],
                             catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0 and (tmp_path / "gen" / "0000.png").is_file(), res.output
    res = CliRunner().invoke(app, ["merge", "--model", str(model), "--adapter", str(run / "adapter"), "--out",
                                   str(tmp_path / "merged")], catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 0, res.output
    merged = denoiser_of(load_pipeline(tmp_path / "merged")[0])
    for k, v in base.state_dict().items():
        assert torch.equal(merged.state_dict()[k], v), k


def test_unsupported_model_directories_are_named(tmp_path):
    from fourfold.sara.pipelines import pipeline_kind

    with pytest.raises(FileNotFoundError, match=r"model_index\.json"):
        pipeline_kind(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ValueError, match="KandinskyPipeline"):
        pipeline_kind(tmp_path)
