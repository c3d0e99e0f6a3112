"""Scoring a policy in the real env: episodes run in lockstep so that the policy acts on a batch.

Evaluation seeds come from ``SeedSequence([seed, EVALUATION_STREAM, i])``: a different stream
from the collect seeds ``SeedSequence([seed, i])``, so no evaluation episode starts where a
training episode did.
"""

from __future__ import annotations

import numpy as np

from worldmodels.config import EnvConfig
from worldmodels.envs import make_env
from worldmodels.envs.policies import Policy

EVALUATION_STREAM = 0xE7A1  # the final score (`wm evaluate`)
CHECK_STREAM = 0xC4EC  # the periodic real-env checks during C's training
ORACLE_STREAM = 0x0AC1  # the true-state oracle's training episodes


def evaluation_seeds(base_seed: int, count: int, stream: int = EVALUATION_STREAM) -> list[int]:
    """The env seeds of evaluation episodes ``0 .. count - 1`` of ``stream``."""
    return [int(np.random.SeedSequence([base_seed, stream, i]).generate_state(1, dtype=np.uint32)[0])
            for i in range(count)]


def evaluate_policy(env_config: EnvConfig, policy: Policy, seeds: list[int], batch: int = 8) -> np.ndarray:
    """Real returns ``(len(seeds),)`` of ``policy``, ``batch`` envs at a time in lockstep."""
    envs = [make_env(env_config) for _ in range(min(batch, len(seeds)))]
    returns = np.zeros(len(seeds))
    try:
        for first in range(0, len(seeds), len(envs)):
            group = seeds[first:first + len(envs)]
            active = envs[:len(group)]
            frames = np.stack([env.reset(seed) for env, seed in zip(active, group, strict=True)])
            policy.reset(group)
            done = np.zeros(len(group), bool)
            while not done.all():
                actions = policy.act(frames)
                for index, env in enumerate(active):
                    if done[index]:
                        continue
                    result = env.step(actions[index])
                    returns[first + index] += result.reward
                    frames[index] = result.frame
                    done[index] = result.terminated or result.truncated
    finally:
        for env in envs:
            env.close()
    return returns
