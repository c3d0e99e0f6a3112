"""Gymnasium envs seen from pixels, e.g. ``gym:CarRacing-v3``.

The frame is the observation itself when the env observes an RGB image (CarRacing's 96x96x3),
otherwise ``env.render()`` with ``render_mode="rgb_array"``. It is cropped to ``crop`` rows
(the paper's CarRacing crop ``[0, 84]`` drops the dashboard) and resized (``crop_and_resize``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldmodels.envs.base import PixelEnv, StepResult, crop_and_resize, scale_action
from worldmodels.errors import UserValueError


def _is_image_space(space: Any) -> bool:
    shape = getattr(space, "shape", None)
    return shape is not None and len(shape) == 3 and shape[-1] == 3 and space.dtype == np.uint8


class GymPixelEnv(PixelEnv):
    """A gymnasium env with a continuous (Box) action space, seen as ``size x size`` frames."""

    def __init__(self, env_id: str, action_repeat: int = 1, size: int = 64,
                 crop: tuple[int, int] | None = None, max_episode_steps: int | None = None) -> None:
        import gymnasium as gym

        try:
            self._env = gym.make(env_id, render_mode="rgb_array",
                                 max_episode_steps=None if max_episode_steps is None
                                 else max_episode_steps * action_repeat)
        except gym.error.Error as error:
            raise UserValueError(f"env.id: cannot make gymnasium env {env_id!r}: {error}") from None
        space = self._env.action_space
        if not isinstance(space, gym.spaces.Box):
            self._env.close()
            raise UserValueError(f"env.id: {env_id} has a {type(space).__name__} action space; "
                             "only continuous (Box) action spaces are supported")
        self._low = np.asarray(space.low, dtype=np.float64).ravel()
        self._high = np.asarray(space.high, dtype=np.float64).ravel()
        if not (np.all(np.isfinite(self._low)) and np.all(np.isfinite(self._high))):
            self._env.close()
            raise UserValueError(f"env.id: {env_id} has unbounded actions; cannot map [-1, 1] onto them")
        self._action_shape = space.shape
        self._frame_from_observation = _is_image_space(self._env.observation_space)
        self._env_id = env_id
        self._action_repeat = action_repeat
        self._size = size
        self._crop = crop
        self.action_size = int(np.prod(space.shape))
        self.frame_shape = (size, size, 3)

    def _frame(self, observation: Any) -> np.ndarray:
        image = observation if self._frame_from_observation else self._env.render()
        return crop_and_resize(image, self._crop, self._size)

    def reset(self, seed: int) -> np.ndarray:
        observation, _ = self._env.reset(seed=int(seed))
        return self._frame(observation)

    def step(self, action: np.ndarray) -> StepResult:
        env_action = scale_action(self._check_action(action), self._low, self._high)
        env_action = env_action.reshape(self._action_shape).astype(self._env.action_space.dtype)
        reward = 0.0
        terminated = truncated = False
        for _ in range(self._action_repeat):
            observation, step_reward, terminated, truncated, _ = self._env.step(env_action)
            reward += float(step_reward)
            if terminated or truncated:
                break
        return StepResult(self._frame(observation), reward, bool(terminated), bool(truncated))

    def describe(self) -> dict[str, Any]:
        spec = self._env.spec
        return {
            "backend": "gymnasium",
            "env_id": self._env_id,
            "action_low": self._low.tolist(),
            "action_high": self._high.tolist(),
            "frame_source": "observation" if self._frame_from_observation else "render",
            "max_env_steps": None if spec is None else spec.max_episode_steps,
        }

    def close(self) -> None:
        self._env.close()
