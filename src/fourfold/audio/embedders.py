"""Audio embedders for the distribution metrics: PANNs CNN14 (FD, KL, IS) and VGGish (FAD).

Both are re-implementations of the published architectures with the official state-dict key names, so
the public weights load unchanged from a local file (no hub access):

- :class:`PANNsCnn14`, Kong et al. 2020 (arXiv 1912.10211), ``Cnn14`` of
  https://github.com/qiuqiangkong/audioset_tagging_cnn with torchlibrosa's front end, at the 16 kHz
  setting audioldm_eval uses (``Cnn14_16k_mAP=0.438.pth``: window 512, hop 160, 64 mels 50-8000 Hz,
  527 AudioSet classes). Outputs ``{"2048": ReLU(fc1) (B, 2048), "logits": fc_audioset (B, 527)}``
  (logits before the sigmoid; audioldm_eval's FD uses "2048", KL and IS the logits).
- :class:`VGGish`, Hershey et al. 2017 (arXiv 1609.09430), the torch port
  https://github.com/harritaylor/torchvggish (``vggish-10086976.pth``): 0.96-s log-mel examples
  (96 frames x 64 bands) -> 128-d, *without* PCA post-processing and without the final ReLU, as the
  Fréchet Audio Distance tools use it (Kilgour et al. 2019). Output (B, examples, 128).

:func:`load_embedder` reads ``.safetensors`` or a ``torch.load(weights_only=True)`` file (a plain state
dict or PANNs' ``{"model": state_dict}``), recognises the architecture from the keys, and checks every
key and shape. :func:`save_embedder` writes safetensors (how tests build tiny random ones).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn
from torch.nn import functional as F

from fourfold.nn.modeling import CheckpointError, check_state_dict, load_safetensors_checked

__all__ = [
    "Cnn14Config",
    "PANNsCnn14",
    "VGGish",
    "VGGishConfig",
    "load_embedder",
    "save_embedder",
    "vggish_log_mel",
]


# PANNs CNN14


@dataclass
class Cnn14Config:
    """CNN14 at audioldm_eval's 16 kHz setting; ``widths`` shrink it for tests (official: 64..2048)."""

    sample_rate: int = 16000
    window_size: int = 512  # n_fft = win_length, Hann, centred with reflect padding (torchlibrosa)
    hop_size: int = 160
    mel_bins: int = 64
    fmin: float = 50.0
    fmax: float = 8000.0
    classes: int = 527  # AudioSet
    widths: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # the six conv blocks
    amin: float = 1e-10  # torchlibrosa's floor inside 10·log10

    def __post_init__(self) -> None:
        if len(self.widths) != 6:
            raise ValueError(f"widths must name the 6 conv blocks' channels, got {self.widths}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got {self.fmin}, {self.fmax}")


class _ConvBlock(nn.Module):
    """PANNs ConvBlock: (conv3x3 - BN - ReLU) x2, then average pooling."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool)


class _Stft(nn.Module):
    """torchlibrosa's ``STFT`` as a strided Conv1d over DFT kernels (buffers named as in its state dict)."""

    def __init__(self, n_fft: int):
        super().__init__()
        import librosa

        window = librosa.util.pad_center(librosa.filters.get_window("hann", n_fft, fftbins=True), size=n_fft)
        n = np.arange(n_fft)
        k = np.arange(n_fft // 2 + 1)
        angle = 2 * np.pi * np.outer(k, n) / n_fft  # exp(-i angle): DFT row k
        self.conv_real = nn.Conv1d(1, len(k), n_fft, bias=False)
        self.conv_imag = nn.Conv1d(1, len(k), n_fft, bias=False)
        with torch.no_grad():
            self.conv_real.weight.copy_(torch.from_numpy(np.cos(angle) * window)[:, None])
            self.conv_imag.weight.copy_(torch.from_numpy(-np.sin(angle) * window)[:, None])
        self.requires_grad_(False)


class PANNsCnn14(nn.Module):
    """CNN14 audio tagger. ``wav`` (B, samples) at ``sample_rate`` -> {"2048": (B, W6), "logits": (B, classes)}.

    Front end (torchlibrosa, as trained): centred reflect-padded STFT (Hann ``window_size``), power
    spectrogram, Slaney mel filters (``librosa.filters.mel``), ``10·log10(max(x, amin))``. Then ``bn0``
    over mel bins, six conv blocks (2x2 average pooling, the last 1x1), mean over frequency, max + mean
    over time, ``fc1`` + ReLU = the 2048-d embedding, ``fc_audioset`` = logits. Eval mode only matters for
    BatchNorm/dropout; call ``.eval()``.
    """

    def __init__(self, config: Cnn14Config | None = None):
        super().__init__()
        import librosa

        self.config = c = config or Cnn14Config()
        self.hop = c.hop_size
        self.spectrogram_extractor = nn.Module()
        self.spectrogram_extractor.stft = _Stft(c.window_size)
        self.logmel_extractor = nn.Module()
        mel = librosa.filters.mel(
            sr=c.sample_rate, n_fft=c.window_size, n_mels=c.mel_bins, fmin=c.fmin, fmax=c.fmax
        )
        self.logmel_extractor.melW = nn.Parameter(torch.from_numpy(mel.T).float(), requires_grad=False)
        self.bn0 = nn.BatchNorm2d(c.mel_bins)
        widths = (1, *c.widths)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(c.widths[-1], c.widths[-1])
        self.fc_audioset = nn.Linear(c.widths[-1], c.classes)

    def log_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 1, frames, mel_bins) in dB (frames = samples // hop + 1)."""
        stft = self.spectrogram_extractor.stft
        pad = self.config.window_size // 2
        x = F.pad(wav.float()[:, None], (pad, pad), mode="reflect")
        re = F.conv1d(x, stft.conv_real.weight, stride=self.hop)
        im = F.conv1d(x, stft.conv_imag.weight, stride=self.hop)
        power = rearrange(re**2 + im**2, "b f t -> b 1 t f")
        mel = power @ self.logmel_extractor.melW
        return 10.0 * torch.log10(mel.clamp_min(self.config.amin))

    def forward(self, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        if wav.ndim != 2:
            raise ValueError(f"PANNsCnn14 expects (batch, samples), got {tuple(wav.shape)}")
        x = self.log_mel(wav)  # (B, 1, T, M)
        x = rearrange(self.bn0(rearrange(x, "b 1 t m -> b m t 1")), "b m t 1 -> b 1 t m")
        for i in range(1, 7):
            x = getattr(self, f"conv_block{i}")(x, (2, 2) if i < 6 else (1, 1))
        x = x.mean(dim=3)  # over frequency -> (B, C, T)
        x = x.amax(dim=2) + x.mean(dim=2)
        emb = F.relu(self.fc1(x))
        return {"2048": emb, "logits": self.fc_audioset(emb)}


# VGGish


@dataclass
class VGGishConfig:
    """VGGish input and network sizes; ``widths``/``hidden`` shrink it for tests (official shown)."""

    sample_rate: int = 16000
    window_seconds: float = 0.025  # STFT window 400 samples, periodic Hann, rfft length 512
    hop_seconds: float = 0.010
    mel_bins: int = 64
    fmin: float = 125.0
    fmax: float = 7500.0
    log_offset: float = 0.01  # log(mel + 0.01)
    example_frames: int = 96  # 0.96 s per example, hop 0.96 s (no overlap)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    hidden: int = 4096
    dim: int = 128

    def __post_init__(self) -> None:
        if len(self.widths) != 4:
            raise ValueError(f"widths must give the 4 conv stages' channels, got {self.widths}")
        if self.example_frames % 16 or self.mel_bins % 16:
            raise ValueError("example_frames and mel_bins must be multiples of 16 (four 2x2 poolings)")


def _hz_to_mel_htk(hz: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + hz / 700.0)


def _vggish_mel_matrix(c: VGGishConfig, n_bins: int) -> np.ndarray:
    """VGGish's own mel matrix (mel_features.spectrogram_to_mel_matrix): HTK mel, triangles in mel space,
    no area normalisation, DC bin zeroed. (n_bins, mel_bins)."""
    bins_mel = _hz_to_mel_htk(np.linspace(0.0, c.sample_rate / 2, n_bins))
    edges = np.linspace(_hz_to_mel_htk(np.array(c.fmin)), _hz_to_mel_htk(np.array(c.fmax)), c.mel_bins + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    lo = (bins_mel[:, None] - lower) / (centre - lower)
    hi = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(lo, hi))
    weights[0, :] = 0.0
    return weights


def vggish_log_mel(wav: np.ndarray | torch.Tensor, c: VGGishConfig | None = None) -> torch.Tensor:
    """One 16-kHz waveform (samples,) -> examples (E, 1, 96, 64), as vggish_input.waveform_to_examples.

    Frames without padding (1 + (n - 400) // 160), |rfft_512(frame · periodic Hann)|, mel, log(x + 0.01),
    then non-overlapping 96-frame examples (a partial last example is dropped). Clips shorter than one
    example raise.
    """
    c = c or VGGishConfig()
    x = torch.as_tensor(np.asarray(wav), dtype=torch.float64).flatten()
    win = round(c.window_seconds * c.sample_rate)
    hop = round(c.hop_seconds * c.sample_rate)
    n_fft = 1 << (win - 1).bit_length()
    if x.numel() < win:
        raise ValueError(f"VGGish needs at least {win} samples, got {x.numel()}")
    frames = x.unfold(0, win, hop)  # (T, win)
    window = 0.5 - 0.5 * torch.cos(2 * torch.pi * torch.arange(win, dtype=torch.float64) / win)
    mag = torch.fft.rfft(frames * window, n=n_fft).abs()
    mel = mag @ torch.from_numpy(_vggish_mel_matrix(c, n_fft // 2 + 1))
    logmel = torch.log(mel + c.log_offset)
    n_ex = (logmel.shape[0] - c.example_frames) // c.example_frames + 1
    if n_ex < 1:
        raise ValueError(
            f"VGGish needs at least {c.example_frames} frames ({c.example_frames * c.hop_seconds:.2f} s), "
            f"got {logmel.shape[0]}"
        )
    ex = logmel[: n_ex * c.example_frames].reshape(n_ex, c.example_frames, c.mel_bins)
    return ex[:, None].float()


class VGGish(nn.Module):
    """VGGish: ``wav`` (B, samples) at 16 kHz -> (B, examples, 128); :meth:`embed_examples` takes
    (E, 1, 96, 64) log-mel examples -> (E, 128). Keys as torchvggish (``features.N``, ``embeddings.N``)."""

    def __init__(self, config: VGGishConfig | None = None):
        super().__init__()
        self.config = c = config or VGGishConfig()
        w = c.widths
        plan = [w[0], "M", w[1], "M", w[2], w[2], "M", w[3], w[3], "M"]
        layers: list[nn.Module] = []
        cin = 1
        for v in plan:  # torchvggish make_layers: same indices, so the official keys match
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)
        flat = w[3] * (c.example_frames // 16) * (c.mel_bins // 16)
        # the official head ends Linear-ReLU; FAD drops that last ReLU, so it is not here
        self.embeddings = nn.Sequential(
            nn.Linear(flat, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.dim)
        )  # fmt: skip

    def embed_examples(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)  # (E, C, 6, 4)
        x = rearrange(x, "e c h w -> e (h w c)")  # TensorFlow's channels-last flattening order
        return self.embeddings(x)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 2:
            raise ValueError(f"VGGish expects (batch, samples), got {tuple(wav.shape)}")
        return torch.stack(
            [self.embed_examples(vggish_log_mel(w.cpu(), self.config).to(wav.device)) for w in wav]
        )


# loading


_KINDS = {"cnn14": (PANNsCnn14, Cnn14Config), "vggish": (VGGish, VGGishConfig)}


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        return load_safetensors_checked(path)
    if not path.is_file():
        raise CheckpointError(f"missing weights file: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a weights-only torch file ({type(err).__name__}: {err})") from err
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # PANNs checkpoints: {"model": state_dict, ...}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return obj


def _infer_config(kind: str, state: dict[str, torch.Tensor]):
    """Sizes from the weights, so tiny test embedders and the official ones load through one path."""
    if kind == "cnn14":
        widths = tuple(int(state[f"conv_block{i}.conv1.weight"].shape[0]) for i in range(1, 7))
        return Cnn14Config(
            mel_bins=int(state["bn0.weight"].shape[0]),
            window_size=int(state["spectrogram_extractor.stft.conv_real.weight"].shape[-1]),
            classes=int(state["fc_audioset.weight"].shape[0]),
            widths=widths,
        )
    convs = sorted(
        {int(k.split(".")[1]) for k in state if k.startswith("features.") and k.endswith(".weight")}
    )
    widths = [int(state[f"features.{i}.weight"].shape[0]) for i in convs]
    return VGGishConfig(
        widths=(widths[0], widths[1], widths[2], widths[4]),
        hidden=int(state["embeddings.0.weight"].shape[0]),
        dim=int(state["embeddings.4.weight"].shape[0]),
    )


def load_embedder(path: str | Path, kind: str | None = None, config=None) -> nn.Module:
    """A :class:`PANNsCnn14` or :class:`VGGish` with weights from ``path``, in eval mode.

    ``path``: a weights file (``.safetensors``, ``.pt``, ``.pth``) or a folder with ``model.safetensors``
    (+ optional ``config.json`` written by :func:`save_embedder`). ``kind`` ("cnn14" | "vggish") is
    inferred from the keys when omitted. A missing/extra key or shape mismatch raises
    :class:`CheckpointError` naming them (BatchNorm's ``num_batches_tracked`` may be absent).
    """
    path = Path(path)
    meta = {}
    if path.is_dir():
        if (path / "config.json").is_file():
            meta = json.loads((path / "config.json").read_text())
        path = path / "model.safetensors"
    state = _read_state(path)
    if kind is None:
        kind = meta.get("kind") or (
            "cnn14" if "fc_audioset.weight" in state else "vggish" if "embeddings.0.weight" in state else None
        )
    if kind not in _KINDS:
        raise CheckpointError(
            f"{path}: cannot tell the embedder (expected PANNs CNN14 keys such as fc_audioset.weight or "
            f"VGGish keys such as embeddings.0.weight); pass kind= 'cnn14' or 'vggish'"
        )
    cls, cfg_cls = _KINDS[kind]
    if config is None and "config" in meta:
        fields = meta["config"]
        config = cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    try:
        config = config or _infer_config(kind, state)
    except KeyError as err:
        raise CheckpointError(f"{path}: {kind} weights lack key {err}") from err
    model = cls(config)
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked") or k in expected}
    check_state_dict(
        {k: v for k, v in expected.items() if k not in optional or k in state}, state, source=str(path)
    )
    model.load_state_dict(state, strict=False)
    return model.eval()


def save_embedder(model: PANNsCnn14 | VGGish, out_dir: str | Path) -> Path:
    """``out_dir/model.safetensors`` + ``config.json`` (kind and sizes), written atomically."""
    from safetensors.torch import save_file

    from fourfold.nn.modeling import atomic_write_dir

    kind = "cnn14" if isinstance(model, PANNsCnn14) else "vggish"
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}

    def write(tmp: Path) -> None:
        (tmp / "config.json").write_text(
            json.dumps({"kind": kind, "config": dataclasses.asdict(model.config)})
        )
        save_file(state, str(tmp / "model.safetensors"))

    return atomic_write_dir(out_dir, write)
