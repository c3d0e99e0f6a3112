"""Stage `train-controller`: C evolved with CMA-ES entirely inside M's dream.

Each generation, the whole population (``popsize`` candidates x ``rollouts`` dreams) runs as one
batch in the dream, starting from the latents of real first frames of the training episodes;
fitness is the mean dream return. Best / mean / worst / std per generation go to
``metrics/controller.jsonl``. Every ``eval_every`` generations the CMA mean is scored on many
dream rollouts and on a few real episodes (seeds of their own stream); the mean with the best
dream score is ``controller.pt``. The CMA-ES state is checkpointed every generation, so a
killed run continues at its generation.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.agents import WorldModelAgent
from worldmodels.checkpoint import file_sha256, load_checkpoint, save_checkpoint
from worldmodels.config import PipelineConfig
from worldmodels.data.latents import LatentReader
from worldmodels.data.split import split_episodes
from worldmodels.data.store import RolloutReader
from worldmodels.dream import DreamEnv, population_returns
from worldmodels.es import CMAES
from worldmodels.evaluation import CHECK_STREAM, evaluate_policy, evaluation_seeds
from worldmodels.figures import cmaes_curve
from worldmodels.metrics import MetricsLog
from worldmodels.models.controller import LinearController
from worldmodels.paths import PipelinePaths
from worldmodels.stages.mdnrnn import first_latents, load_mdnrnn
from worldmodels.stages.vae import load_vae

CHECKPOINT_KIND = "controller"


def load_controller(path: Path) -> tuple[LinearController, dict[str, Any]]:
    checkpoint = load_checkpoint(path, CHECKPOINT_KIND)
    controller = LinearController(**checkpoint["model_args"])
    controller.set_flat(checkpoint["parameters"])
    return controller.eval(), checkpoint


def _dream(model, start_mu, start_logvar, temperature, steps, seed) -> DreamEnv:
    return DreamEnv(model, start_mu, start_logvar, temperature=temperature, max_steps=steps,
                    generator=torch.Generator().manual_seed(seed))


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Evolve C in the dream (or continue); returns the path of ``controller.pt``."""
    settings = config.controller
    torch.set_num_threads(settings.threads or os.cpu_count() or 1)
    rollouts = RolloutReader(paths.rollouts)
    latents = LatentReader(paths.latents, paths.vae, rollouts)
    model, _ = load_mdnrnn(paths.mdnrnn)
    train_episodes, _ = split_episodes(rollouts.episodes["seed"], config.data.heldout_fraction)
    start_mu, start_logvar = first_latents(latents, train_episodes)
    steps = settings.dream_steps or int(rollouts.lengths.min())
    model_args = {"z_size": model.z_size, "hidden_size": model.hidden_size, "action_size": model.action_size,
                  "inputs": settings.inputs}
    dimension = LinearController(**model_args).num_parameters
    inputs = {"mdnrnn_sha256": file_sha256(paths.mdnrnn), "settings": {k: v for k, v in vars(settings).items()
                                                                        if k not in ("generations", "threads")}}
    paths.ensure()
    log = MetricsLog(paths.metrics(CHECKPOINT_KIND), step_key="generation")
    last_path = paths.last_checkpoint(CHECKPOINT_KIND)
    strategy, best = _resume(last_path, inputs, log)
    if strategy is None:
        strategy = CMAES(dimension, settings.sigma0, settings.popsize, settings.seed)
    if strategy.generation >= settings.generations:
        print(f"{paths.controller}: already evolved for {strategy.generation} generations")
        return paths.controller
    vae, _ = load_vae(paths.vae)
    check_seeds = evaluation_seeds(settings.seed, settings.eval_real_episodes, CHECK_STREAM)
    common = {"kind": CHECKPOINT_KIND, "model_args": model_args, "inputs": inputs}
    with tqdm(total=settings.generations, initial=strategy.generation, desc="C", unit="gen",
              disable=not progress, dynamic_ncols=True) as bar:
        while strategy.generation < settings.generations:
            generation = strategy.generation + 1
            started = time.perf_counter()
            population = strategy.ask()
            dream = _dream(model, start_mu, start_logvar, settings.temperature, steps,
                           settings.seed * 1_000_003 + generation)
            fitness = population_returns(dream, torch.from_numpy(population).float(), settings.rollouts,
                                         model.action_size, settings.inputs).double().numpy()
            strategy.tell(population, fitness)
            seconds = time.perf_counter() - started
            record = {"generation": generation, "best": float(fitness.max()), "mean": float(fitness.mean()),
                      "worst": float(fitness.min()), "std": float(fitness.std()), "seconds": seconds,
                      "dream_steps_per_s": len(population) * settings.rollouts * steps / seconds}
            if generation % settings.eval_every == 0 or generation == settings.generations:
                record |= _evaluate_mean(strategy.mean, model_args, model, vae, start_mu, start_logvar, steps,
                                         config, check_seeds)
                if record["eval/dream_mean"] > best:
                    best = record["eval/dream_mean"]
                    save_checkpoint({**common, "parameters": torch.from_numpy(strategy.mean).float(),
                                     "generation": generation, "metrics": record}, paths.controller)
            log.append(record)
            save_checkpoint({**common, "strategy": strategy.state(), "best": best}, last_path)
            bar.update(1)
            bar.set_postfix(best=f"{record['best']:.0f}", mean=f"{record['mean']:.0f}",
                            steps_s=f"{record['dream_steps_per_s']:.0f}")
    cmaes_curve(log.read(), paths.figure("cmaes_curve"))
    return paths.controller


def _resume(path: Path, inputs: dict[str, Any], log: MetricsLog) -> tuple[CMAES | None, float]:
    if path.is_file():
        state = load_checkpoint(path, CHECKPOINT_KIND)
        if state["inputs"] == inputs:
            strategy = CMAES.from_state(state["strategy"])
            log.keep_up_to(strategy.generation)
            print(f"resuming C after generation {strategy.generation}")
            return strategy, state["best"]
        print(f"{path}: evolved in another dream or with other settings; starting C over")
    log.keep_up_to(0)
    return None, float("-inf")


def _evaluate_mean(mean: np.ndarray, model_args: dict[str, Any], model, vae, start_mu, start_logvar, steps: int,
                   config: PipelineConfig, check_seeds: list[int]) -> dict[str, float]:
    """The CMA mean scored on many dream rollouts and on a few real episodes."""
    settings = config.controller
    dream = _dream(model, start_mu, start_logvar, settings.temperature, steps, settings.seed + 7)
    parameters = torch.from_numpy(mean).float()[None]
    dream_score = float(population_returns(dream, parameters, settings.eval_dream_rollouts, model.action_size,
                                           settings.inputs)[0])
    result = {"eval/dream_mean": dream_score}
    if check_seeds:
        controller = LinearController(**model_args)
        controller.set_flat(parameters[0])
        real = evaluate_policy(config.env, WorldModelAgent(vae, model, controller), check_seeds)
        result |= {"eval/real_mean": float(real.mean()), "eval/real_std": float(real.std())}
    return result
