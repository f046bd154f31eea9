"""Audio and video file I/O: soundfile for wav/flac/ogg, soxr for resampling, PyAV for video.

Array conventions used everywhere in :mod:`fourfold.audio`:

- audio is ``float32`` numpy, ``(samples,)`` when mono, ``(channels, samples)`` otherwise;
- video frames are ``uint8`` numpy ``(frames, height, width, 3)`` in RGB.

Every writer goes through a temp file in the target's directory followed by ``os.replace``, so a
crash never leaves half a file behind and an existing file is only replaced by a complete one.
Bad input (missing, unreadable, empty or silent file) raises :class:`AudioError` naming the file.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = [
    "AudioError",
    "VideoError",
    "ensure_mono",
    "frame_times",
    "load_audio",
    "mux_audio",
    "read_video",
    "resample",
    "sample_frames",
    "save_audio",
    "write_video",
]


class AudioError(ValueError):
    """An audio file or array cannot be used; the message names the file and the problem."""


class VideoError(ValueError):
    """A video file or frame array cannot be used; the message names the file and the problem."""


# helpers


@contextmanager
def _atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path`` (same suffix, so encoders pick the same format); rename on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.stem}-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _as_numpy(wav) -> np.ndarray:
    if hasattr(wav, "detach"):  # torch tensor, without importing torch here
        wav = wav.detach().cpu().numpy()
    return np.asarray(wav, dtype=np.float32)


def ensure_mono(wav: np.ndarray) -> np.ndarray:
    """``(samples,)`` or ``(channels, samples)`` -> ``(samples,)`` by averaging channels."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        return wav
    if wav.ndim == 2:
        return wav.mean(axis=0)
    raise AudioError(f"expected audio of shape (samples,) or (channels, samples), got {wav.shape}")


def resample(wav: np.ndarray, orig_sr: int, target_sr: int, quality: str = "HQ") -> np.ndarray:
    """Resample with soxr. ``wav``: ``(samples,)`` or ``(channels, samples)``; returns the same layout, float32."""
    wav = _as_numpy(wav)
    if orig_sr <= 0 or target_sr <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    if orig_sr == target_sr:
        return wav
    import soxr

    if wav.ndim == 1:
        return soxr.resample(wav, orig_sr, target_sr, quality=quality).astype(np.float32)
    if wav.ndim == 2:  # soxr wants (samples, channels)
        out = soxr.resample(np.ascontiguousarray(wav.T), orig_sr, target_sr, quality=quality)
        return np.ascontiguousarray(out.T, dtype=np.float32)
    raise AudioError(f"expected audio of shape (samples,) or (channels, samples), got {wav.shape}")


# audio files


_CONTAINER_SUFFIXES = {".mp4", ".m4a", ".aac", ".webm", ".mkv", ".mov", ".avi"}


def _read_audio_with_av(path: Path) -> tuple[np.ndarray, int]:
    """First audio stream of a container as ``(samples, channels)`` float32 and its rate."""
    import av

    try:
        container = av.open(str(path))
    except Exception as err:
        raise AudioError(f"cannot decode audio file {path}: {err}") from err
    try:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio stream")
        try:
            audio, sr = _decode_audio_stream(container, path)
        except VideoError as err:
            raise AudioError(str(err)) from err
    finally:
        container.close()
    return np.ascontiguousarray(audio.T), sr


def load_audio(
    path: str | os.PathLike,
    sr: int | None = None,
    mono: bool = True,
    *,
    allow_silent: bool = False,
) -> tuple[np.ndarray, int]:
    """Read a wav/flac/ogg/mp3 file with soundfile (m4a/mp4/webm/... through PyAV).

    Returns ``(audio, sample_rate)`` with ``audio`` float32 in [-1, 1]: ``(samples,)`` when ``mono``
    (channels averaged), else ``(channels, samples)``. ``sr`` resamples with soxr; ``None`` keeps the file's.

    Raises :class:`AudioError` for a missing, unreadable or empty file, and for an all-zero (silent)
    file unless ``allow_silent`` (silence makes peak normalisation and loudness curves meaningless).
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError / TypeError by format
        if path.suffix.lower() not in _CONTAINER_SUFFIXES:
            raise AudioError(f"cannot decode audio file {path}: {err}") from err
        data, file_sr = _read_audio_with_av(path)  # m4a / mp4 / webm ...: libsndfile cannot open these
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} is empty (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    if not allow_silent and not np.any(data):
        raise AudioError(
            f"audio file {path} is silent (all samples are zero); pass allow_silent=True to accept it"
        )
    audio = np.ascontiguousarray(data.T)  # (channels, samples)
    if mono:
        audio = audio.mean(axis=0)
    if sr is not None and sr != file_sr:
        audio = resample(audio, file_sr, sr)
        file_sr = sr
    return audio.astype(np.float32, copy=False), int(file_sr)


def save_audio(path: str | os.PathLike, wav, sr: int, *, subtype: str | None = None) -> Path:
    """Write ``wav`` (``(samples,)`` or ``(channels, samples)``, numpy or torch) atomically.

    The format follows the suffix (``.wav``, ``.flac``, ``.ogg``). Samples are clipped to [-1, 1] so
    integer formats never wrap around. ``subtype`` is soundfile's (default PCM_16 for wav/flac).
    """
    import soundfile as sf

    audio = _as_numpy(wav)
    if audio.ndim not in (1, 2) or audio.shape[-1] == 0:
        raise AudioError(
            f"cannot write {path}: expected (samples,) or (channels, samples), got {audio.shape}"
        )
    if not np.isfinite(audio).all():
        raise AudioError(f"cannot write {path}: audio contains NaN or infinite samples")
    data = np.clip(audio, -1.0, 1.0)
    data = data if data.ndim == 1 else data.T  # soundfile wants (samples, channels)
    path = Path(path)
    with _atomic_path(path) as tmp:
        sf.write(str(tmp), data, int(sr), subtype=subtype)
    return path


# video files


def _open_video(path: Path):
    import av

    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    try:
        return av.open(str(path))
    except Exception as err:  # av.error.InvalidDataError and friends
        raise VideoError(f"cannot open video file {path}: {err}") from err


def _decode_audio_stream(container, path: Path) -> tuple[np.ndarray, int]:
    """All audio of the first audio stream as float32 ``(channels, samples)`` and its rate."""
    import av

    stream = container.streams.audio[0]
    rate = stream.rate or stream.codec_context.sample_rate
    resampler = av.AudioResampler(
        format="fltp", layout=stream.layout.name if stream.layout else None, rate=rate
    )
    chunks = []
    try:
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    except Exception as err:
        raise VideoError(f"cannot decode the audio stream of {path}: {err}") from err
    if not chunks:
        return np.zeros((1, 0), np.float32), int(rate)
    audio = np.concatenate(chunks, axis=1).astype(np.float32)
    if stream.duration and stream.time_base:  # drop the AAC frame padding past the stream's true length
        audio = audio[:, : round(float(stream.duration * stream.time_base) * rate)]
    return audio, int(rate)


def read_video(
    path: str | os.PathLike, *, with_audio: bool = True, mono: bool = True
) -> tuple[np.ndarray, float, np.ndarray | None, int | None]:
    """Decode a video file with PyAV.

    Returns ``(frames, fps, audio, sr)``: ``frames`` uint8 ``(F, H, W, 3)`` RGB; ``fps`` the stream's
    average rate; ``audio`` float32 ``(samples,)`` (``mono``) or ``(channels, samples)``, ``None`` when
    the file has no audio stream or ``with_audio`` is false, with its rate ``sr``.
    """
    path = Path(path)
    container = _open_video(path)
    try:
        if not container.streams.video:
            raise VideoError(f"{path} has no video stream")
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate or vstream.guessed_rate or 0.0)
        try:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(vstream)]
        except Exception as err:
            raise VideoError(f"cannot decode the video stream of {path}: {err}") from err
        if not frames:
            raise VideoError(f"{path} has a video stream with no decodable frames")
        audio = sr = None
        if with_audio and container.streams.audio:
            container.seek(0)
            audio, sr = _decode_audio_stream(container, path)
            if mono:
                audio = ensure_mono(audio)
    finally:
        container.close()
    if fps <= 0:
        raise VideoError(f"{path}: cannot determine the frame rate")
    return np.stack(frames), fps, audio, sr


def frame_times(duration: float, fps: float) -> np.ndarray:
    """Timestamps ``k / fps`` (seconds) of every frame sampled from a clip of ``duration`` seconds.

    ``ceil(duration * fps)`` frames: a 10.24 s clip at 8 fps gives 82 (Draw an Audio §2.2).
    """
    count = max(1, math.ceil(duration * fps - 1e-9))
    return np.arange(count, dtype=np.float64) / fps


def sample_frames(
    frames: np.ndarray, src_fps: float, target_fps: float, duration: float | None = None
) -> np.ndarray:
    """Resample frames by timestamp: ``(F, H, W, C)`` at ``src_fps`` -> ``(F', H, W, C)`` at ``target_fps``.

    Target frame k shows the source frame on screen at ``t = k / target_fps`` (index ``floor(t·src_fps)``,
    clamped to the last frame), so any source frame rate maps to the same clock.
    ``duration`` defaults to ``F / src_fps``.
    """
    if src_fps <= 0 or target_fps <= 0:
        raise VideoError(f"frame rates must be positive, got {src_fps} -> {target_fps}")
    duration = frames.shape[0] / src_fps if duration is None else duration
    idx = np.floor(frame_times(duration, target_fps) * src_fps + 1e-6).astype(np.int64)
    return frames[np.clip(idx, 0, frames.shape[0] - 1)]


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _prepare_aac(container, audio, sr: int, max_samples: int | None):
    """Add an AAC stream for ``audio`` (``(samples,)`` or ``(channels≤2, samples)``) to ``container``.

    Returns ``(stream, audio (channels, samples) float32)``. Streams must all exist before the first
    packet is muxed (the header is written then), so this runs before any video packet.
    """
    audio = _as_numpy(audio)
    audio = audio[None] if audio.ndim == 1 else audio
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or audio.shape[1] == 0:
        raise AudioError(f"audio to mux must be (samples,) or (1|2, samples), got {audio.shape}")
    if not np.isfinite(audio).all():
        raise AudioError("audio to mux contains NaN or infinite samples")
    if max_samples is not None:
        audio = audio[:, :max_samples]
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    stream = container.add_stream("aac", rate=int(sr), layout=layout)
    return stream, audio


def _encode_aac(container, stream, audio: np.ndarray, sr: int) -> None:
    import av

    layout = "mono" if audio.shape[0] == 1 else "stereo"
    chunk = 1024  # AAC frame size
    for start in range(0, audio.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio[:, start : start + chunk]), format="fltp", layout=layout
        )
        frame.sample_rate = int(sr)
        frame.pts = start
        frame.time_base = Fraction(1, int(sr))
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    audio: np.ndarray | None = None,
    sr: int | None = None,
    codec: str = "libx264",
    crf: int = 18,
) -> Path:
    """Encode ``frames`` uint8 ``(F, H, W, 3)`` RGB at ``fps`` to ``path`` atomically (mp4: H.264 yuv420p).

    Height and width must be even (yuv420p). Optional ``audio`` with ``sr`` is added as AAC, cut to
    the video's length.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise VideoError(f"cannot write {path}: frames must be (F, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise VideoError(f"cannot write {path}: frames must be uint8, got {frames.dtype}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise VideoError(f"cannot write {path}: yuv420p needs even height and width, got {height}x{width}")
    if audio is not None and not sr:
        raise AudioError(f"cannot write {path}: audio given without its sample rate sr")
    path = Path(path)
    with _atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf)}
        if audio is not None:
            astream, audio = _prepare_aac(container, audio, int(sr), round(frames.shape[0] / fps * sr))
        for image in frames:
            for packet in stream.encode(
                av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            ):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio is not None:
            _encode_aac(container, astream, audio, int(sr))
    return path


def mux_audio(video_in: str | os.PathLike, audio, sr: int, out_path: str | os.PathLike) -> Path:
    """Copy ``video_in``'s video stream (no re-encode) into ``out_path`` and add ``audio`` as AAC.

    ``audio``: ``(samples,)`` or ``(channels≤2, samples)`` at ``sr``; it is cut to the video's length
    (frame count / fps), and any audio already in ``video_in`` is dropped. Written atomically, so
    ``out_path`` may equal ``video_in``.
    """
    import av

    video_in = Path(video_in)
    source = _open_video(video_in)
    try:
        if not source.streams.video:
            raise VideoError(f"{video_in} has no video stream")
        vin = source.streams.video[0]
        fps = float(vin.average_rate or vin.guessed_rate or 0.0)
        n_frames = vin.frames or sum(1 for _ in source.decode(vin))
        if fps <= 0 or n_frames == 0:
            raise VideoError(f"{video_in}: cannot determine frame rate / frame count")
        source.seek(0)
        with _atomic_path(out_path) as tmp, av.open(str(tmp), mode="w") as out:
            vout = out.add_stream_from_template(vin)
            astream, audio = _prepare_aac(out, audio, int(sr), round(n_frames / fps * sr))
            for packet in source.demux(vin):
                if packet.dts is None:  # the demuxer's flush packet
                    continue
                packet.stream = vout
                out.mux(packet)
            _encode_aac(out, astream, audio, int(sr))
    finally:
        source.close()
    return Path(out_path)
