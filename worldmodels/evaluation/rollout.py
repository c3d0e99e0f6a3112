"""The rollout engine: one env driven by a policy for one episode, seeded reproducibly."""

from __future__ import annotations

import numpy as np

from worldmodels.data.store import Episode
from worldmodels.envs.base import PixelEnv
from worldmodels.envs.policies import Policy


def episode_seeds(base_seed: int, index: int) -> tuple[int, int]:
    """The (env seed, policy seed) of episode ``index`` of a run seeded with ``base_seed``.

    Derived from ``(base_seed, index)`` alone, so an episode is the same whichever worker runs
    it and however many there are.
    """
    env_seed, policy_seed = np.random.SeedSequence([base_seed, index]).generate_state(2, dtype=np.uint32)
    return int(env_seed), int(policy_seed)


def run_episode(env: PixelEnv, policy: Policy, env_seed: int, policy_seed: int, max_steps: int = 0) -> Episode:
    """Play one episode until the env terminates or truncates it, or (``max_steps > 0``) until
    ``max_steps`` agent steps, where it is marked truncated.

    Returns an :class:`Episode` with ``T + 1`` frames and ``T`` actions (seed fields set, source
    fields left for the caller).
    """
    frame = env.reset(env_seed)
    policy.reset([policy_seed])
    frames, actions, rewards, terminated, truncated = [frame], [], [], [], []
    while True:
        action = policy.act(frame[None])[0]
        result = env.step(action)
        frame = result.frame
        frames.append(frame)
        actions.append(action)
        rewards.append(result.reward)
        terminated.append(result.terminated)
        truncated.append(result.truncated or len(actions) == max_steps)
        if result.terminated or truncated[-1]:
            break
    return Episode(frames=np.stack(frames), actions=np.asarray(actions, dtype=np.float32),
                   rewards=np.asarray(rewards, dtype=np.float32),
                   terminated=np.asarray(terminated, dtype=bool),
                   truncated=np.asarray(truncated, dtype=bool),
                   seed=env_seed, policy_seed=policy_seed)
