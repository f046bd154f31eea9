"""Small PNG renderings for the pages (matplotlib, Agg): mel spectrograms and image grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["save_mel_png"]


def save_mel_png(mel: np.ndarray, path: Path, sample_rate: int, hop: int, title: str = "") -> Path:
    """``mel`` (n_mels, frames) log-mel -> a labelled spectrogram PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.4), dpi=100)
    seconds = mel.shape[-1] * hop / sample_rate
    ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel.shape[0]))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("mel band")
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
