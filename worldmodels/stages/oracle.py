"""Stage `oracle`: the linear tanh controller on the TRUE simulator state, tuned by CMA-ES in the
real env. It shows the ceiling of C's form at the pipeline's action repeat, so that a low V+M+C
score can be blamed on what V and M give C, not on the controller class.

``a = tanh(W s + b)`` with ``s`` the task's proprioceptive observation (cartpole: cart position,
cos and sin of the pole angle, and both velocities). Every candidate of a generation plays the
same ``oracle.episodes`` seeds (from the oracle's own seed stream); the CMA mean after the last
generation is scored on the evaluation seeds into ``scores/oracle.json``. Episodes run in
``evaluate.workers`` processes.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from worldmodels.config import EnvConfig, PipelineConfig
from worldmodels.core.es import CMAES
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.envs import has_true_state, make_env
from worldmodels.evaluation.baselines import StateLinearPolicy
from worldmodels.evaluation.episodes import ORACLE_STREAM, Score, evaluation_seeds
from worldmodels.pools.backend import open_pool

logger = logging.getLogger(__name__)


def state_policy_return(env, parameters: np.ndarray, seed: int) -> tuple[float, int]:
    """(return, agent steps) of one episode of ``a = tanh(W s + b)``; ``parameters`` = [W row-major, b]."""
    env.reset(seed)
    state = env.state()
    policy = StateLinearPolicy(parameters, len(state), env.action_size)
    total, steps, done = 0.0, 0, False
    while not done:
        state, reward, terminated, truncated = env.step_state(policy(state))
        total += reward
        steps += 1
        done = terminated or truncated
    return total, steps


_worker: dict[str, Any] = {}


def _init_worker(env_config: EnvConfig) -> None:
    _worker["env"] = make_env(env_config)


def _returns(task: tuple[np.ndarray, tuple[int, ...]]) -> list[tuple[float, int]]:
    """(return, agent steps) of ``parameters`` on each seed, in the worker's env."""
    parameters, seeds = task
    return [state_policy_return(_worker["env"], parameters, seed) for seed in seeds]


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path | None:
    """Tune the true-state controller and score it; returns ``scores/oracle.json`` (None, having said
    why, for an env without a true state: there is no oracle to tune, so `make all` goes on).

    Candidates (and the final evaluation's episodes) are played in ``evaluate.workers`` processes
    that stay up for the whole run; the results do not depend on their number."""
    settings = config.oracle
    resolve(config.runtime).apply()  # the workers' backend
    if not has_true_state(config.env):
        logger.warning(f"oracle: {config.env.id} exposes no true state (only dm_control tasks do); "
                       "no oracle row for this pipeline")
        return None
    env = make_env(config.env)
    try:
        env.reset(0)
        dimension = env.action_size * (len(env.state()) + 1)
    finally:
        env.close()
    paths.ensure()
    log = MetricsLog(paths.metrics("oracle"), step_key="generation")
    log.keep_up_to(0)
    started = time.perf_counter()
    strategy = CMAES(dimension, settings.sigma0, settings.popsize, settings.seed)
    env_steps = 0
    with open_pool(config.evaluate.workers, _init_worker, (config.env,)) as pool:
        try:
            for generation in tqdm(range(1, settings.generations + 1), desc="oracle", unit="gen",
                                   disable=not progress):
                seeds = tuple(evaluation_seeds(settings.seed, settings.episodes * generation,
                                               ORACLE_STREAM)[-settings.episodes:])
                population = strategy.ask()
                results = list(pool.map(_returns, [(candidate, seeds) for candidate in population],
                                        describe=lambda task: f"an oracle candidate on env seeds {list(task[1])}"))
                fitness = np.array([np.mean([r for r, _ in episodes]) for episodes in results])
                env_steps += sum(s for episodes in results for _, s in episodes) * config.env.action_repeat
                strategy.tell(population, fitness)
                log.append({"generation": generation, "best": float(fitness.max()), "mean": float(fitness.mean()),
                            "worst": float(fitness.min())})
            seeds = evaluation_seeds(config.evaluate.seed, config.evaluate.episodes)
            groups = [tuple(seeds[i:i + 10]) for i in range(0, len(seeds), 10)]
            returns = np.array([r for group in pool.map(_returns, [(strategy.mean, g) for g in groups])
                                for r, _ in group])
        finally:
            if "env" in _worker:  # the in-process env of workers = 0
                _worker.pop("env").close()
    score = Score.of("oracle", returns, seeds, env_steps, time.perf_counter() - started,
                     parameters=strategy.mean.tolist()).write(paths.score("oracle"))
    logger.info(f"oracle (linear, true state): {score.summary()} after {env_steps} env steps")
    return paths.score("oracle")
