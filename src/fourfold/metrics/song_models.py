"""Model-based song metrics of SongCreator (§4.1, App G; spec §6), each network loaded from a local path.

* **FAD** with a VGGish-architecture embedder (Hershey et al. 2017; the layout of torchvggish /
  gudgud96/frechet-audio-distance): 16 kHz, 64-band log-mel (25 ms window, 10 ms hop, 125–7500 Hz, HTK mel,
  ``log(mel + 0.01)``), non-overlapping 0.96 s examples (96 frames), VGG conv stack, 4096-4096-128 FC;
  the 128-d output is taken before the final ReLU, without PCA (``use_pca=False, use_activation=False``).
  Frames are pooled per set, then :func:`fourfold.metrics.frechet.frechet_distance_from_features`.
* **SECS** with a Resemblyzer-architecture speaker encoder (Wan et al. 2018 GE2E as Resemblyzer ships it):
  40-band mel power spectrogram (16 kHz, 25 ms / 10 ms), 3-layer LSTM (256), Linear(256→256) + ReLU,
  L2-normalised; an utterance is the normalised mean of 1.6 s partials taken 1.3 times a second. SECS is the cosine
  of two utterance embeddings. (Resemblyzer's webrtcvad silence trimming is not applied.)
* **PER** with a phoneme CTC recogniser (a transformers ``Wav2Vec2ForCTC`` directory with its tokenizer):
  greedy CTC decoding, then Levenshtein (S + D + I) / N over phones (:func:`fourfold.metrics.music.error_rate`).

Weights: ``VGGish.from_pretrained(dir)`` / ``SpeakerEncoder.from_pretrained(dir)`` read our safetensors
layout; ``from_torch_state(path)`` reads the public ``.pth``/``.pt`` state dicts (torchvggish's
``vggish-10086976.pth``, Resemblyzer's ``pretrained.pt``) with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

from fourfold.metrics.frechet import frechet_distance_from_features
from fourfold.metrics.music import error_rate
from fourfold.nn.modeling import CheckpointError, PretrainedModel

__all__ = [
    "PhonemeRecognizer",
    "SpeakerEncoder",
    "SpeakerEncoderConfig",
    "VGGish",
    "VGGishConfig",
    "fad_vggish",
    "phoneme_error_rate",
    "secs",
    "vggish_log_mel",
]

VGGISH_SR = 16000
VGGISH_EXAMPLE_FRAMES = 96  # 0.96 s at 100 frames/s


def _to_16k(wav, sr: int) -> np.ndarray:
    from fourfold.audio.io import resample

    wav = np.asarray(wav, np.float32)
    if wav.ndim != 1:
        raise ValueError(f"expected mono audio (samples,), got shape {wav.shape}")
    return resample(wav, sr, VGGISH_SR) if sr != VGGISH_SR else wav


def _htk_mel_matrix(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular HTK-mel weights, as VGGish's ``mel_features`` builds them."""

    def hz_to_mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f) / 700.0)

    bins = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    mel_bins = hz_to_mel(bins)
    edges = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    w = np.zeros((len(bins), n_mels))
    for i in range(n_mels):
        lo, center, hi = edges[i : i + 3]
        w[:, i] = np.maximum(
            0.0, np.minimum((mel_bins - lo) / (center - lo), (hi - mel_bins) / (hi - center))
        )
    w[0, :] = 0.0  # VGGish zeroes the DC bin
    return w


def vggish_log_mel(wav, sr: int) -> np.ndarray:
    """VGGish front end: audio -> examples ``(n, 96, 64)`` of ``log(mel + 0.01)`` (non-overlapping 0.96 s)."""
    x = _to_16k(wav, sr).astype(np.float64)
    win, hop, n_fft = 400, 160, 512
    if len(x) < win:
        raise ValueError(f"clip shorter than one {win}-sample VGGish window")
    n = 1 + (len(x) - win) // hop
    frames = np.stack([x[i * hop : i * hop + win] for i in range(n)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    spec = np.abs(np.fft.rfft(frames * window, n_fft))
    mel = np.log(spec @ _htk_mel_matrix(64, n_fft, VGGISH_SR, 125.0, 7500.0) + 0.01)
    k = len(mel) // VGGISH_EXAMPLE_FRAMES
    if k == 0:
        raise ValueError("clip shorter than one 0.96 s VGGish example")
    return mel[: k * VGGISH_EXAMPLE_FRAMES].reshape(k, VGGISH_EXAMPLE_FRAMES, 64).astype(np.float32)


@dataclass
class VGGishConfig:
    conv_channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512)  # VGG configuration "A"-like stack
    pool_after: tuple[int, ...] = (0, 1, 3, 5)  # max-pool after these convs: 96×64 -> 6×4
    hidden: int = 4096
    embedding_dim: int = 128

    def __post_init__(self) -> None:
        if len(self.pool_after) != 4 or max(self.pool_after) >= len(self.conv_channels):
            raise ValueError("VGGishConfig.pool_after must name 4 conv indices (96×64 -> 6×4)")

    @classmethod
    def tiny(cls) -> VGGishConfig:
        """Random test size: same layout, narrow widths."""
        return cls(conv_channels=(4, 8, 8, 8, 16, 16), hidden=32)


class VGGish(PretrainedModel):
    """``forward(examples (n, 96, 64)) -> (n, embedding_dim)`` pre-activation embeddings."""

    config_class = VGGishConfig

    def __init__(self, config: VGGishConfig):
        super().__init__(config)
        layers, c_in = [], 1
        for i, c in enumerate(config.conv_channels):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=True)]
            if i in config.pool_after:
                layers.append(nn.MaxPool2d(2, 2))
            c_in = c
        self.features = nn.Sequential(*layers)
        h = config.hidden
        self.embeddings = nn.Sequential(
            nn.Linear(c_in * 6 * 4, h),
            nn.ReLU(True),
            nn.Linear(h, h),
            nn.ReLU(True),
            nn.Linear(h, config.embedding_dim),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples[:, None].to(self.embeddings[0].weight))
        # TF (NHWC) flattening order, which the released weights' first FC expects
        return self.embeddings(rearrange(x, "n c h w -> n (h w c)"))

    @classmethod
    def from_torch_state(cls, path: str | os.PathLike, config: VGGishConfig | None = None) -> VGGish:
        """torchvggish's ``vggish-*.pth`` (keys ``features.*``, ``embeddings.*``; the final ReLU has no weights)."""
        return _from_state(cls, config or VGGishConfig(), path)

    @torch.no_grad()
    def embed(self, wav, sr: int) -> np.ndarray:
        """Audio -> ``(examples, embedding_dim)``."""
        self.eval()
        return self(torch.from_numpy(vggish_log_mel(wav, sr))).float().cpu().numpy()


def _from_state(cls, config, path):
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors of several types for a corrupt or non-tensor file
        raise CheckpointError(f"{path}: not a weights-only torch state dict ({err})") from err
    if isinstance(state, dict) and isinstance(state.get("model_state"), dict):
        state = state["model_state"]  # Resemblyzer wraps its state dict
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict")
    model = cls(config)
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own}  # Resemblyzer also stores similarity_weight/bias
    missing = sorted(set(own) - set(state))
    if missing:
        raise CheckpointError(f"{path}: missing weights {missing[:5]}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise CheckpointError(f"{path}: {k} has shape {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(state)
    return model.eval()


def fad_vggish(generated: Sequence, reference: Sequence, sr: int, embedder: VGGish) -> float:
    """FAD between two sets of clips (frames pooled per set), spec §6."""
    gen = np.concatenate([embedder.embed(w, sr) for w in generated])
    ref = np.concatenate([embedder.embed(w, sr) for w in reference])
    return frechet_distance_from_features(gen, ref)


@dataclass
class SpeakerEncoderConfig:
    n_mels: int = 40
    hidden: int = 256
    layers: int = 3
    embedding_dim: int = 256
    partial_frames: int = 160  # 1.6 s partials
    partials_per_second: float = (
        1.3  # Resemblyzer's default rate: a partial every round(100 / 1.3) = 77 frames
    )

    @classmethod
    def tiny(cls) -> SpeakerEncoderConfig:
        return cls(hidden=16, layers=1, embedding_dim=16)


class SpeakerEncoder(PretrainedModel):
    """``forward(mels (n, frames, n_mels)) -> (n, embedding_dim)`` unit-norm partial embeddings."""

    config_class = SpeakerEncoderConfig

    def __init__(self, config: SpeakerEncoderConfig):
        super().__init__(config)
        self.lstm = nn.LSTM(config.n_mels, config.hidden, config.layers, batch_first=True)
        self.linear = nn.Linear(config.hidden, config.embedding_dim)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(mels)
        e = self.relu(self.linear(h[-1]))
        return e / e.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @classmethod
    def from_torch_state(
        cls, path: str | os.PathLike, config: SpeakerEncoderConfig | None = None
    ) -> SpeakerEncoder:
        """Resemblyzer's ``pretrained.pt`` (``{"model_state": {lstm.*, linear.*, similarity_*}}``)."""
        return _from_state(cls, config or SpeakerEncoderConfig(), path)

    def mel(self, wav, sr: int) -> np.ndarray:
        """``(frames, n_mels)`` mel power spectrogram at 16 kHz, 25 ms window, 10 ms hop (Resemblyzer)."""
        from fourfold.audio.mel import mel_filters

        # librosa.feature.melspectrogram(n_fft=400, hop_length=160) as Resemblyzer calls it: centred
        # frames (zero padding, librosa ≥ 0.10), periodic Hann, power 2, Slaney mel filters
        x = np.pad(_to_16k(wav, sr).astype(np.float64), 200)
        n = 1 + (len(x) - 400) // 160
        frames = np.stack([x[i * 160 : i * 160 + 400] for i in range(n)])
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
        power = np.abs(np.fft.rfft(frames * window)) ** 2
        return (power @ mel_filters(VGGISH_SR, 400, self.config.n_mels, 0.0, VGGISH_SR / 2).T).astype(
            np.float32
        )

    @torch.no_grad()
    def embed_utterance(self, wav, sr: int) -> np.ndarray:
        """Mean of partial embeddings (1.6 s, one every 0.77 s), L2-normalised."""
        self.eval()
        mel = self.mel(wav, sr)
        p = self.config.partial_frames
        step = max(1, round(100 / self.config.partials_per_second))
        if len(mel) < p:
            mel = np.pad(mel, ((0, p - len(mel)), (0, 0)))
        starts = range(0, len(mel) - p + 1, step)
        parts = self(torch.from_numpy(np.stack([mel[s : s + p] for s in starts])))
        e = parts.mean(0)
        return (e / e.norm().clamp_min(1e-12)).numpy()


def secs(prompt, generated, sr: int, encoder: SpeakerEncoder) -> float:
    """Speaker-embedding cosine similarity of two vocal clips (spec §6)."""
    a, b = encoder.embed_utterance(prompt, sr), encoder.embed_utterance(generated, sr)
    return float(np.dot(a, b))


class PhonemeRecognizer:
    """A local ``Wav2Vec2ForCTC`` phoneme model + its tokenizer; ``transcribe(wav, sr) -> [phones]``."""

    def __init__(self, model, tokenizer, sample_rate: int = 16000):
        self.model, self.tokenizer, self.sample_rate = model.eval(), tokenizer, sample_rate

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> PhonemeRecognizer:
        from transformers import AutoTokenizer, Wav2Vec2ForCTC

        d = Path(directory)
        if not (d / "config.json").is_file():
            raise CheckpointError(f"{d}: not a Wav2Vec2ForCTC directory (missing config.json)")
        try:
            model = Wav2Vec2ForCTC.from_pretrained(str(d), local_files_only=True, dtype=torch.float32)
            tok = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        except (OSError, ValueError) as err:
            raise CheckpointError(f"cannot load the phoneme recogniser from {d}: {err}") from err
        return cls(model, tok)

    @torch.no_grad()
    def transcribe(self, wav, sr: int) -> list[str]:
        from fourfold.audio.io import resample

        x = np.asarray(wav, np.float32)
        x = resample(x, sr, self.sample_rate) if sr != self.sample_rate else x
        x = (x - x.mean()) / (x.std() + 1e-7)  # Wav2Vec2FeatureExtractor's zero-mean unit-variance
        ids = self.model(torch.from_numpy(x)[None]).logits.argmax(-1)[0].tolist()
        # greedy CTC: merge repeats, drop blanks (the pad token) and word delimiters
        out, prev = [], None
        blank = self.tokenizer.pad_token_id
        skip = {blank, getattr(self.tokenizer, "word_delimiter_token_id", None)}
        for i in ids:
            if i != prev and i not in skip:
                out.append(self.tokenizer.convert_ids_to_tokens(i))
            prev = i
        return out


def phoneme_error_rate(references: Sequence[Sequence[str]], hypotheses: Sequence[Sequence[str]]) -> float:
    """Corpus PER: total edits / total reference phones (jiwer's corpus-level convention)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = sum(error_rate(r, h) * len(r) for r, h in zip(references, hypotheses, strict=True))
    return edits / sum(len(r) for r in references)
