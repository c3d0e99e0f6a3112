"""Where C's dreams start: the latents of real frames, and M's LSTM state on reaching them.

The paper's dreams start at the first frames of the training episodes (:func:`first_latents`);
``controller.dream_starts: any`` starts them anywhere the data went, with M's state after reading
the real frames and actions before (:func:`every_step_starts`).
"""

from __future__ import annotations

import numpy as np
import torch

from worldmodels.data.latents import LatentReader
from worldmodels.data.store import RolloutReader
from worldmodels.models.mdnrnn import MDNRNN


def first_latents(latents: LatentReader, episodes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, logvar) of the first frame of each episode, each ``(E, Z)``: where their dreams start."""
    firsts = [latents.episode(int(e)) for e in episodes]
    return (torch.from_numpy(np.stack([mu[0] for mu, _ in firsts])),
            torch.from_numpy(np.stack([logvar[0] for _, logvar in firsts])))


@torch.no_grad()
def every_step_starts(model: MDNRNN, latents: LatentReader, rollouts: RolloutReader, episodes: np.ndarray
                      ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Dream starts at every step of ``episodes``: (mu, logvar) ``(N, Z)`` of frame ``t`` and M's
    LSTM state (h, c) ``(N, H)`` after reading the real latents and actions of steps ``0 .. t-1``.

    All episodes advance together, one LSTM step at a time, padded to the longest, on M's device;
    the results are on the CPU.
    """
    model.eval()
    device = next(model.parameters()).device
    series = [latents.episode(int(e)) for e in episodes]
    actions = [rollouts.step_data(int(e))["actions"] for e in episodes]
    lengths = [len(a) for a in actions]
    longest = max(lengths)
    mu = torch.zeros(len(episodes), longest, model.z_size)
    logvar = torch.zeros_like(mu)
    padded_actions = torch.zeros(len(episodes), longest, model.action_size)
    for index, ((m, lv), a) in enumerate(zip(series, actions, strict=True)):
        mu[index, :len(a)] = torch.from_numpy(m[:len(a)])
        logvar[index, :len(a)] = torch.from_numpy(lv[:len(a)])
        padded_actions[index, :len(a)] = torch.from_numpy(a)
    state = (torch.zeros(1, len(episodes), model.hidden_size, device=device),
             torch.zeros(1, len(episodes), model.hidden_size, device=device))
    mu_device, actions_device = mu.to(device), padded_actions.to(device)
    hs, cs = [], []
    for t in range(longest):
        hs.append(state[0][0].cpu())
        cs.append(state[1][0].cpu())
        _, _, state = model(mu_device[:, t:t + 1], actions_device[:, t:t + 1], state)
    valid = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
    h, c = torch.stack(hs, dim=1)[valid], torch.stack(cs, dim=1)[valid]
    return mu[valid], logvar[valid], (h, c)
