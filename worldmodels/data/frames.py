"""Frames picked from a rollouts file: evenly spaced rows, and the median frame (the background).

The median frame of many training frames is what V's foreground measure compares against: pixels
that differ from it by more than a threshold are foreground (the task's objects).
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodels.data.store import RolloutReader


def evenly_spaced(rows: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` entries of ``rows`` spread over its whole length."""
    if len(rows) <= count:
        return rows
    return rows[np.linspace(0, len(rows) - 1, count).round().astype(np.int64)]


def median_frame(reader: RolloutReader, rows: np.ndarray, count: int) -> torch.Tensor:
    """Per-pixel median of ``count`` evenly spaced frames: float ``(3, H, W)`` in [0, 1]."""
    frames = reader.read_frame_rows(np.sort(evenly_spaced(rows, count)))
    return torch.from_numpy(np.median(frames, axis=0).astype(np.float32) / 255.0).permute(2, 0, 1).contiguous()
