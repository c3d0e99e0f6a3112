"""Stage `oracle`: the linear tanh controller on the TRUE simulator state, tuned by CMA-ES in the
real env. It shows the ceiling of C's form at the pipeline's action repeat, so that a low V+M+C
score can be blamed on what V and M give C, not on the controller class.

``a = tanh(W s + b)`` with ``s`` the task's proprioceptive observation (cartpole: cart position,
cos and sin of the pole angle, and both velocities). Every candidate of a generation plays the
same ``oracle.episodes`` seeds (from the oracle's own seed stream); the CMA mean after the last
generation is scored on the evaluation seeds into ``scores/oracle.json``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worldmodels.config import PipelineConfig
from worldmodels.envs import make_env
from worldmodels.es import CMAES
from worldmodels.evaluation import ORACLE_STREAM, evaluation_seeds
from worldmodels.metrics import MetricsLog
from worldmodels.paths import PipelinePaths
from worldmodels.scores import Score

logger = logging.getLogger(__name__)


def state_policy_return(env, parameters: np.ndarray, seed: int) -> tuple[float, int]:
    """(return, agent steps) of one episode of ``a = tanh(W s + b)``; ``parameters`` = [W row-major, b]."""
    env.reset(seed)
    state = env.state()
    weights = parameters[:env.action_size * len(state)].reshape(env.action_size, len(state))
    bias = parameters[env.action_size * len(state):]
    total, steps, done = 0.0, 0, False
    while not done:
        state, reward, terminated, truncated = env.step_state(np.tanh(weights @ state + bias))
        total += reward
        steps += 1
        done = terminated or truncated
    return total, steps


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Tune the true-state controller and score it; returns ``scores/oracle.json``."""
    settings = config.oracle
    env = make_env(config.env)
    if not hasattr(env, "step_state"):
        env.close()
        raise ValueError(f"env.id: {config.env.id} exposes no true state; the oracle needs a dm_control task")
    paths.ensure()
    log = MetricsLog(paths.metrics("oracle"), step_key="generation")
    log.keep_up_to(0)
    started = time.perf_counter()
    try:
        env.reset(0)
        dimension = env.action_size * (len(env.state()) + 1)
        strategy = CMAES(dimension, settings.sigma0, settings.popsize, settings.seed)
        env_steps = 0
        for generation in tqdm(range(1, settings.generations + 1), desc="oracle", unit="gen", disable=not progress):
            seeds = evaluation_seeds(settings.seed, settings.episodes * generation, ORACLE_STREAM)[-settings.episodes:]
            population = strategy.ask()
            fitness = np.zeros(len(population))
            for index, candidate in enumerate(population):
                results = [state_policy_return(env, candidate, seed) for seed in seeds]
                fitness[index] = np.mean([r for r, _ in results])
                env_steps += sum(s for _, s in results) * config.env.action_repeat
            strategy.tell(population, fitness)
            log.append({"generation": generation, "best": float(fitness.max()), "mean": float(fitness.mean()),
                        "worst": float(fitness.min())})
        seeds = evaluation_seeds(config.evaluate.seed, config.evaluate.episodes)
        returns = np.array([state_policy_return(env, strategy.mean, seed)[0] for seed in seeds])
    finally:
        env.close()
    score = Score.of("oracle", returns, seeds, env_steps, time.perf_counter() - started,
                     parameters=strategy.mean.tolist()).write(paths.score("oracle"))
    logger.info(f"oracle (linear, true state): {score.summary()} after {env_steps} env steps")
    return paths.score("oracle")
