"""Episodes of latents cut into padded windows, the training data of M.

Window ``i`` covers steps ``[start, start + n)`` of one episode (``n <= L``): latents of frames
``start .. start + n`` (``n + 1`` of them: inputs and next-step targets), the ``n`` actions,
rewards and terminal flags, and a mask that is 1 on the ``n`` real steps and 0 on padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from worldmodels.data.latents import LatentReader
from worldmodels.data.store import RolloutReader


@dataclass
class LatentSequences:
    """``mu``, ``logvar`` ``(N, L + 1, Z)``; ``actions`` ``(N, L, A)``; ``rewards``, ``dones``,
    ``mask`` ``(N, L)``; ``episode``, ``start`` ``(N,)``."""

    mu: torch.Tensor
    logvar: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    dones: torch.Tensor
    mask: torch.Tensor
    episode: torch.Tensor
    start: torch.Tensor

    def __len__(self) -> int:
        return len(self.mu)

    def to(self, device: torch.device | str) -> LatentSequences:
        """The same windows on ``device``; pinned and copied without blocking when it is a GPU."""
        device = torch.device(device)
        pin = device.type == "cuda"
        return LatentSequences(*(
            (getattr(self, name).pin_memory() if pin else getattr(self, name)).to(device, non_blocking=pin)
            for name in ("mu", "logvar", "actions", "rewards", "dones", "mask", "episode", "start")))

    def select(self, index: torch.Tensor) -> LatentSequences:
        return LatentSequences(*(getattr(self, name)[index] for name in
                                 ("mu", "logvar", "actions", "rewards", "dones", "mask", "episode", "start")))

    def sample_z(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """``z`` drawn from (mu, logvar) afresh, ``(N, L + 1, Z)`` (the paper re-samples every batch).

        The noise is drawn on the CPU and moved, so a seed gives the same draws on every device."""
        noise = torch.randn(self.mu.shape, generator=generator).to(self.mu.device)
        return self.mu + torch.exp(0.5 * self.logvar) * noise


def build_sequences(latents: LatentReader, rollouts: RolloutReader, episodes: np.ndarray,
                    length: int) -> LatentSequences:
    """Cut the given episodes into windows of at most ``length`` steps (see the module docstring)."""
    pieces = []
    for episode in episodes:
        mu, logvar = latents.episode(int(episode))
        steps = rollouts.step_data(int(episode))
        total = len(steps["actions"])
        for start in range(0, total, length):
            pieces.append((int(episode), start, min(length, total - start), mu, logvar, steps))
    count, z_size = len(pieces), latents.z_size
    action_size = rollouts.action_size
    out = {
        "mu": np.zeros((count, length + 1, z_size), np.float32),
        "logvar": np.zeros((count, length + 1, z_size), np.float32),
        "actions": np.zeros((count, length, action_size), np.float32),
        "rewards": np.zeros((count, length), np.float32),
        "dones": np.zeros((count, length), np.float32),
        "mask": np.zeros((count, length), np.float32),
    }
    for row, (_, start, steps_here, mu, logvar, steps) in enumerate(pieces):
        out["mu"][row, :steps_here + 1] = mu[start:start + steps_here + 1]
        out["logvar"][row, :steps_here + 1] = logvar[start:start + steps_here + 1]
        out["actions"][row, :steps_here] = steps["actions"][start:start + steps_here]
        out["rewards"][row, :steps_here] = steps["rewards"][start:start + steps_here]
        out["dones"][row, :steps_here] = steps["terminated"][start:start + steps_here]
        out["mask"][row, :steps_here] = 1.0
    tensors = {name: torch.from_numpy(value) for name, value in out.items()}
    return LatentSequences(**tensors, episode=torch.tensor([p[0] for p in pieces]),
                           start=torch.tensor([p[1] for p in pieces]))
