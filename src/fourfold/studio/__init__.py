"""fourfold studio: a local web app to use the four systems by hand (``fourfold studio``).

FastAPI + one static page with canvas widgets (mask boxes/brush with keyframes, loudness curve, waveform
span); see docs/studio.md. Needs the ``[ui]`` extra (fastapi, uvicorn, python-multipart; playwright for
the browser tests).
"""

__all__ = ["StudioConfig", "create_app", "serve"]


def __getattr__(name: str):
    if name in __all__:
        from fourfold.studio import server

        return getattr(server, name)
    raise AttributeError(f"module 'fourfold.studio' has no attribute {name!r}")
