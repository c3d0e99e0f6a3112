"""DeepMind Control Suite tasks seen from pixels, e.g. ``dmc:cartpole-balance``.

Speed matters here (collection renders one frame per agent step), so the adapter:
- renders only the last frame of each action repeat, through one reused ``Camera``;
- turns shadows and reflections off by default (about 4x faster at 64x64, near-identical pixels);
- steps the task and physics directly, skipping the state observation that ``Environment.step``
  computes and pixels never use (a quarter of the stepping time on cartpole).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from worldmodels.envs.base import PixelEnv, StepResult, scale_action
from worldmodels.errors import UserValueError


def ensure_headless_rendering() -> None:
    """Render with EGL unless the user chose a MuJoCo GL backend; must run before dm_control loads."""
    os.environ.setdefault("MUJOCO_GL", "egl")


def parse_task(name: str) -> tuple[str, str]:
    """``"cartpole-balance"`` -> ``("cartpole", "balance")``; checks that the suite has it."""
    ensure_headless_rendering()
    from dm_control import suite

    domain, sep, task = name.partition("-")
    if not sep or (domain, task) not in suite.ALL_TASKS:
        known = ", ".join(f"{d}-{t}" for d, t in suite.ALL_TASKS)
        raise UserValueError(f"env.id: unknown dm_control task {name!r} (known: {known})")
    return domain, task


class DMCEnv(PixelEnv):
    """A dm_control suite task with frames rendered from ``camera`` at ``size x size``."""

    def __init__(self, task_name: str, action_repeat: int = 1, size: int = 64, camera: int = 0,
                 shadows: bool = False, reflections: bool = False, antialias: bool = True,
                 max_episode_steps: int | None = None) -> None:
        domain, task = parse_task(task_name)
        from dm_control import suite
        from dm_control.mujoco.engine import Camera

        self._env = suite.load(domain, task)
        self._task = self._env.task
        self._physics = self._env.physics
        model = self._physics.model
        # Render flags live in the model and are read when the GL context is made (first render).
        if not shadows:
            model.light_castshadow[:] = 0
        if not reflections:
            model.mat_reflectance[:] = 0
        if not antialias:
            model.vis.quality.offsamples = 0
        self._camera = Camera(self._physics, height=size, width=size, camera_id=camera)

        spec = self._env.action_spec()
        self._low = np.asarray(spec.minimum, dtype=np.float64)
        self._high = np.asarray(spec.maximum, dtype=np.float64)
        self.action_size = int(np.prod(spec.shape))
        self.frame_shape = (size, size, 3)
        self._task_name = task_name
        self._action_repeat = action_repeat
        self._n_substeps = int(round(self._env.control_timestep() / self._physics.timestep()))
        # dm_control offers no public accessor for the suite's time limit (1000 control steps).
        self._control_step_limit = self._env._step_limit
        own_limit = math.ceil(self._control_step_limit / action_repeat)
        self.max_episode_steps = min(own_limit, max_episode_steps or own_limit)
        self._control_steps = 0
        self._agent_steps = 0

    def reset(self, seed: int) -> np.ndarray:
        self._task.random.seed(seed)
        self._env.reset()
        self._control_steps = 0
        self._agent_steps = 0
        return self._render()

    def step(self, action: np.ndarray) -> StepResult:
        reward, terminated, truncated = self._advance(action)
        return StepResult(self._render(), reward, terminated, truncated)

    def state(self) -> np.ndarray:
        """The task's true state (its proprioceptive observation, flattened), ``(S,)`` float64."""
        observation = self._task.get_observation(self._physics)
        return np.concatenate([np.asarray(value, dtype=np.float64).ravel() for value in observation.values()])

    def state_names(self) -> list[str]:
        """A name per entry of :meth:`state`: the observation's name, with an index where it has
        several (cartpole: ``position[0..2]`` = cart position, pole cos, sin; ``velocity[0..1]``)."""
        names = []
        for name, value in self._task.get_observation(self._physics).items():
            size = int(np.asarray(value).size)
            names += [name] if size == 1 else [f"{name}[{i}]" for i in range(size)]
        return names

    def state_parts(self) -> dict[str, np.ndarray]:
        """Which entries of :meth:`state` are velocities (observations named ``*velocity*``) and which
        the rest (positions, angles, orientations): ``{"position": indices, "velocity": indices}``."""
        parts: dict[str, list[int]] = {"position": [], "velocity": []}
        offset = 0
        for name, value in self._task.get_observation(self._physics).items():
            size = int(np.asarray(value).size)
            parts["velocity" if "velocity" in name else "position"] += range(offset, offset + size)
            offset += size
        return {name: np.asarray(indices, dtype=np.int64) for name, indices in parts.items()}

    def step_state(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """Like :meth:`step` but returns the true state instead of rendering a frame (for oracles)."""
        reward, terminated, truncated = self._advance(action)
        return self.state(), reward, terminated, truncated

    def _advance(self, action: np.ndarray) -> tuple[float, bool, bool]:
        """Apply one agent step; returns (summed reward, terminated, truncated)."""
        env_action = scale_action(self._check_action(action), self._low, self._high)
        reward = 0.0
        terminated = truncated = False
        for _ in range(self._action_repeat):
            self._task.before_step(env_action, self._physics)
            self._physics.step(self._n_substeps)
            self._task.after_step(self._physics)
            reward += float(self._task.get_reward(self._physics) or 0.0)
            self._control_steps += 1
            if self._control_steps >= self._control_step_limit:
                truncated = True
                break
            if self._task.get_termination(self._physics) is not None:
                terminated = True
                break
        self._agent_steps += 1
        if not terminated and self._agent_steps >= self.max_episode_steps:
            truncated = True
        return reward, terminated, truncated

    def _render(self) -> np.ndarray:
        # Camera.render returns a view of one buffer it reuses for every frame: copy it out.
        return self._camera.render().copy()

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "dm_control",
            "task": self._task_name,
            "action_low": self._low.tolist(),
            "action_high": self._high.tolist(),
            "control_timestep": self._env.control_timestep(),
            "max_episode_steps": self.max_episode_steps,
            "mujoco_gl": os.environ.get("MUJOCO_GL", ""),
        }

    def close(self) -> None:
        self._camera = None
        self._env.close()
