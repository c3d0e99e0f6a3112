"""Gymnasium envs that fail on purpose, for the collect stage's error handling.

Used as ``gym:tests.faulty_envs:Raising-v0``: gymnasium imports this module (registering the
envs) in whichever process makes the env, worker processes included.
"""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np


class _TinyImageEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.render_mode = render_mode
        self._t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return np.zeros((8, 8, 3), np.uint8), {}

    def step(self, action):
        self._t += 1
        if self._t == 3:
            self._fail()
        return np.full((8, 8, 3), self._t, np.uint8), 1.0, False, self._t >= 5, {}

    def _fail(self) -> None:
        """Nothing: the healthy env."""


class RaisingEnv(_TinyImageEnv):
    def _fail(self) -> None:
        raise RuntimeError("simulated env failure")


class DyingEnv(_TinyImageEnv):
    def _fail(self) -> None:
        os._exit(3)


gym.register("Healthy-v0", entry_point=_TinyImageEnv)
gym.register("Raising-v0", entry_point=RaisingEnv)
gym.register("Dying-v0", entry_point=DyingEnv)
