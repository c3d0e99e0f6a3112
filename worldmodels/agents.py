"""Agents that act in the real env through the same policy interface as the exploration policies.

:class:`WorldModelAgent` is V + M + C acting for a batch of ``n`` envs: each frame goes through V
(z = mu), C acts on ``[z, h]`` (or ``[z, c, h]``, or ``[z, the previous frame's z]``), and M reads ``(z, a)``
to update ``h`` for the next step.

Agents act on their networks' device: frames go there, actions come back as CPU numpy arrays.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch

from worldmodels.envs.policies import Policy
from worldmodels.models.controller import LinearController
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import ConvVAE, frames_to_input


class WorldModelAgent(Policy):
    """V + M + C. ``act(frames)``: uint8 ``(n, 64, 64, 3)`` -> actions ``(n, A)`` in [-1, 1].

    ``noise_std`` adds Gaussian exploration noise (clipped to [-1, 1]), drawn per env from its
    seed, for collecting on-policy data.
    """

    name = "worldmodel"

    def __init__(self, vae: ConvVAE, mdnrnn: MDNRNN, controller: LinearController, noise_std: float = 0.0) -> None:
        self.device = next(vae.parameters()).device
        self.vae, self.mdnrnn, self.controller = vae.eval(), mdnrnn.eval(), controller.to(self.device).eval()
        self.noise_std = noise_std
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._previous_z: torch.Tensor | None = None
        self._rngs: list[np.random.Generator] = []

    def reset(self, seeds: Sequence[int]) -> None:
        count, hidden = len(seeds), self.mdnrnn.hidden_size
        zeros = torch.zeros(1, count, hidden, device=self.device)
        self._state = (zeros, zeros.clone())
        self._previous_z = None
        self._rngs = [np.random.default_rng(int(seed)) for seed in seeds]

    def on_device(self, device: str) -> WorldModelAgent:
        if torch.device(device) == self.device:
            return self
        return WorldModelAgent(*(copy.deepcopy(m).to(device) for m in (self.vae, self.mdnrnn, self.controller)),
                               noise_std=self.noise_std)

    @torch.no_grad()
    def act(self, frames: np.ndarray) -> np.ndarray:
        assert self._state is not None and len(frames) == self._state[0].shape[1], "reset() for this many envs first"
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        z, _ = self.vae.encode(frames_to_input(x))
        previous_z = z if self._previous_z is None else self._previous_z  # first frame: as the dream starts
        actions = self.controller(z, self._state[0][0], self._state[1][0], previous_z)
        self._previous_z = z
        if self.noise_std > 0:
            noise = np.stack([rng.normal(0.0, self.noise_std, actions.shape[1]) for rng in self._rngs])
            actions = (actions + torch.from_numpy(noise).to(self.device, actions.dtype)).clamp(-1.0, 1.0)
        _, _, self._state = self.mdnrnn(z[:, None], actions[:, None], self._state)
        return actions.cpu().numpy().astype(np.float32)


class ZeroPolicy(Policy):
    """a = 0 at every step: on cartpole the pole starts upright, so doing nothing scores well."""

    name = "zero"

    def __init__(self, action_size: int) -> None:
        self.action_size = action_size

    def reset(self, seeds: Sequence[int]) -> None:
        self._count = len(seeds)

    def act(self, frames: np.ndarray) -> np.ndarray:
        return np.zeros((len(frames), self.action_size), np.float32)


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


class StateLinearPolicy:
    """The oracle's form, ``a = tanh(W s + b)`` on the true state ``s`` ``(S,)``, from its flat parameters
    ``[W row by row, b]`` (what the oracle's CMA-ES searches over)."""

    def __init__(self, parameters, state_size: int, action_size: int) -> None:
        flat = np.asarray(parameters, dtype=np.float64)
        if len(flat) != action_size * (state_size + 1):
            raise ValueError(f"the oracle has {len(flat)} parameters; a state of {state_size} and {action_size} "
                             f"actions need {action_size * (state_size + 1)}")
        self.weights = flat[:action_size * state_size].reshape(action_size, state_size)
        self.bias = flat[action_size * state_size:]

    def preactivation(self, state: np.ndarray) -> np.ndarray:
        """``W s + b`` ``(A,)``: what the tanh squashes into the action."""
        return self.weights @ state + self.bias

    def __call__(self, state: np.ndarray) -> np.ndarray:
        return np.tanh(self.preactivation(state))
