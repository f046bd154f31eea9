"""SongCreator page API: the task list with the inputs each needs, and generation as a job.

Audio inputs are uploaded files (ids); they reach ``SongCreatorPipeline.generate`` as paths, so the
pipeline's own tokenizer encodes them and, for edits, keeps the original waveform outside the span.
Each decoding step of the generating decoder advances the progress and is a cancellation point.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from fourfold.studio.jobs import Job, progress_hook

# Which inputs each task needs ("required") or may take ("optional"); spans are for the edit tasks.
TASK_INPUTS = {
    "lyrics_to_song": {"required": ["lyrics"], "optional": ["vocal_prompt", "accompaniment_prompt"]},
    "lyrics_to_vocals": {"required": ["lyrics"], "optional": ["vocal_prompt"]},
    "lyrics_to_vocals_only": {"required": ["lyrics"], "optional": ["vocal_prompt"]},
    "accompaniment_to_song": {"required": ["accompaniment"], "optional": ["lyrics"]},
    "vocals_to_song": {"required": ["vocals"], "optional": ["lyrics"]},
    "continue_music": {"required": ["accompaniment_prompt"], "optional": []},
    "edit_song": {"required": ["lyrics", "vocals", "accompaniment", "span"], "optional": []},
    "edit_vocals": {"required": ["lyrics", "vocals", "span"], "optional": []},
    "edit_vocals_in_song": {"required": ["lyrics", "vocals", "accompaniment", "span"], "optional": []},
}
AUDIO_INPUTS = ("vocals", "accompaniment", "vocal_prompt", "accompaniment_prompt")


class SongIn(BaseModel):
    task: str
    lyrics: str = ""
    vocals: str | None = None
    accompaniment: str | None = None
    vocal_prompt: str | None = None
    accompaniment_prompt: str | None = None
    span: tuple[float, float] | None = None
    seed: int = 0
    max_seconds: float = Field(default=4.0, gt=0, le=60)
    top_k: int = Field(default=50, ge=1)
    temperature: float = Field(default=0.9, gt=0, le=5)


def check_inputs(req: SongIn) -> None:
    """Refuse a request that lacks an input its task needs, naming the input."""
    if req.task not in TASK_INPUTS:
        raise ValueError(f"unknown task {req.task!r}; one of {sorted(TASK_INPUTS)}")
    for name in TASK_INPUTS[req.task]["required"]:
        value = req.lyrics.strip() if name == "lyrics" else getattr(req, name)
        if not value:
            what = "a span (drag over the waveform)" if name == "span" else name.replace("_", " ")
            raise ValueError(f"task {req.task} needs {what}")


def router(studio):
    from fastapi import APIRouter

    r = APIRouter(prefix="/api/songcreator")

    @r.get("/tasks")
    def tasks():
        from fourfold.songcreator.tasks import TASKS

        return [{"name": name, "outputs": list(TASKS[name].outputs), **TASK_INPUTS[name]} for name in TASKS]

    @r.post("/generate")
    def generate(req: SongIn):
        from fourfold.songcreator.tasks import get_task

        check_inputs(req)
        pipe = studio.models.get("songcreator")[0]
        spec = get_task(req.task)
        inputs = {}
        for name in AUDIO_INPUTS:
            fid = getattr(req, name)
            if fid:
                inputs[name] = str(studio.files.get(fid, "audio").path)
        lyrics = req.lyrics if req.lyrics.strip() else None
        decoder = pipe.dslm.vocal_blocks[0] if spec.vocal == "causal" else pipe.dslm.accomp_blocks[0]
        total = max(1, int(req.max_seconds * pipe.token_rate))

        def run(job: Job) -> dict:
            with progress_hook(decoder, job, total + 1, 0.0, 0.9, "token"):
                out = pipe.generate(req.task, lyrics=lyrics, span=req.span, seed=req.seed, top_k=req.top_k,
                                    temperature=req.temperature, max_seconds=req.max_seconds, **inputs)  # fmt: skip
            job.update(0.92, "writing audio")
            from fourfold.audio import io as aio

            d = studio.files.new_output_dir("song")
            result = {"sample_rate": out.sample_rate, "tokens": {k: len(v) for k, v in out.tokens.items()}}
            for kind in ("song", "vocals", "accompaniment"):
                wav = getattr(out, kind)
                if wav is None or out.sample_rate is None:
                    continue
                path = aio.save_audio(d / f"{kind}.wav", wav, out.sample_rate)
                result[kind] = studio.files.output(
                    path, "audio", duration=len(wav) / out.sample_rate
                ).to_dict()
            return result

        return studio.jobs.start("songcreator", run).to_dict()

    return r


__all__ = ["TASK_INPUTS", "SongIn", "check_inputs", "router"]
