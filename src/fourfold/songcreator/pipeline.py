"""``SongCreatorPipeline``: lyrics/prompts/tracks in, song + stems out (spec §1), one method per task.

Named steps: :meth:`encode_inputs` (audio -> semantic codes, seconds -> frames), :meth:`plan`
(the task's stream layout), :meth:`sample` (DSLM), :meth:`render` (codes -> audio, edits spliced).

Audio inputs are a path or ``(wav, sr)`` (encoded by the BEST-RQ tokenizer), a 1-D tensor of codes, or
``{"codes": codes, "audio": (wav, sr)}`` (codes for the LM, the waveform kept outside an edited span). Saved layout (one folder, written atomically)::

    DIR/pipeline.json       {"format", "dslm", "renderer": class name | null, "tokenizer": class name | null}
    DIR/lyrics_vocab.json   the lyrics front end (backend, character table)
    DIR/dslm/               DSLM config.json + model.safetensors
    DIR/renderer/           optional: TokenMelRenderer | CentroidRenderer | LatentDiffusionRenderer
    DIR/tokenizer/          optional: BEST-RQ + VQ (SemanticTokenizer); the weight-free
                            ProceduralLabelTokenizer is only named in pipeline.json
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fourfold.nn.modeling import CheckpointError, atomic_write_dir
from fourfold.songcreator.dslm import DSLM
from fourfold.songcreator.layout import plan_generation, run_plan
from fourfold.songcreator.lyrics import LyricsFrontend
from fourfold.songcreator.tasks import get_task

__all__ = ["PIPELINE_FORMAT", "SHIPPED_PIPELINE", "SongCreatorPipeline", "SongOutput"]

PIPELINE_FORMAT = "fourfold-songcreator-pipeline/1"
# Trained on procedural songs by the demo; remade by the command in its README.md.
SHIPPED_PIPELINE = Path(__file__).parent / "checkpoints" / "procedural-tiny"


def _renderer_classes() -> dict:
    from fourfold.songcreator.ldm_renderer import LatentDiffusionRenderer
    from fourfold.songcreator.renderer import CentroidRenderer, TokenMelRenderer

    return {c.__name__: c for c in (TokenMelRenderer, CentroidRenderer, LatentDiffusionRenderer)}


@dataclass
class SongOutput:
    """Waveforms ``(samples,)`` float32 (``None`` where not produced or without a renderer) and codes."""

    song: np.ndarray | None
    vocals: np.ndarray | None
    accompaniment: np.ndarray | None
    tokens: dict[str, torch.Tensor]
    sample_rate: int | None


class SongCreatorPipeline:
    def __init__(self, dslm: DSLM, frontend: LyricsFrontend, *, tokenizer=None, renderer=None):
        if frontend.vocab_size > dslm.config.lyrics_vocab_size:
            raise ValueError(
                f"lyrics front end has {frontend.vocab_size} tokens > DSLM lyrics_vocab_size {dslm.config.lyrics_vocab_size}"
            )
        self.dslm, self.frontend, self.tokenizer, self.renderer = dslm.eval(), frontend, tokenizer, renderer

    # persistence

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write everything generation needs into ``directory`` atomically (see :data:`PIPELINE_LAYOUT`)."""
        parts: dict = {"format": PIPELINE_FORMAT, "dslm": "dslm", "renderer": None, "tokenizer": None}

        def write(tmp: Path) -> None:
            self.dslm.save_pretrained(tmp / "dslm")
            self.frontend.save(tmp)
            if self.renderer is not None:
                self.renderer.save_pretrained(tmp / "renderer")
                parts["renderer"] = type(self.renderer).__name__
            if self.tokenizer is not None:
                if hasattr(self.tokenizer, "save_pretrained"):
                    self.tokenizer.save_pretrained(tmp / "tokenizer")
                parts["tokenizer"] = type(self.tokenizer).__name__
            (tmp / "pipeline.json").write_text(json.dumps(parts, indent=1) + "\n")

        return atomic_write_dir(directory, write)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> SongCreatorPipeline:
        """Load a folder written by :meth:`save_pretrained`; a missing or partial folder raises
        :class:`~fourfold.nn.modeling.CheckpointError` naming the missing part."""
        d = Path(directory)
        if not d.is_dir():
            raise CheckpointError(f"{d}: no such SongCreator pipeline directory")
        if not (d / "pipeline.json").is_file():
            raise CheckpointError(f"{d}: not a SongCreator pipeline (missing pipeline.json)")
        try:
            parts = json.loads((d / "pipeline.json").read_text())
            if not isinstance(parts, dict):
                raise ValueError("not a JSON object")
        except ValueError as err:
            raise CheckpointError(f"{d / 'pipeline.json'}: unreadable ({err})") from err
        for sub, needed in (("dslm", True), ("renderer", bool(parts.get("renderer")))):
            if needed and not (d / sub / "config.json").is_file():
                raise CheckpointError(f"{d}: partial pipeline, missing {d / sub / 'config.json'}")
        renderer = None
        if parts.get("renderer"):
            kinds = _renderer_classes()
            if parts["renderer"] not in kinds:
                raise CheckpointError(
                    f"{d / 'pipeline.json'}: unknown renderer {parts['renderer']!r} (known: {sorted(kinds)})"
                )
            renderer = kinds[parts["renderer"]].from_pretrained(d / "renderer")
        tokenizer = None
        if parts.get("tokenizer") == "SemanticTokenizer":
            from fourfold.songcreator.bestrq import SemanticTokenizer

            if not (d / "tokenizer").is_dir():
                raise CheckpointError(f"{d}: partial pipeline, missing {d / 'tokenizer'}")
            tokenizer = SemanticTokenizer.from_pretrained(d / "tokenizer")
        elif parts.get("tokenizer") == "ProceduralLabelTokenizer":
            from fourfold.songcreator.oracle import ProceduralLabelTokenizer

            tokenizer = ProceduralLabelTokenizer()
        elif parts.get("tokenizer"):
            raise CheckpointError(f"{d / 'pipeline.json'}: unknown tokenizer {parts['tokenizer']!r}")
        dslm = DSLM.from_pretrained(d / "dslm")
        if renderer is not None and renderer.config.codebook_size != dslm.config.codebook_size:
            raise CheckpointError(
                f"{d}: renderer has {renderer.config.codebook_size} codes but the DSLM {dslm.config.codebook_size}"
            )
        return cls(dslm, LyricsFrontend.load(d), tokenizer=tokenizer, renderer=renderer)

    @classmethod
    def shipped(cls) -> SongCreatorPipeline:
        """The trained procedural-tiny pipeline shipped with the package (:data:`SHIPPED_PIPELINE`)."""
        return cls.from_pretrained(SHIPPED_PIPELINE)

    # steps

    @property
    def token_rate(self) -> float:
        return self.dslm.config.token_rate

    @property
    def sample_rate(self) -> int | None:
        return self.renderer.config.sample_rate if self.renderer is not None else None

    def _codes(self, x, name: str) -> torch.Tensor | None:
        if x is None:
            return None
        if isinstance(x, dict):  # {"codes": (t,), "audio": (wav, sr)}: codes for the LM, audio for splicing
            return torch.as_tensor(x["codes"]).flatten().long()
        if isinstance(x, torch.Tensor) and x.dtype in (torch.int64, torch.int32):
            return x.flatten().long()
        if self.tokenizer is None or not hasattr(self.tokenizer, "encode"):
            raise ValueError(
                f"{name}: audio input needs a BEST-RQ tokenizer; this pipeline has "
                f"{type(self.tokenizer).__name__ if self.tokenizer is not None else 'none'} and takes codes only "
                "(a 1-D LongTensor, or a .safetensors file with a 'codes' tensor on the CLI)"
            )
        if isinstance(x, (str, os.PathLike)):
            from fourfold.audio.io import load_audio

            wav, sr = load_audio(x)
        else:
            wav, sr = x
        return self.tokenizer.encode(torch.as_tensor(np.asarray(wav), dtype=torch.float32), sr)[0]

    def encode_inputs(self, **inputs) -> dict:
        out = {
            k: self._codes(inputs.get(k), k)
            for k in ("vocals", "accompaniment", "song", "vocal_prompt", "accompaniment_prompt")
        }
        lyrics = inputs.get("lyrics")
        if (
            isinstance(lyrics, (str, os.PathLike))
            and Path(str(lyrics)).suffix in (".lrc", ".txt")
            and Path(str(lyrics)).is_file()
        ):
            lyrics = Path(str(lyrics)).read_text(encoding="utf-8")
        out["lyrics"] = self.frontend.encode(lyrics, truncate=False)
        return out

    def plan(self, task_name: str, codes: dict, span_s: tuple[float, float] | None):
        task = get_task(task_name)
        span = None
        if span_s is not None:
            s, e = span_s
            if not 0 <= s < e:
                raise ValueError(f"span {span_s} must satisfy 0 <= start < end (seconds)")
            span = (
                round(s * self.token_rate),
                max(round(s * self.token_rate) + 1, round(e * self.token_rate)),
            )
        return plan_generation(
            self.dslm.config,
            task,
            vocals=codes["vocals"],
            accompaniment=codes["accompaniment"],
            song=codes["song"],
            vocal_prompt=codes["vocal_prompt"],
            accompaniment_prompt=codes["accompaniment_prompt"],
            span=span,
        )

    def render(self, tokens: torch.Tensor | None, kind: str) -> np.ndarray | None:
        if tokens is None or self.renderer is None or len(tokens) == 0:
            return None
        return self.renderer.render(tokens[None], kind)[0].numpy()

    # the entry point

    @torch.no_grad()
    def generate(
        self,
        task: str,
        *,
        lyrics=None,
        vocals=None,
        accompaniment=None,
        song=None,
        vocal_prompt=None,
        accompaniment_prompt=None,
        span: tuple[float, float] | None = None,
        seed: int = 0,
        top_k: int = 50,
        temperature: float = 0.9,
        max_seconds: float = 30.0,
        use_cache: bool = True,
    ) -> SongOutput:
        """Run ``task`` (a :data:`~fourfold.songcreator.tasks.TASKS` name); ``span`` in seconds for edits."""
        codes = self.encode_inputs(
            lyrics=lyrics,
            vocals=vocals,
            accompaniment=accompaniment,
            song=song,
            vocal_prompt=vocal_prompt,
            accompaniment_prompt=accompaniment_prompt,
        )
        plan = self.plan(task, codes, span)
        cfg = self.dslm.config
        max_new = min(cfg.max_stream_tokens, int(max_seconds * self.token_rate))
        out = run_plan(
            self.dslm,
            plan,
            codes["lyrics"],
            max_new=max(1, max_new),
            top_k=top_k,
            temperature=temperature,
            generator=torch.Generator().manual_seed(seed),
            use_cache=use_cache,
        )
        tokens = {
            k: v
            for k, v in (("song", out.song), ("vocals", out.vocals), ("accompaniment", out.accompaniment))
            if v is not None
        }
        audio = {k: self.render(tokens.get(k), k) for k in ("song", "vocals", "accompaniment")}
        if plan.span is not None and self.renderer is not None:
            audio = self._splice(audio, tokens, plan, vocals, accompaniment, song)
        return SongOutput(audio["song"], audio["vocals"], audio["accompaniment"], tokens, self.sample_rate)

    def _splice(self, audio: dict, tokens: dict, plan, vocals, accompaniment, song) -> dict:
        """Keep the original waveforms outside the edited span (20 ms crossfades)."""
        from fourfold.songcreator.renderer import splice_edit

        s, e = plan.span
        spf = self.sample_rate / self.token_rate  # samples per frame
        originals = {"vocals": vocals, "accompaniment": accompaniment, "song": song}
        for kind, x in originals.items():
            if isinstance(x, dict):
                x = x.get("audio")
            if audio.get(kind) is None or x is None or isinstance(x, torch.Tensor):
                continue
            if isinstance(x, (str, os.PathLike)):
                from fourfold.audio.io import load_audio

                wav, _ = load_audio(x, self.sample_rate)
            else:
                from fourfold.audio.io import resample

                wav = resample(np.asarray(x[0], np.float32), x[1], self.sample_rate)
            n_new = len(tokens[kind]) - (plan.prefix_len + s)  # original frames T = prefix_len + e
            audio[kind] = splice_edit(
                wav,
                audio[kind],
                round(s * spf),
                min(len(wav), round(e * spf)),
                round((s + n_new) * spf),
                self.sample_rate,
            )
        return audio

    # one verb per task (each wraps generate)

    def lyrics_to_song(self, lyrics, **kw) -> SongOutput:
        return self.generate("lyrics_to_song", lyrics=lyrics, **kw)

    def lyrics_to_vocals(self, lyrics, *, vocal_only: bool = False, **kw) -> SongOutput:
        return self.generate(
            "lyrics_to_vocals_only" if vocal_only else "lyrics_to_vocals", lyrics=lyrics, **kw
        )

    def accompaniment_to_song(self, accompaniment, lyrics=None, **kw) -> SongOutput:
        return self.generate("accompaniment_to_song", accompaniment=accompaniment, lyrics=lyrics, **kw)

    def vocals_to_song(self, vocals, lyrics=None, **kw) -> SongOutput:
        return self.generate("vocals_to_song", vocals=vocals, lyrics=lyrics, **kw)

    def continue_music(self, accompaniment_prompt, **kw) -> SongOutput:
        return self.generate("continue_music", accompaniment_prompt=accompaniment_prompt, **kw)

    def edit_song(self, lyrics, vocals, accompaniment, span, **kw) -> SongOutput:
        return self.generate(
            "edit_song", lyrics=lyrics, vocals=vocals, accompaniment=accompaniment, span=span, **kw
        )

    def edit_vocals(self, lyrics, vocals, span, **kw) -> SongOutput:
        return self.generate("edit_vocals", lyrics=lyrics, vocals=vocals, span=span, **kw)

    def edit_vocals_in_song(self, lyrics, vocals, accompaniment, span, **kw) -> SongOutput:
        return self.generate(
            "edit_vocals_in_song", lyrics=lyrics, vocals=vocals, accompaniment=accompaniment, span=span, **kw
        )

    def continue_song(self, lyrics, vocal_prompt, accompaniment_prompt, **kw) -> SongOutput:
        """Demo-only: lyrics-to-song continuing both prompts."""
        return self.generate(
            "lyrics_to_song",
            lyrics=lyrics,
            vocal_prompt=vocal_prompt,
            accompaniment_prompt=accompaniment_prompt,
            **kw,
        )

    def continue_vocals(self, lyrics, vocal_prompt, **kw) -> SongOutput:
        """Demo-only: lyrics-to-vocals continuing a vocal prompt."""
        return self.generate("lyrics_to_vocals", lyrics=lyrics, vocal_prompt=vocal_prompt, **kw)
