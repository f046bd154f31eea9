"""Train and measure the tiny waveform VAE of the renderer on procedural song stems:
``python -m fourfold.songcreator.ship_vae --out DIR [--steps N --warmup N]``.

Data: the first 64 balanced procedural songs (the renderer's training songs), all three streams (vocals,
accompaniment, mixture), 4 s at 16 kHz; random 0.5 s crops. Training: ``warmup`` steps of mel L1 + KL,
then the full GAN objective against :class:`fourfold.audio.gan.DACDiscriminator` (tiny). The VAE is
saved atomically to ``DIR/vae`` every 100 steps and at the end. :func:`reconstruction_metrics` compares
it with the mel-VAE + Griffin-Lim path of the shipped renderer on 8 held-out songs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["reconstruction_metrics", "stem_waveforms"]


def stem_waveforms(songs) -> torch.Tensor:
    """``(3·len(songs), samples)``: vocals, accompaniment and mixture of every clip."""
    rows = []
    for i in range(len(songs)):
        clip = songs[i]
        rows += [clip.vocals, clip.accompaniment, clip.mixture]
    return torch.as_tensor(np.stack(rows), dtype=torch.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum() + 1e-12))


@torch.no_grad()
def reconstruction_metrics(wavs: torch.Tensor, reconstruct, mel_cfg) -> dict[str, float]:
    """Log-mel L1 (``mel_cfg``) and the Pearson r of the frame loudness (dB) between each true waveform
    and ``reconstruct(wav (1, n)) -> (1, m)``, averaged over rows."""
    from fourfold.audio.loudness import loudness_db
    from fourfold.audio.mel import mel_spectrogram

    l1, r = [], []
    for w in wavs:
        rec = reconstruct(w[None])[0].float()
        n = min(len(w), len(rec))
        true_mel, rec_mel = mel_spectrogram(w[:n], mel_cfg), mel_spectrogram(rec[:n], mel_cfg)
        l1.append(float((true_mel - rec_mel).abs().mean()))
        r.append(_pearson(loudness_db(w[:n], mel_cfg).numpy(), loudness_db(rec[:n], mel_cfg).numpy()))
    return {"log_mel_l1": float(np.mean(l1)), "loudness_r": float(np.mean(r)), "n": len(l1)}


def main(argv=None) -> None:
    from fourfold.audio.gan import DACDiscriminator, DACDiscriminatorConfig
    from fourfold.audio.mel import griffin_lim
    from fourfold.audio.waveform_vae import (
        WaveformVAE,
        WaveformVAEConfig,
        WaveformVAETraining,
        train_waveform_vae,
    )
    from fourfold.songcreator.demo import _setup
    from fourfold.songcreator.ldm_renderer import LatentDiffusionRenderer
    from fourfold.songcreator.pipeline import SHIPPED_PIPELINE

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=800)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--eval-only", action="store_true", help="measure DIR/vae without training")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    songs, _, _, _ = _setup(64, prompts=False)
    held, _, _, _ = _setup(8, seed=1, prompts=False)
    train, test = stem_waveforms(songs), stem_waveforms(held)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.eval_only:
        vae = WaveformVAE.from_pretrained(out / "vae")
    else:
        vae = WaveformVAE(WaveformVAEConfig.tiny())
        training = WaveformVAETraining(vae, DACDiscriminator(DACDiscriminatorConfig.tiny()))

        def save(step: int) -> None:
            if (step + 1) % 100 == 0 or step + 1 == args.steps:
                vae.save_pretrained(out / "vae")
                (out / "vae_step.txt").write_text(f"{step + 1}\n")

        history = train_waveform_vae(
            training,
            train,
            steps=args.steps,
            warmup_steps=args.warmup,
            batch_size=args.batch,
            crop=8000,
            learning_rate=args.lr,
            log=lambda m: print(m, flush=True),
            on_step=save,
        )
        (out / "vae_history.json").write_text(json.dumps(history) + "\n")
    vae.eval()
    ldm = LatentDiffusionRenderer.from_pretrained(SHIPPED_PIPELINE / "renderer")
    mel_cfg = ldm.config.mel_config()

    def mel_vae_griffin_lim(w):
        frames = w.shape[-1] // (ldm.config.mel_per_token * ldm.config.hop_length)
        z = ldm.vae.encode(ldm.mel_image(w, frames))
        mel = ldm.vae.decode_mel(z, mel_cfg)
        return griffin_lim(mel, mel_cfg, n_iter=ldm.config.griffin_lim_iters)

    def wave_vae(w):
        hop = vae.config.hop_length
        w = w[..., : w.shape[-1] // hop * hop]
        return vae.decode(vae.encode(w)[0])

    metrics = {
        "held_out": "8 songs x 3 streams (vocals, accompaniment, mixture), ProceduralSongs seed 1",
        "waveform_vae": reconstruction_metrics(test, wave_vae, mel_cfg),
        "mel_vae_griffin_lim": reconstruction_metrics(test, mel_vae_griffin_lim, mel_cfg),
        "seconds": time.time() - t0,
        "command": "python -m fourfold.songcreator.ship_vae "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    (out / "vae_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
