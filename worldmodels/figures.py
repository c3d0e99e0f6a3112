"""Figures as PNG files (matplotlib, no display needed), written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from worldmodels.checkpoint import atomic_write  # noqa: E402


def _save(figure: plt.Figure, path: Path) -> None:
    atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png", dpi=100,
                                                              bbox_inches="tight"))
    plt.close(figure)


def reconstruction_grid(real: np.ndarray, reconstructed: np.ndarray, title: str, path: Path) -> None:
    """Real frames (top row) above their reconstructions (bottom row); both uint8 ``(N, H, W, 3)``."""
    count = len(real)
    figure, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.2), squeeze=False)
    for column in range(count):
        for row, images, label in ((0, real, "real"), (1, reconstructed, "V")):
            axis = axes[row, column]
            axis.imshow(images[column], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label)
    figure.suptitle(title, fontsize=9)
    _save(figure, path)
