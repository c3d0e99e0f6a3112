"""C's fitness from real episodes (the paper's CarRacing mode): each candidate drives V + M + C in
the real env, in workers (processes or Ray actors) that hold V and M for the whole evolution.

Every candidate of a generation plays the same env seeds, so candidates are compared on equal
terms; a candidate's ``rollouts`` episodes run in lockstep so that V and M act on one batch.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from worldmodels.config import EnvConfig
from worldmodels.evaluation.episodes import play_episodes
from worldmodels.models.controller import LinearController
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import ConvVAE
from worldmodels.pools.backend import open_pool
from worldmodels.vmc.agent import WorldModelAgent

_worker: dict[str, Any] = {}


def _init_worker(env_config: EnvConfig, vae: ConvVAE, mdnrnn: MDNRNN, model_args: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    _worker.update(env_config=env_config, vae=vae, mdnrnn=mdnrnn, model_args=model_args)


def _candidate_return(task: tuple[int, np.ndarray, tuple[int, ...]]) -> tuple[float, int]:
    """(mean return, agent steps) of one candidate over the seeds."""
    _, parameters, seeds = task
    controller = LinearController(**_worker["model_args"])
    controller.set_flat(torch.from_numpy(parameters).float())
    agent = WorldModelAgent(_worker["vae"], _worker["mdnrnn"], controller)
    episodes = list(play_episodes(_worker["env_config"], agent, seeds, batch=len(seeds)))
    return float(np.mean([e.rewards.sum() for e in episodes])), sum(e.length for e in episodes)


class RealFitnessWorkers:
    """Workers that hold V and M for a whole evolution: the pool (local processes or Ray actors,
    ``worldmodels.pools.backend.open_pool``) is made once and V and M are sent to it once, not every generation.

    ``with RealFitnessWorkers(env_config, vae, mdnrnn, model_args, workers) as workers:
    workers.fitness(population, seeds)``."""

    def __init__(self, env_config: EnvConfig, vae: ConvVAE, mdnrnn: MDNRNN, model_args: dict[str, Any],
                 workers: int) -> None:
        # Workers play on the CPU: they get CPU copies of V and M, never CUDA tensors.
        vae, mdnrnn = (copy.deepcopy(model).cpu() if next(model.parameters()).is_cuda else model
                       for model in (vae, mdnrnn))
        self.pool = open_pool(workers, _init_worker, (env_config, vae, mdnrnn, model_args))

    def fitness(self, population: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, int]:
        """Fitness ``(P,)`` of candidates ``(P, D)``: mean real return over ``seeds``; and agent steps played.

        A worker that dies raises :class:`~worldmodels.pools.workers.WorkerError` naming the candidate."""
        tasks = [(index, candidate, tuple(seeds)) for index, candidate in enumerate(population)]
        results = list(self.pool.map(_candidate_return, tasks,
                                     describe=lambda task: f"candidate {task[0]} on env seeds {list(task[2])}"))
        return np.array([mean for mean, _ in results]), sum(steps for _, steps in results)

    def close(self, kill: bool = False) -> None:
        self.pool.close(kill=kill)

    def __enter__(self) -> RealFitnessWorkers:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(kill=exc_type is not None)


def real_population_fitness(env_config: EnvConfig, vae: ConvVAE, mdnrnn: MDNRNN, model_args: dict[str, Any],
                            population: np.ndarray, seeds: list[int], workers: int) -> tuple[np.ndarray, int]:
    """:meth:`RealFitnessWorkers.fitness` of one population, with workers made for it alone."""
    with RealFitnessWorkers(env_config, vae, mdnrnn, model_args, workers) as pool:
        return pool.fitness(population, seeds)
