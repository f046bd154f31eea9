"""Build the shipped pipeline folder: ``python -m fourfold.songcreator.ship --dslm DIR --out DIR``.

The folder holds everything :meth:`SongCreatorPipeline.from_pretrained` needs: the DSLM (trained by the
demo's full run), the lyrics front end, the oracle tokenizer's name and a renderer trained here on the
same procedural songs: the paper's :class:`~fourfold.songcreator.ldm_renderer.LatentDiffusionRenderer`
(``--renderer ldm``) or the training-free :class:`~fourfold.songcreator.renderer.CentroidRenderer`.
A ``renderer_metrics.json`` beside it records the renderer's reconstruction check
(:func:`renderer_reconstruction`).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["build_pipeline", "renderer_reconstruction", "training_examples"]

KIND_AUDIO = (("vocals", "vocals"), ("accompaniment", "accompaniment"), ("song", "mixture"))


def training_examples(songs, tok) -> list[tuple[torch.Tensor, np.ndarray, str]]:
    """``(codes (T,), wav, kind)`` for every clip and stream of ``songs``."""
    out = []
    for i in range(len(songs)):
        clip, codes = songs[i], tok.encode_clip(songs[i])
        out += [(codes[kind], getattr(clip, attr), kind) for kind, attr in KIND_AUDIO]
    return out


@torch.no_grad()
def renderer_reconstruction(renderer, examples, *, shuffle_seed: int = 0) -> dict[str, float]:
    """Mean log-mel L1 between the renderer's mel and the true mel, rendered from each clip's own
    tokens and from another clip's tokens of the same stream (the unconditional control: a sample of
    the data distribution that ignores this clip). Lower is better."""
    from fourfold.audio.mel import mel_spectrogram

    cfg = renderer.config.mel_config()
    by_kind: dict[str, list] = {}
    for ex in examples:
        by_kind.setdefault(ex[2], []).append(ex)
    own, other = [], []
    rng = np.random.default_rng(shuffle_seed)
    for kind, exs in by_kind.items():
        perm = np.roll(np.arange(len(exs)), 1 + int(rng.integers(0, max(1, len(exs) - 1))))
        for j, (tok, wav, _) in enumerate(exs):
            true = mel_spectrogram(torch.as_tensor(wav, dtype=torch.float32), cfg)
            for toks, acc in ((tok, own), (exs[perm[j]][0], other)):
                mel = _mel(renderer, toks[None], kind)[0]
                n = min(mel.shape[-1], true.shape[-1])
                acc.append(float((mel[..., :n] - true[..., :n]).abs().mean()))
    return {"own_tokens_l1": float(np.mean(own)), "other_tokens_l1": float(np.mean(other)), "n": len(own)}


def _mel(renderer, tokens, kind):
    if hasattr(renderer, "generate_mel"):
        return renderer.generate_mel(tokens, kind)
    return renderer(tokens, kind)


@torch.no_grad()
def rendered_audio_l1(renderer, examples) -> dict[str, float]:
    """Mean log-mel L1 between the *rendered waveform's* mel and the true mel (after Griffin-Lim for a
    mel-latent renderer, straight from the VAE decoder for a waveform-latent one), own tokens only."""
    from fourfold.audio.mel import mel_spectrogram

    cfg = renderer.config.mel_config()
    out = []
    for tok, wav, kind in examples:
        true = mel_spectrogram(torch.as_tensor(wav, dtype=torch.float32), cfg)
        mel = mel_spectrogram(renderer.render(tok[None], kind)[0].float(), cfg)
        n = min(mel.shape[-1], true.shape[-1])
        out.append(float((mel[..., :n] - true[..., :n]).abs().mean()))
    return {"rendered_audio_l1": float(np.mean(out)), "n": len(out)}


def build_pipeline(
    dslm_dir: Path, out: Path, renderer_kind: str = "ldm", log=print, vae_dir: Path | None = None
) -> dict:
    from fourfold.songcreator.demo import _setup
    from fourfold.songcreator.dslm import DSLM
    from fourfold.songcreator.ldm_renderer import (
        LatentDiffusionRenderer,
        LatentDiffusionRendererConfig,
        train_ldm_renderer,
    )
    from fourfold.songcreator.pipeline import SongCreatorPipeline
    from fourfold.songcreator.renderer import CentroidRenderer, RendererConfig

    t0 = time.time()
    songs, fe, tok, _ = _setup(64, prompts=False)
    held, _, _, _ = _setup(8, seed=1, prompts=False)
    train_ex, held_ex = training_examples(songs, tok), training_examples(held, tok)
    dslm = DSLM.from_pretrained(dslm_dir)
    centroid = CentroidRenderer(RendererConfig.tiny(tok.codebook_size))
    for kind, _ in KIND_AUDIO:
        ex = [e for e in train_ex if e[2] == kind]
        centroid.fit([e[0] for e in ex], [e[1] for e in ex], kind)
    metrics = {"centroid": renderer_reconstruction(centroid, held_ex)}
    renderer = centroid
    if renderer_kind == "ldm" and vae_dir is not None:
        from fourfold.audio.waveform_vae import WaveformVAE

        # the paper's renderer: a waveform-VAE latent (VAE trained with GAN losses by ship_vae), then the
        # U-Net on it with the same two phases as the mel-latent renderer below
        torch.manual_seed(0)
        renderer = LatentDiffusionRenderer(
            LatentDiffusionRendererConfig.tiny(tok.codebook_size, vae="waveform")
        )
        renderer.vae.load_state_dict(WaveformVAE.from_pretrained(vae_dir).state_dict())
        first = train_ldm_renderer(renderer, train_ex, vae_steps=0, log=log)
        metrics["ldm_after_first_phase"] = renderer_reconstruction(renderer, held_ex)
        second = train_ldm_renderer(
            renderer, train_ex, vae_steps=0, unet_steps=900, learning_rate=1e-3, seed=1, log=log
        )
        metrics["ldm"] = renderer_reconstruction(renderer, held_ex)
        metrics["ldm"].update(rendered_audio_l1(renderer, held_ex))
        metrics["ldm_losses_first_last"] = {"unet": [first["unet"][0], float(np.mean(second["unet"][-20:]))]}
        metrics["vae"] = str(vae_dir)
    elif renderer_kind == "ldm":
        torch.manual_seed(0)
        renderer = LatentDiffusionRenderer(LatentDiffusionRendererConfig.tiny(tok.codebook_size))
        # VAE 300 steps + U-Net 600 steps at lr 2e-3, then 900 more U-Net steps at 1e-3 (the second phase
        # cut the held-out log-mel L1 from 1.82 to 1.28; the VAE's own reconstruction floor is 0.65)
        first = train_ldm_renderer(renderer, train_ex, log=log)
        metrics["ldm_after_first_phase"] = renderer_reconstruction(renderer, held_ex)
        second = train_ldm_renderer(
            renderer, train_ex, vae_steps=0, unet_steps=900, learning_rate=1e-3, seed=1, log=log
        )
        metrics["ldm"] = renderer_reconstruction(renderer, held_ex)
        metrics["ldm_losses_first_last"] = {
            "vae": [first["vae"][0], float(np.mean(first["vae"][-20:]))],
            "unet": [first["unet"][0], float(np.mean(second["unet"][-20:]))],
        }
    metrics["seconds"] = time.time() - t0
    SongCreatorPipeline(dslm, fe, tokenizer=tok, renderer=renderer).save_pretrained(out)
    (out / "renderer_metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    log(json.dumps(metrics, indent=1))
    return metrics


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dslm", type=Path, required=True, help="a DSLM directory (config.json + weights)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--renderer", choices=("ldm", "centroid"), default="ldm")
    ap.add_argument(
        "--vae", type=Path, default=None, help="a trained WaveformVAE folder (ship_vae): the paper's latent"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    build_pipeline(args.dslm, args.out, args.renderer, vae_dir=args.vae)


if __name__ == "__main__":
    main()
