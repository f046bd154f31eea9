"""SongCreator page API: the task list with the inputs each needs, and generation as a job.

Audio inputs are file ids. An uploaded file reaches ``SongCreatorPipeline.generate`` as a path, so the
pipeline's own audio tokenizer (BEST-RQ) encodes it and, for edits, the original waveform is kept outside the
span. A stem this page generated (fed back with *use as … input*) goes in as its semantic tokens plus its
waveform, so it needs no audio tokenizer: the shipped procedural pipeline, whose tokenizer reads labels
rather than audio, can edit what it made. Each decoding step of the generating decoder advances the
progress and is a cancellation point.
"""

from __future__ import annotations

from collections import OrderedDict

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
MAX_REMEMBERED = 512  # generated stems whose tokens the page keeps for feeding back


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
    # file id of a generated stem -> its semantic tokens (1-D LongTensor), most recent last
    tokens_of: OrderedDict[str, object] = OrderedDict()

    def audio_input(pipe, name: str, fid: str):
        """A path for the pipeline's tokenizer, or {codes, audio} for a stem generated here."""
        stored = studio.files.get(fid, "audio")
        if fid in tokens_of:
            from fourfold.audio import io as aio

            return {"codes": tokens_of[fid], "audio": aio.load_audio(stored.path)}
        if not hasattr(pipe.tokenizer, "encode"):
            raise ValueError(
                f"{name.replace('_', ' ')}: this SongCreator pipeline has no audio tokenizer "
                f"({type(pipe.tokenizer).__name__}), so it cannot read an uploaded recording; use a stem it "
                "generated (the 'use as … input' buttons), or start the studio with --songcreator DIR holding "
                "a pipeline with a BEST-RQ tokenizer"
            )
        return str(stored.path)

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
        takes = {*TASK_INPUTS[req.task]["required"], *TASK_INPUTS[req.task]["optional"]}
        for name in AUDIO_INPUTS:
            fid = getattr(req, name)
            if fid and name in takes:  # the page sends every loaded stem; a task reads only its own
                inputs[name] = audio_input(pipe, name, fid)
        lyrics = req.lyrics if req.lyrics.strip() else None
        span = req.span if "span" in takes else None  # a span drawn for an edit stays on the page
        decoder = pipe.dslm.vocal_blocks[0] if spec.vocal == "causal" else pipe.dslm.accomp_blocks[0]
        total = max(1, int(req.max_seconds * pipe.token_rate))

        def run(job: Job) -> dict:
            with progress_hook(decoder, job, total + 1, 0.0, 0.9, "token"):
                out = pipe.generate(req.task, lyrics=lyrics, span=span, seed=req.seed, top_k=req.top_k,
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
                stored = studio.files.output(path, "audio", duration=len(wav) / out.sample_rate)
                if out.tokens.get(kind) is not None:
                    tokens_of[stored.id] = out.tokens[kind].detach().cpu().flatten().long()
                    while len(tokens_of) > MAX_REMEMBERED:
                        tokens_of.popitem(last=False)
                result[kind] = stored.to_dict()
            return result

        return studio.jobs.start("songcreator", run).to_dict()

    return r


__all__ = ["TASK_INPUTS", "SongIn", "check_inputs", "router"]
