"""Schedulers by name and the training step's targets."""

import json

import pytest
import torch

from fourfold.diffusion import (
    add_noise,
    diffusion_target,
    make_scheduler,
    min_snr_weights,
    snr,
    training_step,
)
from fourfold.nn import CheckpointError


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("ddpm", "DDPMScheduler"),
        ("ddim", "DDIMScheduler"),
        ("dpm++", "DPMSolverMultistepScheduler"),
        ("euler", "EulerDiscreteScheduler"),
    ],
)
def test_make_scheduler_by_name(name, cls):
    s = make_scheduler(name, prediction_type="v_prediction")
    assert type(s).__name__ == cls and s.config.prediction_type == "v_prediction"
    assert s.config.beta_schedule == "scaled_linear" and s.config.beta_end == pytest.approx(0.012)
    assert getattr(s.config, "clip_sample", False) is False  # latents are unbounded: never clip x0


def test_scheduler_from_local_dir_and_other_scheduler(tmp_path):
    (tmp_path / "scheduler").mkdir()
    cfg = {
        "_class_name": "PNDMScheduler",
        "num_train_timesteps": 500,
        "beta_schedule": "linear",
        "skip_prk_steps": True,
    }
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(cfg))
    s = make_scheduler("ddim", tmp_path / "scheduler")
    assert type(s).__name__ == "DDIMScheduler" and s.config.num_train_timesteps == 500
    d = make_scheduler("dpmsolver++", s, beta_schedule="cosine")
    assert d.config.algorithm_type == "dpmsolver++" and d.config.beta_schedule == "squaredcos_cap_v2"
    with pytest.raises(CheckpointError, match="not found"):
        make_scheduler("ddim", tmp_path / "missing")
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler("heun2000")
    with pytest.raises(ValueError, match="prediction_type"):
        make_scheduler("ddim", prediction_type="x0")


def test_add_noise_matches_diffusers():
    s = make_scheduler("ddpm")
    z, eps, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0, 500, 999])
    torch.testing.assert_close(add_noise(s, z, eps, t), s.add_noise(z, eps, t))
    torch.testing.assert_close(diffusion_target(s, z, eps, t, "v_prediction"), s.get_velocity(z, eps, t))


class Oracle(torch.nn.Module):
    """Returns a fixed tensor; records what it was called with."""

    def __init__(self, out):
        super().__init__()
        self.out, self.calls = out, []

    def forward(self, x, t, **cond):
        self.calls.append((x, t, cond))
        return (self.out,)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction", "sample"])
def test_training_step_targets(ptype):
    s = make_scheduler("ddpm")
    z, eps, t = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3), torch.tensor([10, 900])
    a = s.alphas_cumprod[t].sqrt().view(2, 1, 1, 1)
    b = (1 - s.alphas_cumprod[t]).sqrt().view(2, 1, 1, 1)
    expected = {"epsilon": eps, "sample": z, "v_prediction": a * eps - b * z}[ptype]
    perfect = Oracle(expected)
    out = training_step(
        perfect, s, z, {"encoder_hidden_states": "cond"}, prediction_type=ptype, timesteps=t, noise=eps
    )
    torch.testing.assert_close(out.target, expected)
    torch.testing.assert_close(out.noisy_latents, a * z + b * eps)
    assert out.loss.item() == 0.0
    _, tt, cond = perfect.calls[0]
    assert torch.equal(tt, t) and cond == {"encoder_hidden_states": "cond"}
    wrong = Oracle(expected + 1.0)
    assert training_step(
        wrong, s, z, prediction_type=ptype, timesteps=t, noise=eps
    ).loss.item() == pytest.approx(1.0)


def test_training_step_samples_t_and_noise_reproducibly(tiny_unet):
    s = make_scheduler("ddim")
    z, text = torch.randn(2, 4, 8, 16), torch.randn(2, 5, 8)

    def run():
        return training_step(
            tiny_unet, s, z, {"encoder_hidden_states": text}, generator=torch.Generator().manual_seed(3)
        )

    a, b = run(), run()
    assert torch.equal(a.timesteps, b.timesteps) and torch.equal(a.noise, b.noise)
    assert a.timesteps.min() >= 0 and a.timesteps.max() < 1000
    a.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_unet.parameters())
    w = training_step(
        tiny_unet,
        s,
        z,
        {"encoder_hidden_states": text},
        timesteps=a.timesteps,
        noise=a.noise,
        weights=torch.ones(2),
    )
    torch.testing.assert_close(w.loss, a.loss)


def test_min_snr_weights_equalise_the_x0_space_weight():
    """Each target's loss relates to the x0 loss by a known factor (ε: SNR, v: SNR + 1, x0: 1); the
    weights make every prediction type weigh x0 errors by min(SNR, γ)."""
    s = make_scheduler("ddpm")
    t = torch.tensor([1, 100, 500, 999])
    ratio = snr(s, t)
    assert ratio[0] > 5 > ratio[-1]
    x0_factor = {"epsilon": ratio, "v_prediction": ratio + 1, "sample": torch.ones_like(ratio)}
    for ptype, factor in x0_factor.items():
        torch.testing.assert_close(min_snr_weights(s, t, ptype) * factor, ratio.clamp(max=5.0))
    with pytest.raises(ValueError, match="prediction_type"):
        min_snr_weights(s, t, "x0")
