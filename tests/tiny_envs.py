"""A tiny gymnasium env for schedule tests: ``gym:tests.tiny_envs:Slider-v0``.

A dot on an 8x8 image moves with the action; the reward is higher the nearer it is to the middle.
Every episode lasts exactly ``EPISODE_ENV_STEPS`` env steps (truncated), so env steps can be
counted exactly at any action repeat that divides it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

EPISODE_ENV_STEPS = 20


class SliderEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.render_mode = render_mode
        self._t, self._x = 0, 0.0

    def _observation(self) -> np.ndarray:
        image = np.zeros((8, 8, 3), np.uint8)
        image[3:5, int(round((self._x + 1) * 3.5))] = 255
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t, self._x = 0, float(self.np_random.uniform(-0.5, 0.5))
        return self._observation(), {}

    def step(self, action):
        self._t += 1
        self._x = float(np.clip(self._x + 0.2 * float(np.asarray(action).reshape(-1)[0]), -1.0, 1.0))
        return self._observation(), 1.0 - abs(self._x), False, self._t >= EPISODE_ENV_STEPS, {}


gym.register("Slider-v0", entry_point=SliderEnv)
