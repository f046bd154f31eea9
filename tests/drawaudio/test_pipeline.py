"""Pipeline end to end on tiny components, guidance equivalences, drawn inputs, errors and the CLI."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from typer.testing import CliRunner

from fourfold.audio.io import AudioError, VideoError, read_video
from fourfold.audio.loudness import LoudnessError
from fourfold.data.bouncing import make_clip, write_clip
from fourfold.diffusion import make_scheduler
from fourfold.drawaudio.base import load_base
from fourfold.drawaudio.cli import app
from fourfold.drawaudio.config import DrawAudioConfig
from fourfold.drawaudio.masks import ColorDetector, KeyphraseExtractor, MaskError, MaskInput
from fourfold.drawaudio.model import prepare_video
from fourfold.drawaudio.pipeline import DrawAudioPipeline, Stage
from fourfold.drawaudio.tlm import curve_from_audio
from fourfold.nn.modeling import CheckpointError


@pytest.fixture(scope="module")
def clip_mp4(tmp_path_factory):
    clip = make_clip(4)
    return clip, write_clip(clip, tmp_path_factory.mktemp("clips"), "c4")


def _conds(pipe, clip, use_video=True, masks=None):
    x, m, times = prepare_video(clip.video, clip.fps, pipe.cfg, masks)
    return pipe.encode_conditions(
        ["a red ball bounces"], None, x[None], None if m is None else m[None], times, None, use_video
    )


def test_pipeline_end_to_end_and_mux(make_model, base_dir, clip_mp4, tmp_path):
    clip, paths = clip_mp4
    pipe = DrawAudioPipeline(make_model(base_dir))
    out = pipe(paths["mp4"], "a red ball bounces", mask=MaskInput.box([0, 0, 0.5, 1]), loudness=[0.1, 0.9, 0.3],
               num_inference_steps=3, num_samples=2)  # fmt: skip
    assert out.audio.shape == (2, pipe.cfg.num_samples) and np.isfinite(out.audio).all()
    assert out.loudness_used.shape == (pipe.cfg.loudness_frames,) and out.mask_used.shape[0] == 32
    written = out.save(tmp_path / "o.wav", mux_video=tmp_path / "o.mp4")
    frames, _, audio, sr = read_video(written["mp4"])
    assert len(frames) == len(clip.video) and audio is not None and sr == 16000
    assert abs(len(audio) - out.audio.shape[1]) < 2048  # cut to the video length
    again = pipe(paths["mp4"], "a red ball bounces", mask=MaskInput.box([0, 0, 0.5, 1]), loudness=[0.1, 0.9, 0.3],
                 num_inference_steps=3, num_samples=2)  # fmt: skip
    assert np.array_equal(again.audio, out.audio)  # seeded


def test_long_video_windows_and_compose(make_model, base_dir, clip_mp4):
    clip, paths = clip_mp4
    pipe = DrawAudioPipeline(make_model(base_dir))
    long = np.concatenate([clip.video, clip.video])  # 5.12 s
    out = pipe(long, "a red ball bounces", video_fps=clip.fps, num_inference_steps=2)
    assert out.audio.shape == (1, round(len(long) / clip.fps * 16000))
    mix = pipe.compose(paths["mp4"], [Stage("a red ball bounces", mask=MaskInput.box([0, 0, 0.5, 1])),
                                      Stage("a blue square bounces", gain_db=-6.0)], num_inference_steps=2)  # fmt: skip
    assert mix.stems.shape == (2, 1, pipe.cfg.num_samples)
    assert np.allclose(mix.stems.sum(0), mix.audio, atol=1e-6)


@torch.no_grad()
def test_no_video_no_loudness_reproduces_plain_diffusers_loop(make_model, base_dir, clip_mp4):
    clip, _ = clip_mp4
    pipe = DrawAudioPipeline(make_model(base_dir))
    text, empty, tokens, key_mask, loud = _conds(pipe, clip, use_video=False)
    ours = pipe.denoise(
        text, empty, tokens, key_mask, loud, "joint", 0.0, 3.0, 6, torch.Generator().manual_seed(7)
    )

    unet = UNet2DConditionModel.from_pretrained(str(base_dir / "unet")).eval()
    unet.set_attn_processor(AttnProcessor2_0())
    sched = make_scheduler("ddim", source=load_base(base_dir, pipe.cfg).scheduler)
    sched.set_timesteps(6)
    latents = torch.randn((1, *pipe.cfg.latent_shape), generator=torch.Generator().manual_seed(7))
    latents = latents * sched.init_noise_sigma
    for t in sched.timesteps:
        inp = sched.scale_model_input(torch.cat([latents] * 2), t)
        uncond, cond = unet(
            inp, t, encoder_hidden_states=torch.cat([torch.zeros_like(text), text])
        ).sample.chunk(2)
        latents = sched.step(uncond + 3.0 * (cond - uncond), t, latents).prev_sample
    assert torch.allclose(ours, latents, atol=1e-5)


@torch.no_grad()
def test_dual_cfg_equal_scales_is_joint_and_one_batched_forward_per_step(make_model, base_dir, clip_mp4):
    clip, _ = clip_mp4
    model = make_model(base_dir)
    pipe = DrawAudioPipeline(model)
    conds = _conds(pipe, clip)
    calls = []
    hook = model.unet.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    dual = pipe.denoise(*conds, "dual", 2.5, 2.5, 4, torch.Generator().manual_seed(1))
    hook.remove()
    assert calls == [3] * 4  # one forward of 3B per step
    joint = pipe.denoise(*conds, "joint", 0.0, 2.5, 4, torch.Generator().manual_seed(1))
    assert torch.allclose(dual, joint, atol=1e-4)
    other = pipe.denoise(*conds, "dual", 0.5, 2.5, 4, torch.Generator().manual_seed(1))
    assert not torch.allclose(other, joint, atol=1e-3)


def test_drawn_inputs():
    m = MaskInput.from_dict(
        {"frames": [{"t": 0.0, "boxes": [[0, 0, 0.5, 0.5]]}, {"t": 1.0, "boxes": [[0.5, 0.5, 1, 1]]}]}
    )
    mid = m.render(np.array([0.5]), 8, 8)[0]
    assert mid[2:6, 2:6].all() and mid.sum() == 16  # the box halfway between the keyframes
    assert KeyphraseExtractor()("two cats meowing loudly") == "cats"
    assert KeyphraseExtractor()("a red ball bounces") == "red ball"
    clip = make_clip(2, kinds=None)
    k = clip.kinds.index("ball") if "ball" in clip.kinds else None
    if k is not None:
        boxes = ColorDetector().detect(clip.video, ["red ball"])
        assert np.allclose(boxes[10][0], clip.boxes[k, 10], atol=1 / 32)


def test_bad_inputs_name_the_problem(make_model, base_dir, clip_mp4, tmp_path):
    clip, paths = clip_mp4
    pipe = DrawAudioPipeline(make_model(base_dir))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video")
    with pytest.raises(VideoError, match=r"broken\.mp4"):
        pipe(bad, "x")
    with pytest.raises(MaskError, match="does not match the video frame size"):
        pipe(paths["mp4"], "x", mask=np.ones((10, 10)))
    with pytest.raises(LoudnessError, match="NaN"):
        pipe(paths["mp4"], "x", loudness=[0.2, float("nan")])
    with pytest.raises(LoudnessError, match=r"\[0, 1\]"):
        pipe(paths["mp4"], "x", loudness=[0.2, 1.5])
    with pytest.raises(MaskError, match="box"):
        MaskInput.box([0.5, 0.5, 0.2, 0.9])
    silent = tmp_path / "silent.wav"
    import soundfile as sf

    sf.write(silent, np.zeros(16000, np.float32), 16000)
    with pytest.raises(AudioError, match="silent"):
        curve_from_audio(silent, pipe.cfg)
    with pytest.raises(VideoError, match="uint8"):
        pipe(clip.video.astype(np.float32), "x", video_fps=25)


def test_base_directory_errors(base_dir, tmp_path):
    import shutil

    cfg = DrawAudioConfig.tiny()
    broken = tmp_path / "base"
    shutil.copytree(base_dir, broken)
    (broken / "vocoder").mkdir()
    (broken / "vocoder" / "config.json").write_text("{}")
    cfg.base.vocoder = "auto"
    with pytest.raises(CheckpointError, match=r"vocoder\.pt"):
        load_base(broken, cfg)
    shutil.rmtree(broken / "vocoder")
    shutil.rmtree(broken / "unet")
    with pytest.raises(CheckpointError, match="unet"):
        load_base(broken, cfg)
    with pytest.raises(CheckpointError, match="not found"):
        load_base(tmp_path / "nowhere", cfg)


def test_audioldm_style_unet_refuses_mam():
    """A UNet conditioned through a class embedding (AudioLDM's CLAP route) has no attn2 for MAM."""
    from fourfold.diffusion import attach_decoupled_cross_attention

    unet = UNet2DConditionModel(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, layers_per_block=1,
                                sample_size=8, mid_block_type="UNetMidBlock2D", class_embed_type="simple_projection",
                                projection_class_embeddings_input_dim=8)  # fmt: skip
    with pytest.raises(ValueError, match="cross-attention"):
        attach_decoupled_cross_attention(unet)


def test_cli_data_generate_eval(make_model, base_dir, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["data", "--out", str(tmp_path / "clips"), "--procedural", "1", "--seed", "9"])
    assert r.exit_code == 0, r.output
    mp4 = tmp_path / "clips" / "bounce_000009.mp4"
    model = make_model(base_dir)
    model.save_adapter(tmp_path / "adapter")
    (tmp_path / "curve.json").write_text(json.dumps({"t": [0, 1, 2], "value": [0.1, 0.8, 0.2]}))
    r = runner.invoke(app, ["generate", "--model", str(tmp_path / "adapter"), "--video", str(mp4), "--out",
                            str(tmp_path / "gen" / "bounce_000009.wav"), "--prompt", "a red ball bounces", "--mask",
                            "0,0,0.5,1", "--loudness", str(tmp_path / "curve.json"), "--steps", "2",
                            "--mux", str(tmp_path / "gen.mp4")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "gen.mp4").is_file()
    r = runner.invoke(app, ["eval", "--gen", str(tmp_path / "gen"), "--ref", str(tmp_path / "clips"), "--out",
                            str(tmp_path / "m.json")])  # fmt: skip
    assert r.exit_code == 0, r.output
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["clips"] == 1 and "loudness_r" in result and "onset_hit_acc" in result
    r = runner.invoke(
        app, ["eval", "--gen", str(tmp_path / "gen"), "--ref", str(tmp_path / "clips"), "--metrics", "fad"]
    )
    assert r.exit_code != 0 and "VGGish" in r.output
    r = runner.invoke(
        app, ["eval", "--gen", str(tmp_path / "gen"), "--ref", str(tmp_path / "clips"), "--metrics", "csav"]
    )
    assert r.exit_code != 0 and "--av-embedder" in r.output  # CS-AV needs an audio-visual embedder
    r = runner.invoke(
        app, ["eval", "--gen", str(tmp_path / "gen"), "--ref", str(tmp_path / "clips"), "--metrics", "clap"]
    )
    assert r.exit_code != 0 and "unsupported metrics" in r.output


def test_cli_eval_distribution_metrics_with_tiny_embedders(tmp_path):
    """FD/KL/IS through a tiny random CNN14 and FAD through a tiny VGGish, loaded from local files."""
    import soundfile as sf

    from fourfold.audio.embedders import Cnn14Config, PANNsCnn14, VGGish, VGGishConfig, save_embedder

    torch.manual_seed(0)
    save_embedder(PANNsCnn14(Cnn14Config(widths=(4, 4, 8, 8, 8, 16), classes=5)), tmp_path / "cnn14")
    torch.save(
        VGGish(VGGishConfig(widths=(4, 4, 8, 8), hidden=16, dim=6)).state_dict(), tmp_path / "vggish.pt"
    )
    rng = np.random.default_rng(0)
    for d in ("gen", "ref"):
        (tmp_path / d).mkdir()
        for i in range(10):
            sf.write(tmp_path / d / f"c{i}.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    args = ["eval", "--gen", str(tmp_path / "gen"), "--ref", str(tmp_path / "ref"), "--out", str(tmp_path / "m.json"),
            "--metrics", "fd,kl,is,fad", "--embedder", str(tmp_path / "cnn14"), "--embedder", str(tmp_path / "vggish.pt")]  # fmt: skip
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["clips"] == 10 and all(
        np.isfinite(m[k]) for k in ("fd", "fad", "kl_softmax", "kl_sigmoid", "is_mean")
    )
    assert m["is_mean"] >= 1.0 - 1e-9
    r = CliRunner().invoke(app, ["eval", "--gen", str(tmp_path / "ref"), "--ref", str(tmp_path / "ref"), "--out",
                                 str(tmp_path / "same.json"), "--metrics", "fd,kl", "--embedder", str(tmp_path / "cnn14")])  # fmt: skip
    same = json.loads((tmp_path / "same.json").read_text())
    assert abs(same["fd"]) < 1e-6 and abs(same["kl_softmax"]) < 1e-4


def test_cli_generate_runs_the_shipped_adapter_without_model(tmp_path):
    import soundfile as sf

    runner = CliRunner()
    r = runner.invoke(app, ["data", "--out", str(tmp_path / "clips"), "--procedural", "1", "--seed", "4"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", "--video", str(tmp_path / "clips" / "bounce_000004.mp4"), "--out",
                            str(tmp_path / "out.wav"), "--prompt", "a red ball bounces", "--steps", "2"])  # fmt: skip
    assert r.exit_code == 0, r.output
    audio, sr = sf.read(tmp_path / "out.wav")
    assert sr == 16000 and audio.ndim == 1 and len(audio) > sr and 0 < abs(audio).max() <= 1.0
