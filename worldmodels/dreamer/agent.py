"""Dreamer acting in the real env (encoder, RSSM posterior, actor), through the policy interface of
the exploration policies. It acts on its networks' device: frames go there, actions come back as CPU
numpy arrays.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from worldmodels.envs.policies import Policy


class DreamerAgent(Policy):
    """Dreamer's actor on the RSSM's posterior. ``act(frames)``: uint8 ``(n, 64, 64, 3)`` -> ``(n, A)``.

    Each frame updates the posterior state with the previous action (its mean: no sampling when
    acting). Evaluating: the actor's mode. Collecting (``explore``): a sample of the actor plus
    Gaussian noise of ``noise_std``, clipped to [-1, 1] (Dreamer v1's exploration), both drawn per
    env from its seed.
    """

    name = "dreamer"

    def __init__(self, world_model, actor, noise_std: float = 0.0, explore: bool = False) -> None:
        self.device = next(world_model.parameters()).device
        self.world_model, self.actor = world_model.eval(), actor.eval()
        self.noise_std, self.explore = noise_std, explore
        self._state = None
        self._previous: torch.Tensor | None = None
        self._rngs: list[np.random.Generator] = []

    def reset(self, seeds: Sequence[int]) -> None:
        self._state = self.world_model.rssm.initial(len(seeds))
        self._previous = torch.zeros(len(seeds), self.world_model.rssm.action_size, device=self.device)
        self._rngs = [np.random.default_rng(int(seed)) for seed in seeds]

    def on_device(self, device: str) -> DreamerAgent:
        if torch.device(device) == self.device:
            return self
        return DreamerAgent(copy.deepcopy(self.world_model).to(device), copy.deepcopy(self.actor).to(device),
                            noise_std=self.noise_std, explore=self.explore)

    @torch.no_grad()
    def act(self, frames: np.ndarray) -> np.ndarray:
        from worldmodels.models.rssm import frames_to_images

        assert self._state is not None and len(frames) == len(self._previous), "reset() for this many envs first"
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        embed = self.world_model.encoder(frames_to_images(x))
        self._state, _ = self.world_model.rssm.observe_step(self._state, self._previous, embed,
                                                            torch.zeros_like(self._state.stoch))
        if self.explore:
            draws = np.stack([rng.standard_normal(self._previous.shape[1]) for rng in self._rngs])
            actions = self.actor.sample_from(self._state.features, torch.from_numpy(draws).to(self.device,
                                                                                              torch.float32))
        else:
            actions = self.actor.mode(self._state.features)
        if self.explore and self.noise_std > 0:
            noise = np.stack([rng.normal(0.0, self.noise_std, actions.shape[1]) for rng in self._rngs])
            actions = (actions + torch.from_numpy(noise).to(self.device, actions.dtype)).clamp(-1.0, 1.0)
        self._previous = actions
        return actions.cpu().numpy().astype(np.float32)
