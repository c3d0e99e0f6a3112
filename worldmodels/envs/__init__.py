"""Environments behind one interface (:class:`PixelEnv`), and the exploration policies."""

from __future__ import annotations

from typing import Any

from worldmodels.config import EnvConfig
from worldmodels.envs.base import PixelEnv, StepResult
from worldmodels.envs.policies import Policy, make_exploration_policy
from worldmodels.errors import UserValueError


def make_env(config: EnvConfig) -> PixelEnv:
    """Build the env that ``config.id`` names (``dmc:<domain>-<task>``, ``gym:<EnvId>``, ``vizdoom:<scenario>``)."""
    kind, _, name = config.id.partition(":")
    if kind == "dmc":
        from worldmodels.envs.dmc import DMCEnv

        if config.crop is not None:
            raise UserValueError("env.crop: dm_control frames are rendered at frame_size directly; set crop: null")
        return DMCEnv(name, action_repeat=config.action_repeat, size=config.frame_size,
                      camera=config.camera, shadows=config.shadows, reflections=config.reflections,
                      antialias=config.antialias, max_episode_steps=config.max_episode_steps)
    if kind == "gym":
        from worldmodels.envs.gym_env import GymPixelEnv

        return GymPixelEnv(name, action_repeat=config.action_repeat, size=config.frame_size,
                           crop=config.crop, max_episode_steps=config.max_episode_steps)
    if kind == "vizdoom":
        from worldmodels.envs.vizdoom_env import VizDoomEnv

        return VizDoomEnv(name, action_repeat=config.action_repeat, size=config.frame_size, crop=config.crop,
                          max_episode_steps=config.max_episode_steps, difficulty=config.difficulty)
    raise UserValueError(f"env.id: unknown env kind {kind!r} in {config.id!r} (known: dmc, gym, vizdoom)")


def has_true_state(config: EnvConfig) -> bool:
    """Whether the env exposes its true state (``state()``, ``step_state()``) beside its frames, as the
    oracle needs: dm_control tasks do; gymnasium pixel envs and ViZDoom do not."""
    return config.id.partition(":")[0] == "dmc"


def probe_env(env_config: EnvConfig) -> tuple[dict[str, Any], tuple[int, int, int], int]:
    """Build the env once to learn (describe(), frame shape, action size)."""
    env = make_env(env_config)
    try:
        return env.describe(), env.frame_shape, env.action_size
    finally:
        env.close()


__all__ = ["PixelEnv", "Policy", "StepResult", "has_true_state", "make_env", "make_exploration_policy", "probe_env"]
