"""Which model each page runs: a user checkpoint given by path, the shipped one, or a tiny random one.

``--models DIR`` may hold ``drawaudio/`` (an adapter checkpoint with ``drawaudio_config.json``, optionally
``drawaudio/base/``; or a base directory with ``condition_config.json``), ``intra/`` (an IntraModel run),
``songcreator/`` (a pipeline with ``pipeline.json``) and ``sara/`` (Stable Diffusion 1.x/2.x, SDXL or SD3
diffusers directories, one per subfolder, offered as base models). Without those, a page runs its system's shipped checkpoint
(INTRA, Draw an Audio, SongCreator, SaRA's ``digits-sd-tiny`` base); anything else is a tiny model of that system
with random weights, written under the studio's work folder and labelled *untrained* in the page: the page
works end to end, but its output is noise-like until a trained checkpoint is given.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ModelInfo", "StudioModels"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DRAWAUDIO_VOCAB = ["a", "the", "red", "ball", "blue", "square", "green", "triangle", "bounces", "bounce", "and",
                   "something", "cat", "dog", "meowing", "barking", "car", "engine", "rain", "drum", "two",
                   "hits", "knocks", "wood", "metal", "glass", "of", "sound"]  # fmt: skip
INTRA_WORDS = ["hold", "grasp", "cut", "with", "drink", "sit", "on", "ride", "kick", "throw", "pour", "wash",
               "open", "swing", "type", "lie", "look", "out", "push", "carry", "catch", "hit", "eat", "stick",
               "brush", "take", "photo", "talk", "beat", "peel", "sip", "write", "lift", "jump"]  # fmt: skip


LOAD_LOCK = threading.RLock()  # one model load at a time: transformers' lazy imports are not thread-safe


def heavy_imports() -> None:
    """Import transformers/diffusers names in one thread first (concurrent first imports fail)."""
    with LOAD_LOCK:
        import diffusers  # noqa: F401
        import transformers
        from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401

        for name in ("BertConfig", "BertModel", "BertTokenizer", "Dinov2Config", "Dinov2Model", "CLIPTextModel",
                     "CLIPTokenizer", "CLIPTextConfig", "AutoModel", "AutoTokenizer", "CLIPVisionModelWithProjection"):  # fmt: skip
            with contextlib.suppress(AttributeError, ImportError):  # a missing name: its user will say so
                getattr(transformers, name)


@dataclass
class ModelInfo:
    system: str
    source: str  # a path, or a description of the tiny random model
    trained: bool

    def to_dict(self) -> dict:
        label = "" if self.trained else "untrained tiny model with random weights: output is noise-like"
        return {"system": self.system, "source": self.source, "trained": self.trained, "label": label}


def shipped_checkpoint(system: str) -> Path | None:
    """The small checkpoint fourfold ships for ``system`` (trained by its demo), if there is one."""
    if system == "intra":
        from fourfold.intra.cli import SHIPPED_CHECKPOINT

        return SHIPPED_CHECKPOINT if (SHIPPED_CHECKPOINT / "model.safetensors").is_file() else None
    if system == "drawaudio":
        from fourfold.drawaudio.demo import ASSET_ADAPTER

        return ASSET_ADAPTER if (ASSET_ADAPTER / "adapter.safetensors").is_file() else None
    if system == "songcreator":
        from fourfold.songcreator.pipeline import SHIPPED_PIPELINE

        return SHIPPED_PIPELINE if (SHIPPED_PIPELINE / "pipeline.json").is_file() else None
    return None


def _diffusers_kind(folder: Path) -> str | None:
    """ "sd", "sdxl" or "sd3" for a text-to-image diffusers directory SaRA can fine-tune, else None."""
    from fourfold.sara.pipelines import pipeline_kind

    try:
        return pipeline_kind(folder)
    except (FileNotFoundError, ValueError, OSError):
        return None


class StudioModels:
    """Loads each system once, on first use (thread-safe), from ``models_dir`` or as a tiny random model."""

    def __init__(
        self, models_dir: Path | None, work: Path, seed: int = 0, paths: dict[str, Path] | None = None
    ) -> None:
        self.models_dir = None if models_dir is None else Path(models_dir).resolve()
        self.paths = {k: Path(v).resolve() for k, v in (paths or {}).items() if v is not None}
        self.work = Path(work) / "models"
        self.work.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self._cache: dict[str, tuple[object, ModelInfo]] = {}

    def _user_dir(self, name: str) -> Path | None:
        """``--<system> DIR`` if given, else ``--models DIR``/<system> if it exists."""
        if name in self.paths:
            if not self.paths[name].is_dir():
                raise FileNotFoundError(f"{name} checkpoint folder not found: {self.paths[name]}")
            return self.paths[name]
        if self.models_dir is not None and (self.models_dir / name).is_dir():
            return self.models_dir / name
        return shipped_checkpoint(name)

    def get(self, system: str):
        with LOAD_LOCK:
            if system not in self._cache:
                heavy_imports()
                self._cache[system] = getattr(self, f"_load_{system}")()
            return self._cache[system]

    def info(self) -> dict[str, dict]:
        return {k: v[1].to_dict() for k, v in self._cache.items()}

    # Draw an Audio

    def _load_drawaudio(self):
        from fourfold.drawaudio.base import build_tiny_base, load_base
        from fourfold.drawaudio.config import DrawAudioConfig
        from fourfold.drawaudio.model import ADAPTER_CONFIG, DrawAudioModel
        from fourfold.drawaudio.pipeline import DrawAudioPipeline

        d = self._user_dir("drawaudio")
        if d is not None and (d / ADAPTER_CONFIG).is_file():
            base = d / "base" if (d / "base").is_dir() else None
            return DrawAudioPipeline.from_pretrained(d, base), ModelInfo("drawaudio", str(d), True)
        if d is not None and (d / "condition_config.json").is_file():
            return DrawAudioPipeline.from_base(d), ModelInfo("drawaudio", f"{d} (base, no adapter)", True)
        cfg = DrawAudioConfig.tiny()
        base_dir = self.work / "drawaudio-tiny-base"
        if not (base_dir / "condition_config.json").is_file():
            build_tiny_base(base_dir, cfg, DRAWAUDIO_VOCAB, seed=self.seed)
        cfg.base.path = str(base_dir)
        torch.manual_seed(self.seed)
        model = DrawAudioModel(cfg, load_base(base_dir, cfg))
        return DrawAudioPipeline(model), ModelInfo(
            "drawaudio", "tiny Draw an Audio (DrawAudioConfig.tiny)", False
        )

    # INTRA

    def _load_intra(self):
        from fourfold.intra.config import IntraConfig
        from fourfold.intra.model import IntraModel
        from fourfold.intra.pipeline import IntraGrounder

        d = self._user_dir("intra")
        if d is not None and (d / "config.json").is_file():
            kw = {}
            for name in ("image_encoder", "text_encoder"):
                if (d / name).is_dir():
                    kw[name] = str(d / name)
            return IntraGrounder.from_pretrained(d, **kw), ModelInfo("intra", str(d), True)
        image_dir, text_dir = self._tiny_intra_encoders()
        torch.manual_seed(self.seed)
        cfg = IntraConfig.tiny(
            image_encoder=str(image_dir), text_encoder=str(text_dir), image_size=56, resize_size=64
        )
        return IntraGrounder(IntraModel(cfg)), ModelInfo(
            "intra", "tiny INTRA (DINOv2/BERT 32-wide, IntraConfig.tiny)", False
        )

    def _tiny_intra_encoders(self) -> tuple[Path, Path]:
        from transformers import BertConfig, BertModel, BertTokenizer, Dinov2Config, Dinov2Model

        root = self.work / "intra-tiny-encoders"
        image_dir, text_dir = root / "dinov2", root / "bert"
        if not (image_dir / "config.json").is_file():
            torch.manual_seed(self.seed)
            Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                                     patch_size=14, image_size=56)).save_pretrained(image_dir)  # fmt: skip
        if not (text_dir / "config.json").is_file():
            text_dir.mkdir(parents=True, exist_ok=True)
            vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(INTRA_WORDS))]
            (text_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
            BertTokenizer(vocab=str(text_dir / "vocab.txt")).save_pretrained(text_dir)
            torch.manual_seed(self.seed)
            BertModel(BertConfig(vocab_size=len(vocab), hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=48, initializer_range=0.5)).save_pretrained(text_dir)  # fmt: skip
        return image_dir, text_dir

    # SongCreator

    def _load_songcreator(self):
        from fourfold.songcreator.pipeline import SongCreatorPipeline

        d = self._user_dir("songcreator")
        if d is not None and (d / "pipeline.json").is_file():
            return SongCreatorPipeline.from_pretrained(d), ModelInfo("songcreator", str(d), True)
        path = self.work / "songcreator-tiny"
        if not (path / "pipeline.json").is_file():
            self._build_tiny_songcreator(path)
        return SongCreatorPipeline.from_pretrained(path), ModelInfo(
            "songcreator", "tiny SongCreator (DSLMConfig.tiny, BEST-RQ tiny, TokenMelRenderer tiny)", False
        )

    def _build_tiny_songcreator(self, path: Path) -> None:
        from fourfold.songcreator.bestrq import (
            BestRQ,
            BestRQConfig,
            SemanticTokenizer,
            SemanticVQ,
            SemanticVQConfig,
        )
        from fourfold.songcreator.config import DSLMConfig
        from fourfold.songcreator.dslm import DSLM
        from fourfold.songcreator.lyrics import LyricsFrontend
        from fourfold.songcreator.pipeline import SongCreatorPipeline
        from fourfold.songcreator.renderer import RendererConfig, TokenMelRenderer

        torch.manual_seed(self.seed)
        enc = BestRQ(BestRQConfig.tiny())
        vq = SemanticVQ(SemanticVQConfig.tiny(input_dim=enc.config.dim))
        tok = SemanticTokenizer(enc, vq)
        fe = LyricsFrontend()
        dslm = DSLM(DSLMConfig.tiny(codebook_size=tok.codebook_size, lyrics_vocab_size=fe.vocab_size))
        renderer = TokenMelRenderer(RendererConfig.tiny(tok.codebook_size))
        SongCreatorPipeline(dslm, fe, tokenizer=tok, renderer=renderer).save_pretrained(path)

    # SaRA

    def _load_sara(self):
        """SaRA has no fixed model: list the base directories and image folders the user may pick.

        Bases: ``--models DIR``'s ``sara/<name>/`` SD folders, then the shipped ``digits-sd-tiny`` (a small
        SD trained on coloured digits, ``fourfold.sara.sd_digits``); a random tiny SD only when neither
        exists. Folders: procedural outline digits (the style the shipped base never saw) and stripes.
        """
        from fourfold.sara.sd_digits import SHIPPED, build_outline_folder
        from fourfold.sara.tiny import build_style_folder, build_tiny_sd_pipeline

        bases: dict[str, dict] = {}
        d = self._user_dir("sara")
        if d is not None:
            for sub in sorted([d, *d.iterdir()]):
                if sub.is_dir() and _diffusers_kind(sub) is not None:
                    bases[sub.name] = {"path": str(sub), "trained": True}
        if (SHIPPED / "model_index.json").is_file():
            bases[SHIPPED.name] = {"path": str(SHIPPED), "trained": True}
        if not bases:
            tiny = self.work / "sara-tiny-sd"
            if not (tiny / "model_index.json").is_file():
                build_tiny_sd_pipeline(tiny, self.seed)
            bases["tiny-random-sd"] = {"path": str(tiny), "trained": False}
        folders = {}
        outline = self.work / "sara-style-outline-digits"
        if not (outline / "metadata.jsonl").is_file():
            build_outline_folder(outline)
        folders["outline digits (procedural)"] = str(outline)
        style = self.work / "sara-style-stripes"
        if not (style / "metadata.jsonl").is_file():
            build_style_folder(style)
        folders["stripes (procedural)"] = str(style)
        return {"bases": bases, "folders": folders}, ModelInfo(
            "sara", ", ".join(bases), any(b["trained"] for b in bases.values())
        )
