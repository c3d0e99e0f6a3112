"""Torch datasets over a rollouts file: single frames (for V) and windows (for M and Dreamer).

Both read on demand from HDF5 (nothing is loaded up front) and work in DataLoader worker
processes. Windows never cross an episode boundary: a window of ``L`` steps starts at step
``s`` of an episode of ``T`` steps only if ``s + L <= T``, and every such start is equally likely
under a shuffling sampler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from worldmodels.data.store import RolloutReader


def _select(reader: RolloutReader, episodes: np.ndarray | None) -> np.ndarray:
    if episodes is None:
        return np.arange(reader.num_episodes)
    episodes = np.asarray(episodes, dtype=np.int64)
    if len(episodes) and (episodes.min() < 0 or episodes.max() >= reader.num_episodes):
        raise IndexError(f"episode numbers must be in [0, {reader.num_episodes}) for {reader.path}")
    return episodes


class FrameDataset(Dataset):
    """Every frame of the chosen episodes; item ``i`` is a uint8 tensor ``(H, W, 3)``."""

    def __init__(self, path: str | Path, episodes: np.ndarray | None = None) -> None:
        self.reader = RolloutReader(path)
        self.rows = self.reader.frame_rows(_select(self.reader, episodes))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.reader.frame_at(int(self.rows[index])))


class WindowDataset(Dataset):
    """Windows of ``steps`` consecutive agent steps inside one episode.

    Item ``k`` is a dict: ``frames`` uint8 ``(steps + 1, H, W, 3)``, ``actions`` float32
    ``(steps, A)``, ``rewards`` float32 ``(steps,)``, ``terminated`` / ``truncated`` bool
    ``(steps,)``, ``episode`` and ``start`` (int64 scalars). Episodes shorter than ``steps`` are
    skipped.
    """

    def __init__(self, path: str | Path, steps: int, episodes: np.ndarray | None = None) -> None:
        if steps < 1:
            raise ValueError(f"window length must be >= 1, got {steps}")
        self.reader = RolloutReader(path)
        self.steps = steps
        chosen = _select(self.reader, episodes)
        starts_per_episode = self.reader.lengths[chosen] - steps + 1
        keep = starts_per_episode > 0
        self.episodes = chosen[keep]
        # Windows of self.episodes[i] are numbered window_ends[i - 1] (0 for i = 0) to window_ends[i] - 1.
        self.window_ends = np.cumsum(starts_per_episode[keep])

    def __len__(self) -> int:
        return int(self.window_ends[-1]) if len(self.window_ends) else 0

    def locate(self, index: int) -> tuple[int, int]:
        """Window ``index`` -> (episode number, start step)."""
        if not 0 <= index < len(self):
            raise IndexError(f"window {index} out of range [0, {len(self)})")
        position = int(np.searchsorted(self.window_ends, index, side="right"))
        before = int(self.window_ends[position - 1]) if position else 0
        return int(self.episodes[position]), index - before

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        episode, start = self.locate(index)
        window = self.reader.window(episode, start, self.steps)
        item = {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in window.items()}
        item["episode"] = torch.tensor(episode)
        item["start"] = torch.tensor(start)
        return item
