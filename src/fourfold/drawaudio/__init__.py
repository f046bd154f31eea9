"""Draw an Audio (arXiv 2409.06135): video-to-audio with drawn masks (MAM) and loudness curves (TLM).

Public names load lazily (``fourfold drawaudio --help`` must not import diffusers):
``DrawAudioPipeline``, ``DrawAudioOutput``, ``Stage``, ``DrawAudioModel``, ``DrawAudioConfig``,
``MaskInput``, ``ColorDetector``, ``KeyphraseExtractor``, ``LoudnessCurve``, ``curve_from_audio``,
``load_base``, ``build_tiny_base``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DrawAudioPipeline": "pipeline",
    "DrawAudioOutput": "pipeline",
    "Stage": "pipeline",
    "DrawAudioModel": "model",
    "DrawAudioConfig": "config",
    "MaskInput": "masks",
    "ColorDetector": "masks",
    "KeyphraseExtractor": "masks",
    "LoudnessCurve": "tlm",
    "curve_from_audio": "tlm",
    "load_base": "base",
    "build_tiny_base": "base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"fourfold.drawaudio.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'fourfold.drawaudio' has no attribute {name!r}")
