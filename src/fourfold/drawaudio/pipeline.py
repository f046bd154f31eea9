"""``DrawAudioPipeline``: a silent video (+ text, drawn mask, drawn loudness) -> its soundtrack (spec §1).

Named steps of ``__call__``: :meth:`load_video` -> :meth:`prepare_mask` -> :meth:`prepare_loudness` ->
per window: :meth:`encode_conditions` -> :meth:`denoise` -> :meth:`decode` -> :func:`crossfade` of windows.
Guidance (spec §2.6, formula ours): dual ``ε(∅,∅) + s_v[ε(v,∅) - ε(∅,∅)] + s_t[ε(v,t) - ε(v,∅)]`` or joint
``ε(∅,∅) + s[ε(v,t) - ε(∅,∅)]``; ∅ text = zero embedding (or the negative prompt), ∅ video = zero tokens;
mask and loudness go to every branch, all branches in one batched forward.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fourfold.diffusion import dual_cfg, joint_cfg, make_scheduler, sample
from fourfold.drawaudio.config import DrawAudioConfig
from fourfold.drawaudio.masks import Detector, KeyphraseExtractor, MaskInput, detect_mask, load_mask
from fourfold.drawaudio.model import DrawAudioModel, prepare_video
from fourfold.drawaudio.tlm import coerce_curve

__all__ = ["DrawAudioOutput", "DrawAudioPipeline", "Stage", "crossfade"]


@dataclass
class Stage:
    """One layer of a multi-stage composition: its own prompt, region, loudness and level."""

    prompt: str = ""
    mask: object = None
    loudness: object = None
    gain_db: float = 0.0
    phrase: str | None = None


@dataclass
class DrawAudioOutput:
    """``audio`` (batch, samples) float32 at ``sample_rate``; ``mel`` (batch, n_mels, frames) of the first
    window; ``loudness_used`` (T'_total,) curve given to TLM or None; ``stems`` (stages, batch, samples) for
    :meth:`DrawAudioPipeline.compose`."""

    audio: np.ndarray
    sample_rate: int
    mel: torch.Tensor
    loudness_used: np.ndarray | None = None
    video_path: str | None = None
    stems: np.ndarray | None = None
    mask_used: np.ndarray | None = field(default=None, repr=False)

    def save(self, path: str | Path, mux_video: str | Path | None = None, index: int = 0) -> dict[str, Path]:
        """Write sample ``index`` as a wav (atomic) and, with ``mux_video``, an mp4 that copies the input's
        video stream and adds the audio as AAC cut to the video's length."""
        from fourfold.audio import io as aio

        out = {"wav": aio.save_audio(path, self.audio[index], self.sample_rate)}
        if mux_video is not None:
            if self.video_path is None:
                raise ValueError("mux_video needs the pipeline to have been given a video file path")
            out["mp4"] = aio.mux_audio(self.video_path, self.audio[index], self.sample_rate, mux_video)
        return out


def crossfade(chunks: list[np.ndarray], hop: int, overlap: int) -> np.ndarray:
    """Join (batch, samples) windows starting every ``hop`` samples with an equal-power crossfade (ours)."""
    if len(chunks) == 1:
        return chunks[0]
    total = hop * (len(chunks) - 1) + chunks[-1].shape[-1]
    out = np.zeros((chunks[0].shape[0], total), dtype=np.float32)
    ramp = np.linspace(0.0, np.pi / 2, overlap, dtype=np.float32)
    fade_in, fade_out = np.sin(ramp), np.cos(ramp)
    for i, c in enumerate(chunks):
        c = c.copy()
        if i > 0:
            c[:, :overlap] *= fade_in
        if i < len(chunks) - 1:
            c[:, -overlap:] *= fade_out
        out[:, i * hop : i * hop + c.shape[-1]] += c
    return out


class DrawAudioPipeline:
    """Generation with a trained :class:`DrawAudioModel` (tiny or Auffusion scale)."""

    def __init__(self, model: DrawAudioModel, detector: Detector | None = None):
        self.model = model.eval()
        self.cfg: DrawAudioConfig = model.cfg
        self.detector = detector
        self.keyphrase = KeyphraseExtractor()

    @classmethod
    def from_pretrained(
        cls, adapter_dir: str | Path, base_dir: str | Path | None = None, **kw
    ) -> DrawAudioPipeline:
        return cls(DrawAudioModel.from_pretrained(adapter_dir, base_dir), **kw)

    @classmethod
    def from_base(
        cls, base_dir: str | Path, adapter: str | Path | None = None, cfg: DrawAudioConfig | None = None, **kw
    ) -> DrawAudioPipeline:
        """A base directory plus an adapter checkpoint (or, without one, an untrained adapter: the base model)."""
        if adapter is not None:
            return cls.from_pretrained(adapter, base_dir, **kw)
        from fourfold.drawaudio.base import load_base

        cfg = cfg or DrawAudioConfig.auffusion(str(base_dir))
        cfg.base.path = str(base_dir)
        return cls(DrawAudioModel(cfg, load_base(base_dir, cfg)), **kw)

    # steps

    def load_video(self, video, fps: float | None = None) -> tuple[np.ndarray, float, str | None]:
        """Path or uint8 array (F, H, W, 3) (+ ``fps``) -> frames, fps, path."""
        from fourfold.audio import io as aio

        if isinstance(video, str | Path):
            frames, vfps, _, _ = aio.read_video(video, with_audio=False)
            return frames, vfps, str(video)
        if fps is None:
            raise ValueError("a video given as an array needs video_fps=")
        frames = np.asarray(video)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
            raise aio.VideoError(
                f"video frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        return frames, float(fps), None

    def prepare_mask(self, mask, frames: np.ndarray, prompt: str, phrase: str | None, detect: bool):
        """User mask (box/bitmap/json) or, with ``detect``, the detector's boxes for the prompt's keyphrase."""
        m = load_mask(mask, video_hw=frames.shape[1:3])
        if m is None and detect:
            if self.detector is None:
                raise ValueError("detect=True needs a detector (DrawAudioPipeline(model, detector=...))")
            bitmap = detect_mask(self.detector, frames, [phrase or self.keyphrase(prompt)])
            m = None if bitmap is None else MaskInput(bitmap=bitmap)
        return m

    def prepare_loudness(self, loudness, total_seconds: float) -> np.ndarray | None:
        """Curve over the whole video on the latent grid (T' per window duration)."""
        curve = coerce_curve(loudness)
        if curve is None:
            return None
        per_second = self.cfg.loudness_frames / self.cfg.duration
        return curve.resample(max(1, round(total_seconds * per_second)), total_seconds)

    @torch.no_grad()
    def encode_conditions(self, prompts, negative, frames, masks, times, loudness, use_video: bool = True):
        """Batched conditions: frames (B, F, 3, S, S), masks (B, F, S, S) or None, loudness (B, T') or None.

        Returns text, ∅-text (zeros or the negative prompt), video tokens (zeros when ``use_video`` is
        false: text-only generation), key mask, loudness.
        """
        model, dev = self.model, self.model.base.device
        text = model.base.encode_text(prompts).to(dev)
        empty = model.base.encode_text(negative).to(dev) if negative is not None else torch.zeros_like(text)
        tokens, key_mask = model.encode_video(frames.to(dev), None if masks is None else masks.to(dev), times)
        if not use_video:
            tokens, key_mask = torch.zeros_like(tokens), None
        loud = None if loudness is None else torch.as_tensor(loudness, dtype=torch.float32, device=dev)
        return text, empty, tokens, key_mask, loud

    @torch.no_grad()
    def generate_tensors(
        self,
        frames,
        masks,
        times,
        prompts,
        negative=None,
        loudness=None,
        use_video=True,
        cfg=None,
        guidance_video=None,
        guidance_text=None,
        steps=None,
        generator=None,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """One window for a batch of prepared clips -> wav (B, samples), mel (B, n_mels, frames)."""
        g = self.cfg.guidance
        conds = self.encode_conditions(prompts, negative, frames, masks, times, loudness, use_video)
        latents = self.denoise(
            *conds,
            cfg or g.cfg,
            g.video if guidance_video is None else guidance_video,
            g.text if guidance_text is None else guidance_text,
            steps or g.steps,
            generator,
        )
        return self.decode(latents)

    @torch.no_grad()
    def denoise(self, text, empty, tokens, key_mask, loud, mode, s_v, s_t, steps, generator) -> torch.Tensor:
        zeros = torch.zeros_like(tokens)

        def branch(txt, tok):
            return {
                "encoder_hidden_states": txt,
                "video_tokens": tok,
                "video_mask": key_mask,
                "loudness": loud,
            }

        if mode == "dual":
            branches, scales = dual_cfg(
                branch(empty, zeros), branch(empty, tokens), branch(text, tokens), s_v, s_t
            )
        elif mode == "joint":
            branches, scales = joint_cfg(branch(empty, zeros), branch(text, tokens), s_t)
        else:
            raise ValueError(f"cfg must be 'dual' or 'joint', got {mode!r}")
        scheduler = make_scheduler(self.cfg.guidance.scheduler, source=self.model.base.scheduler)
        shape = (text.shape[0], *self.cfg.latent_shape)
        return sample(self.model, scheduler, branches, scales, shape=shape, num_inference_steps=steps, generator=generator,
                      device=self.model.base.device)  # fmt: skip

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        mel = self.model.base.decode_latents(latents)
        wav = self.model.base.vocode(mel, self.cfg.num_samples)
        return wav.cpu().numpy().astype(np.float32), mel.cpu()

    # entry points

    @torch.no_grad()
    def __call__(
        self,
        video,
        prompt: str | list[str] = "",
        mask=None,
        loudness=None,
        negative_prompt: str | None = None,
        num_inference_steps: int | None = None,
        cfg: str | None = None,
        guidance_video: float | None = None,
        guidance_text: float | None = None,
        duration: float | None = None,
        seed: int = 0,
        num_samples: int = 1,
        phrase: str | None = None,
        detect: bool = False,
        video_fps: float | None = None,
    ) -> DrawAudioOutput:
        """Generate ``num_samples`` soundtracks for ``video``; see the module docstring for the guidance."""
        frames, fps, path = self.load_video(video, video_fps)
        prompts = [prompt] * num_samples if isinstance(prompt, str) else list(prompt)
        negative = None if negative_prompt is None else [negative_prompt] * len(prompts)
        total = float(duration if duration is not None else len(frames) / fps)
        if total <= 0:
            raise ValueError(f"duration must be positive, got {total}")
        m = self.prepare_mask(mask, frames, prompts[0], phrase, detect)
        curve = self.prepare_loudness(loudness, total)
        win, overlap = self.cfg.duration, min(self.cfg.guidance.window_overlap, self.cfg.duration / 2)
        starts = [0.0]
        while starts[-1] + win < total - 1e-6:
            starts.append(starts[-1] + win - overlap)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        tpf = self.cfg.loudness_frames / win  # latent frames per second
        chunks, first_mel, mask_used = [], None, None
        for start in starts:
            window_curve = None
            if curve is not None:
                i0 = round(start * tpf)
                window_curve = curve[i0 : i0 + self.cfg.loudness_frames]
                window_curve = np.pad(
                    window_curve, (0, self.cfg.loudness_frames - len(window_curve)), mode="edge"
                )
                window_curve = np.repeat(window_curve[None], len(prompts), axis=0)
            x, mw, times = prepare_video(frames, fps, self.cfg, m, start)
            n = len(prompts)
            wav, mel = self.generate_tensors(
                x[None].expand(n, -1, -1, -1, -1), None if mw is None else mw[None].expand(n, -1, -1, -1), times,
                prompts, negative, window_curve, True, cfg, guidance_video, guidance_text, num_inference_steps,
                generator,
            )  # fmt: skip
            chunks.append(wav)
            first_mel = mel if first_mel is None else first_mel
            mask_used = mw.numpy() if (mw is not None and mask_used is None) else mask_used
        sr = self.cfg.mel.sample_rate
        audio = crossfade(chunks, round((win - overlap) * sr), round(overlap * sr))[:, : round(total * sr)]
        return DrawAudioOutput(audio, sr, first_mel, curve, path, mask_used=mask_used)

    @torch.no_grad()
    def compose(self, video, stages: list[Stage], **kwargs) -> DrawAudioOutput:
        """Multi-stage synthesis: one generation per stage (its prompt/mask/loudness), gained and mixed.

        The mix is scaled down only if it would clip; ``stems`` keeps each stage's gained audio.
        """
        if not stages:
            raise ValueError("compose needs at least one Stage")
        outs = []
        for st in stages:
            o = self(video, prompt=st.prompt, mask=st.mask, loudness=st.loudness, phrase=st.phrase, **kwargs)
            outs.append((o, 10 ** (st.gain_db / 20)))
        stems = np.stack([o.audio * g for o, g in outs])
        mix = stems.sum(0)
        peak = float(np.abs(mix).max())
        if peak > 1.0:
            mix, stems = mix / peak, stems / peak
        first = outs[0][0]
        return DrawAudioOutput(mix.astype(np.float32), first.sample_rate, first.mel, first.loudness_used,
                               first.video_path, stems=stems.astype(np.float32))  # fmt: skip
