"""fourfold: INTRA, Draw an Audio, SongCreator and SaRA in one PyTorch toolkit.

Shared building blocks live in ``fourfold.nn``, ``fourfold.diffusion``, ``fourfold.audio``,
``fourfold.data``, ``fourfold.train`` and ``fourfold.metrics``; each system is a subpackage
(``fourfold.intra``, ``fourfold.drawaudio``, ``fourfold.songcreator``, ``fourfold.sara``) that composes
them and never imports another system.
"""

__version__ = "0.1.0"
