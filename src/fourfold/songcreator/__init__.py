"""SongCreator (Lei et al., NeurIPS 2024, arXiv 2409.06029): lyrics-based universal song generation.

Submodules: :mod:`~fourfold.songcreator.lyrics` (front end), :mod:`~fourfold.songcreator.dslm`
(dual-sequence LM with bidirectional cross-attention and the task masks), and the tokenizer, renderer
and pipeline modules. Import from the submodules; this package stays light so ``fourfold --help`` is fast.
"""
