"""V + M + C acting in the real env, through the same policy interface as the exploration policies.

:class:`WorldModelAgent` acts for a batch of ``n`` envs: each frame goes through V (z = mu), C acts on
``[z, h]`` (or ``[z, c, h]``, or ``[z, the previous frame's z]``), and M reads ``(z, a)`` to update ``h``
for the next step. It acts on its networks' device: frames go there, actions come back as CPU numpy
arrays.
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
