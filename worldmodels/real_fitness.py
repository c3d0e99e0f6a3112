"""C's fitness from real episodes (the paper's CarRacing mode): each candidate drives V + M + C in
the real env, in worker processes that hold V and M once.

Every candidate of a generation plays the same env seeds, so candidates are compared on equal
terms; a candidate's ``rollouts`` episodes run in lockstep so that V and M act on one batch.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from worldmodels.agents import WorldModelAgent
from worldmodels.config import EnvConfig
from worldmodels.evaluation import play_episodes
from worldmodels.models.controller import LinearController
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import ConvVAE
from worldmodels.parallel import ordered_map

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


def real_population_fitness(env_config: EnvConfig, vae: ConvVAE, mdnrnn: MDNRNN, model_args: dict[str, Any],
                            population: np.ndarray, seeds: list[int], workers: int) -> tuple[np.ndarray, int]:
    """Fitness ``(P,)`` of candidates ``(P, D)``: mean real return over ``seeds``; and agent steps played.

    A worker that dies raises :class:`~worldmodels.parallel.WorkerError` naming the candidate.
    """
    # Workers play on the CPU: they get CPU copies of V and M, never CUDA tensors.
    vae, mdnrnn = (copy.deepcopy(model).cpu() if next(model.parameters()).is_cuda else model for model in (vae, mdnrnn))
    tasks = [(index, candidate, tuple(seeds)) for index, candidate in enumerate(population)]
    results = list(ordered_map(_candidate_return, tasks, workers, _init_worker,
                               (env_config, vae, mdnrnn, model_args),
                               describe=lambda task: f"candidate {task[0]} on env seeds {list(task[2])}"))
    return np.array([mean for mean, _ in results]), sum(steps for _, steps in results)
