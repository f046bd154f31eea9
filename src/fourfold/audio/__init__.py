"""Audio building blocks: file/video I/O, log-mel front ends, Griffin-Lim, loudness curves, onsets,
vocoders and the mel VAE.

Submodules: :mod:`~fourfold.audio.io`, :mod:`~fourfold.audio.mel`, :mod:`~fourfold.audio.loudness`,
:mod:`~fourfold.audio.onset`, :mod:`~fourfold.audio.vocoder`, :mod:`~fourfold.audio.gan` (HiFi-GAN
discriminators, losses, Trainer-ready training module), :mod:`~fourfold.audio.vae`. The light ones are
re-exported here; vocoders, GAN and VAE (which pull in diffusers/transformers) are imported from their modules.
"""

from fourfold.audio.io import (
    AudioError,
    VideoError,
    ensure_mono,
    frame_times,
    load_audio,
    mux_audio,
    read_video,
    resample,
    sample_frames,
    save_audio,
    write_video,
)
from fourfold.audio.loudness import LoudnessCurve, LoudnessError, loudness_curve, loudness_db
from fourfold.audio.mel import (
    MelConfig,
    MelSpectrogram,
    griffin_lim,
    image_to_mel,
    mel_filters,
    mel_spectrogram,
    mel_to_image,
    mel_to_linear,
)
from fourfold.audio.onset import detect_onsets, match_onsets, onset_strength

__all__ = [
    "AudioError",
    "LoudnessCurve",
    "LoudnessError",
    "MelConfig",
    "MelSpectrogram",
    "VideoError",
    "detect_onsets",
    "ensure_mono",
    "frame_times",
    "griffin_lim",
    "image_to_mel",
    "load_audio",
    "loudness_curve",
    "loudness_db",
    "match_onsets",
    "mel_filters",
    "mel_spectrogram",
    "mel_to_image",
    "mel_to_linear",
    "mux_audio",
    "onset_strength",
    "read_video",
    "resample",
    "sample_frames",
    "save_audio",
    "write_video",
]
