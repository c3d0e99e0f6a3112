"""Dreamer's replay: random windows of its training episodes, held in memory on its device.

Reading each batch's 50 windows from HDF5 took ~65 ms, a third of an update on an H200; held in
memory, a batch is one gather. The windows are numbered exactly as
:class:`~worldmodels.data.datasets.WindowDataset` numbers them (training episodes in file order,
every start of each), and drawn with the same ``torch.randint`` call, so a batch is the same
whichever way it is read (tested against the file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldmodels.data.datasets import WindowDataset
from worldmodels.data.split import heldout_mask
from worldmodels.data.store import RolloutReader
from worldmodels.errors import UserValueError

MEMORY_LIMIT_BYTES = 8 * 2**30
"""Replays whose frames would take more read their windows from the file (:class:`FileReplay`)."""


def draw_windows(size: int, generator: torch.Generator, window_ends: np.ndarray,
                 episode_start_share: float = 0.0) -> np.ndarray:
    """``size`` window indices ``(size,)`` over episodes whose windows end (cumulatively) at
    ``window_ends`` ``(E,)``: uniform over every window, except that the first
    ``round(episode_start_share * size)`` are the first window of an episode drawn uniformly.

    The uniform draw comes first and is the same whatever the share, so a share of 0 gives exactly
    the uniform batches (and their RNG stream) of a replay without it.
    """
    indices = torch.randint(int(window_ends[-1]), (size,), generator=generator).numpy()
    from_starts = round(episode_start_share * size)
    if from_starts:
        first_windows = np.concatenate([[0], window_ends[:-1]])
        episodes = torch.randint(len(window_ends), (from_starts,), generator=generator).numpy()
        indices[:from_starts] = first_windows[episodes]
    return indices


def training_episodes(reader: RolloutReader, heldout_fraction: float, split_episodes: int) -> np.ndarray:
    """Every episode of ``reader`` but the held-out ones among its first ``split_episodes`` (the
    collect stage's; the ones Dreamer plays itself are all trained on), ``(E,)`` sorted."""
    seeds = reader.episodes["seed"]
    heldout = np.zeros(len(seeds), dtype=bool)
    heldout[:split_episodes] = heldout_mask(seeds[:split_episodes], heldout_fraction)
    return np.flatnonzero(~heldout)


class _Growing:
    """Rows appended to a tensor whose capacity doubles: ``data[:rows]`` is what was appended."""

    def __init__(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> None:
        self.data = torch.empty((16, *shape), dtype=dtype, device=device)
        self.rows = 0

    def append(self, values: np.ndarray) -> None:
        values = torch.from_numpy(np.ascontiguousarray(values)).to(self.data.device)
        if self.rows + len(values) > len(self.data):
            bigger = torch.empty((max(2 * len(self.data), self.rows + len(values)), *self.data.shape[1:]),
                                 dtype=self.data.dtype, device=self.data.device)
            bigger[:self.rows] = self.data[:self.rows]
            self.data = bigger
        self.data[self.rows:self.rows + len(values)] = values
        self.rows += len(values)


class Replay:
    """The training episodes of a rollouts file, in memory on ``device``, and windows of ``steps`` steps.

    ``refresh()`` takes in the episodes appended to the file since; ``batch(B, generator)`` draws
    ``B`` windows uniformly over every window of every training episode, a share
    ``episode_start_share`` of them from episodes' first steps instead (:func:`draw_windows`). The
    file is open only inside ``refresh``, so the stage may append to it in between (``close`` does
    nothing).
    """

    def __init__(self, path: Path, steps: int, heldout_fraction: float, split_episodes: int,
                 device: torch.device | str = "cpu", episode_start_share: float = 0.0) -> None:
        self.path, self.steps, self.heldout_fraction = Path(path), steps, heldout_fraction
        self.episode_start_share = episode_start_share
        self.split_episodes, self.device = split_episodes, torch.device(device)
        self.loaded = 0          # episodes of the file looked at so far
        # Per training episode: its first row in self.frames and in self.actions, and the cumulative
        # count of its windows (WindowDataset's numbering), kept as arrays for the per-update lookup.
        self.frame_start = self.step_start = self.window_ends = np.zeros(0, np.int64)
        self.frames = self.actions = self.rewards = None
        self.refresh()

    def refresh(self) -> None:
        """Load the training episodes the file holds beyond those already loaded."""
        with RolloutReader(self.path) as reader:
            if self.frames is None:
                self.frames = _Growing(reader.frame_shape, torch.uint8, self.device)
                self.actions = _Growing((reader.action_size,), torch.float32, self.device)
                self.rewards = _Growing((), torch.float32, self.device)
            chosen = training_episodes(reader, self.heldout_fraction, self.split_episodes)
            frame_start, step_start, counts = [], [], []
            for episode in chosen[chosen >= self.loaded]:
                length = int(reader.lengths[episode])
                if length < self.steps:
                    continue
                data = reader.step_data(int(episode))
                frame_start.append(self.frames.rows)
                step_start.append(self.actions.rows)
                self.frames.append(reader.frames(int(episode)))
                self.actions.append(data["actions"])
                self.rewards.append(data["rewards"])
                counts.append(length - self.steps + 1)
            self.loaded = reader.num_episodes
        self.frame_start = np.concatenate([self.frame_start, frame_start]).astype(np.int64)
        self.step_start = np.concatenate([self.step_start, step_start]).astype(np.int64)
        self.window_ends = np.concatenate([self.window_ends, len(self) + np.cumsum(counts, dtype=np.int64)])
        if len(self) == 0:
            raise UserValueError(f"{self.path}: no training episode has {self.steps} steps for dreamer.sequence_length")

    def __len__(self) -> int:
        return int(self.window_ends[-1]) if len(self.window_ends) else 0

    def close(self) -> None:
        """Nothing to let go of: the file is read only in ``refresh``."""

    def batch(self, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """On ``device``: frames uint8 ``(B, L + 1, H, W, 3)``, actions ``(B, L, A)``, rewards ``(B, L)``."""
        indices = draw_windows(size, generator, self.window_ends, self.episode_start_share)
        positions = np.searchsorted(self.window_ends, indices, side="right")
        starts = indices - np.concatenate([[0], self.window_ends])[positions]
        frame0 = self.frame_start[positions] + starts
        step0 = self.step_start[positions] + starts
        frame_rows = torch.from_numpy((frame0[:, None] + np.arange(self.steps + 1)).ravel()).to(self.device)
        step_rows = torch.from_numpy((step0[:, None] + np.arange(self.steps)).ravel()).to(self.device)
        # index_select copies whole rows (one frame each): ~4x faster than advanced indexing on the CPU
        return {"frames": self.frames.data.index_select(0, frame_rows).view(size, self.steps + 1,
                                                                            *self.frames.data.shape[1:]),
                "actions": self.actions.data.index_select(0, step_rows).view(size, self.steps, -1),
                "rewards": self.rewards.data.index_select(0, step_rows).view(size, self.steps)}


class FileReplay:
    """The same windows as :class:`Replay`, read from the file at each batch (for replays too large to
    hold in memory, such as CarRacing's 10,000 episodes); batches on the CPU."""

    def __init__(self, path: Path, steps: int, heldout_fraction: float, split_episodes: int,
                 episode_start_share: float = 0.0) -> None:
        self.path, self.steps, self.heldout_fraction = Path(path), steps, heldout_fraction
        self.split_episodes, self.episode_start_share = split_episodes, episode_start_share
        self.dataset: WindowDataset | None = None
        self.refresh()

    def refresh(self) -> None:
        if self.dataset is not None:
            self.dataset.reader.close()
        with RolloutReader(self.path) as reader:
            chosen = training_episodes(reader, self.heldout_fraction, self.split_episodes)
        self.dataset = WindowDataset(self.path, self.steps, chosen)
        if len(self.dataset) == 0:
            raise UserValueError(f"{self.path}: no training episode has {self.steps} steps for dreamer.sequence_length")

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        indices = draw_windows(size, generator, self.dataset.window_ends, self.episode_start_share)
        items = [self.dataset[int(i)] for i in indices]
        return {name: torch.stack([item[name] for item in items]) for name in ("frames", "actions", "rewards")}

    def close(self) -> None:
        """Let go of the file (so that a writer may append to it); ``refresh`` opens it again."""
        self.dataset.reader.close()


def open_replay(path: Path, steps: int, heldout_fraction: float, split_episodes: int, final_frames: int,
                device: torch.device | str, episode_start_share: float = 0.0) -> Replay | FileReplay:
    """A :class:`Replay` on ``device`` when ``final_frames`` (the most frames the replay will hold)
    fit in :data:`MEMORY_LIMIT_BYTES`, else a :class:`FileReplay`."""
    with RolloutReader(path) as reader:
        frame_bytes = int(np.prod(reader.frame_shape))
    if final_frames * frame_bytes <= MEMORY_LIMIT_BYTES:
        return Replay(path, steps, heldout_fraction, split_episodes, device, episode_start_share)
    return FileReplay(path, steps, heldout_fraction, split_episodes, episode_start_share)
