"""Stage `train-controller`: C evolved with CMA-ES inside M's dream (or in the real env).

Each generation, the whole population (``popsize`` candidates x ``rollouts`` dreams) runs as one
batch in the dream, starting from the latents of real first frames of the training episodes;
fitness is the mean dream return. With ``fitness_in: real`` (the paper's CarRacing mode) every
candidate instead drives V + M + C through ``rollouts`` real episodes in worker processes.
Best / mean / worst / std per generation go to ``metrics/controller.jsonl``. Every
``eval_every`` generations the CMA mean is scored on many dream rollouts and on a few real
episodes (seeds of their own stream); the mean with the best score is ``controller.pt``. The
CMA-ES state is checkpointed every generation, so a killed run continues at its generation. At the
end, ``figures/controller_in_dream.gif`` shows the best C playing in M's dream.

The temperature sweep (``controller.temperatures``) evolves one C per dream temperature
(``controller_tau<T>.pt``) and scores each in its dream and in the real env:
``scores/temperature_table.json`` and ``.md``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.artifacts import CONTROLLER_KIND, load_controller, load_mdnrnn, load_vae, refuse_parts_of_other_runs
from worldmodels.config import PipelineConfig
from worldmodels.core.checkpoint import atomic_write, file_sha256
from worldmodels.core.es import CMAES
from worldmodels.core.metrics import MetricsLog, json_text
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.core.training import TrainingRun
from worldmodels.data.latents import LatentReader
from worldmodels.data.split import split_episodes
from worldmodels.data.store import RolloutReader
from worldmodels.envs import make_exploration_policy
from worldmodels.evaluation.episodes import (
    CHECK_STREAM,
    REAL_FITNESS_STREAM,
    evaluate_policy,
    evaluation_seeds,
    play_returns,
    searches_beside_reality,
)
from worldmodels.models.controller import LinearController, memory_step_scales
from worldmodels.reporting.anchors import PAPER_TASK, beside_the_paper, sweep_rows
from worldmodels.reporting.figures import cmaes_curve
from worldmodels.vmc.agent import WorldModelAgent
from worldmodels.vmc.dream import DreamEnv, population_returns
from worldmodels.vmc.dream_starts import every_step_starts, first_latents
from worldmodels.vmc.real_fitness import RealFitnessWorkers
from worldmodels.vmc.videos import controller_dream, write_gif

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = CONTROLLER_KIND
# Settings that change how C is scored or run, not what one search evolves (restarts: how many searches).
_NOT_IDENTITY = ("generations", "stop_at", "stop_at_score", "workers", "temperatures", "restarts")
# How many times longer than M's training windows a dream may run before C's ranking is suspect.
# TakeCover measured: dreams of 2,100 steps on windows of 100 (21x) paid holding one direction ~2.5x
# its real survival; on windows of 500 (4.2x, the paper's) that exploit was gone.
DREAM_TO_WINDOW_LIMIT = 5


def warn_if_dreams_outrun_m_windows(dream_steps: int, window: int) -> bool:
    """Warn (and return True) when C's dreams run more than ``DREAM_TO_WINDOW_LIMIT`` times as many
    steps as the windows M was trained on. Each window starts from a zero LSTM state, so M's state
    past ``window`` steps was never trained, yet that is where long dreams rank C."""
    if dream_steps <= DREAM_TO_WINDOW_LIMIT * window:
        return False
    logger.warning(f"C's dreams run up to {dream_steps} steps, {dream_steps / window:.0f}x the windows of "
                   f"{window} steps M was trained on (mdnrnn.sequence_length): M never learned to carry its "
                   f"state that far, and long dreams may pay what reality does not. Set it to at least "
                   f"{-(-dream_steps // DREAM_TO_WINDOW_LIMIT)}.")
    return True


def _dream(model, start_mu, start_logvar, temperature, steps, seed, start_states=None, reward="model",
           penalty=0.0) -> DreamEnv:
    return DreamEnv(model, start_mu, start_logvar, temperature=temperature, max_steps=steps,
                    generator=torch.Generator().manual_seed(seed), start_states=start_states, reward=reward,
                    penalty=penalty)


def search_name(index: int) -> str:
    """The artifact stem of search ``index`` (from 1) of ``controller.restarts``: ``controller_search2``."""
    return f"{CHECKPOINT_KIND}_search{index}"


def sweep_name(temperature: float) -> str:
    """The artifact stem of the sweep's C evolved at ``temperature``: ``controller_tau1.5``."""
    return f"{CHECKPOINT_KIND}_tau{temperature:g}"


class Evolution:
    """Everything one CMA-ES run of C needs: M, V, the dream's start latents, and where it writes."""

    def __init__(self, config: PipelineConfig, paths: PipelinePaths) -> None:
        self.config, self.paths = config, paths
        self.runtime = resolve(config.runtime).apply()
        rollouts = RolloutReader(paths.rollouts)
        latents = LatentReader(paths.latents, paths.vae, rollouts)
        self.model, m_checkpoint = load_mdnrnn(paths.mdnrnn, self.runtime.device)
        refuse_parts_of_other_runs(paths.vae, paths.mdnrnn, m_checkpoint)
        train_episodes, _ = split_episodes(rollouts.episodes["seed"], config.data.heldout_fraction)
        if config.controller.dream_starts == "first":
            self.start_mu, self.start_logvar = first_latents(latents, train_episodes)
            self.start_states = None
        else:
            self.start_mu, self.start_logvar, self.start_states = every_step_starts(self.model, latents, rollouts,
                                                                                   train_episodes)
        self.steps = config.controller.dream_steps or int(rollouts.lengths.min())
        warn_if_dreams_outrun_m_windows(self.steps, config.mdnrnn.sequence_length)
        self.model_args = {"z_size": self.model.z_size, "hidden_size": self.model.hidden_size,
                           "action_size": self.model.action_size, "inputs": config.controller.inputs,
                           "bias": config.controller.bias}
        if config.controller.layer_size:  # only then: the paper's linear C keeps the checkpoints it had
            self.model_args["layer_size"] = config.controller.layer_size
        self.mdnrnn_sha256 = file_sha256(paths.mdnrnn)
        self._vae = None
        self._real_workers: RealFitnessWorkers | None = None  # with fitness_in real: kept for one evolution

    def with_seed(self, seed: int) -> Evolution:
        """This evolution with ``controller.seed`` = ``seed``: another CMA-ES search (its own first
        population, dreams and check episodes) in the same dream, sharing M, V and the dream's starts."""
        other = copy.copy(self)
        other.config = dataclasses.replace(self.config,
                                           controller=dataclasses.replace(self.config.controller, seed=seed))
        other._real_workers = None
        return other

    @property
    def vae(self):
        if self._vae is None:
            self._vae, _ = load_vae(self.paths.vae, self.runtime.device)
        return self._vae

    def dream_returns(self, parameters: np.ndarray, temperature: float, rollouts: int, seed: int) -> np.ndarray:
        """The return of each of ``rollouts`` dreams ``(rollouts,)`` of ``parameters`` at ``temperature``."""
        settings = self.config.controller
        dream = _dream(self.model, self.start_mu, self.start_logvar, temperature, self.steps, seed, self.start_states,
                       settings.dream_reward, settings.disagreement_penalty)
        flat = torch.from_numpy(np.asarray(parameters)).float()[None].expand(rollouts, -1)
        return population_returns(dream, flat, 1, self.model.action_size, self.config.controller.inputs,
                                  layer_size=self.config.controller.layer_size).numpy()

    def dream_score(self, parameters: np.ndarray, temperature: float, rollouts: int, seed: int) -> float:
        """Mean return of ``parameters`` over ``rollouts`` dreams at ``temperature``."""
        return float(self.dream_returns(parameters, temperature, rollouts, seed).mean())

    def agent(self, parameters: np.ndarray) -> WorldModelAgent:
        controller = LinearController(**self.model_args)
        controller.set_flat(torch.from_numpy(np.asarray(parameters)).float())
        return WorldModelAgent(self.vae, self.model, controller)

    def real_returns(self, parameters: np.ndarray, seeds: list[int]) -> np.ndarray:
        return self.real_play(parameters, seeds)[0]

    def real_play(self, parameters: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, int]:
        """The real returns ``(len(seeds),)`` of V + M + C with C = ``parameters``, and the env steps they took."""
        returns, agent_steps = play_returns(self.config.env, self.agent(parameters), seeds,
                                            workers=self.config.controller.workers)
        return returns, int(agent_steps.sum()) * self.config.env.action_repeat

    def fitness(self, population: np.ndarray, temperature: float, generation: int) -> tuple[np.ndarray, int]:
        """Fitness ``(P,)`` of the population, and the steps it cost: real env steps, or dream steps."""
        settings = self.config.controller
        if settings.fitness_in == "real":
            seeds = evaluation_seeds(settings.seed, settings.rollouts, REAL_FITNESS_STREAM,
                                     offset=(generation - 1) * settings.rollouts)
            if self._real_workers is None:
                self._real_workers = RealFitnessWorkers(self.config.env, self.vae, self.model, self.model_args,
                                                        settings.workers)
            fitness, agent_steps = self._real_workers.fitness(population, seeds)
            return fitness, agent_steps * self.config.env.action_repeat
        dream = _dream(self.model, self.start_mu, self.start_logvar, temperature, self.steps,
                       settings.seed * 1_000_003 + generation, self.start_states, settings.dream_reward,
                       settings.disagreement_penalty)
        fitness = population_returns(dream, torch.from_numpy(population).float(), settings.rollouts,
                                     self.model.action_size, settings.inputs,
                                     layer_size=settings.layer_size).double().numpy()
        return fitness, dream.rows_stepped

    def evolve(self, temperature: float, name: str = CHECKPOINT_KIND, generations: int | None = None,
               start: np.ndarray | None = None, progress: bool = True) -> Path:
        """Evolve C at ``temperature`` into ``<name>.pt`` (or continue); ``start``: CMA-ES's first mean."""
        settings, paths = self.config.controller, self.paths
        generations = generations or settings.generations
        output = paths.root / f"{name}.pt"
        identity = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _NOT_IDENTITY}
        if identity["disagreement_penalty"] == 0:  # the paper's dream, as before the penalty existed: runs resume
            identity.pop("disagreement_penalty")
        if identity["memory_step_scale"] == 1.0:  # likewise for the isotropic start
            identity.pop("memory_step_scale")
        if identity["layer_size"] == 0:  # and for the paper's linear form
            identity.pop("layer_size")
        if identity["pick_temperature"] is None:  # and for C picked in the search's own dream
            identity.pop("pick_temperature")
        inputs = {"mdnrnn_sha256": self.mdnrnn_sha256, "settings": identity | {"temperature": temperature}}
        if start is not None:
            inputs["start"] = [float(x) for x in start]
        paths.ensure()
        run = TrainingRun(CHECKPOINT_KIND, {"inputs": inputs}, paths.last_checkpoint(name), output,
                          MetricsLog(paths.metrics(name), step_key="generation"), self.runtime, "C")
        state = run.resume(step_of=lambda saved: CMAES.from_state(saved["strategy"]).generation)
        strategy, best = (None, float("-inf")) if state is None else (CMAES.from_state(state["strategy"]),
                                                                      state["best"])
        if strategy is None:
            dimension = LinearController(**self.model_args).num_parameters
            scales = memory_step_scales(**self.model_args, memory_scale=settings.memory_step_scale)
            strategy = CMAES(dimension, settings.sigma0, settings.popsize, settings.seed, x0=start,
                             step_scales=scales)
        stopped = state is not None and (self._reached_stop(state.get("population_mean"))
                                         or self._reached_score(state["best"]))
        if strategy.generation >= generations or stopped:
            run.require_best()
            logger.info(f"{output}: already evolved for {strategy.generation} generations")
            return output
        check_seeds = evaluation_seeds(settings.seed, settings.eval_real_episodes, CHECK_STREAM)
        common = {"model_args": self.model_args}
        with tqdm(total=generations, initial=strategy.generation, desc=f"C (tau {temperature:g})", unit="gen",
                  disable=not progress, dynamic_ncols=True) as bar, self._workers_closed_after():
            while strategy.generation < generations:
                generation = strategy.generation + 1
                started = time.perf_counter()
                population = strategy.ask()
                fitness, steps = self.fitness(population, temperature, generation)
                run.check(generation, {"fitness": fitness.tolist()})  # CMA-ES cannot rank a NaN
                strategy.tell(population, fitness)
                seconds = time.perf_counter() - started
                record = {"generation": generation, "best": float(fitness.max()), "mean": float(fitness.mean()),
                          "worst": float(fitness.min()), "std": float(fitness.std()), "seconds": seconds,
                          "sigma": strategy.sigma}
                if settings.fitness_in == "dream":
                    record |= {"dream_steps": steps, "dream_steps_per_s": steps / seconds}
                else:  # across every worker, on this machine or a cluster
                    record |= {"env_steps": steps, "env_steps_per_s": steps / seconds}
                population_stop = self._reached_stop(record["mean"])
                stop = population_stop
                if generation % settings.eval_every == 0 or generation == generations or stop:
                    record |= self._evaluate_mean(strategy.mean, temperature, check_seeds)
                    score = record[self._pick_key()]
                    if score > best:
                        best = score
                        run.save_best({**common, "parameters": torch.from_numpy(strategy.mean).float(),
                                       "generation": generation, "temperature": temperature, "metrics": record})
                    if self._reached_score(score):
                        logger.info(f"C: the CMA mean scored {score:.1f} at generation {generation}, reaching "
                                    f"controller.stop_at_score ({settings.stop_at_score:g}); stopped")
                        stop = True
                # C draws nothing from torch's global RNG (its randomness is the CMA-ES state and seeded dreams).
                run.save_last({**common, "strategy": strategy.state(), "best": best,
                               "population_mean": record["mean"]}, with_rng=False, record=record)
                bar.update(1)
                bar.set_postfix(best=f"{record['best']:.0f}", mean=f"{record['mean']:.0f}",
                                steps_s=f"{record.get('dream_steps_per_s', record.get('env_steps_per_s', 0)):.0f}")
                if stop:
                    if population_stop:
                        logger.info(f"C: the population's mean return {record['mean']:.1f} reached "
                                    f"controller.stop_at ({settings.stop_at:g}) at generation {generation}; stopped")
                    break
        cmaes_curve(run.log.read(), paths.figure(f"cmaes_curve{name[len(CHECKPOINT_KIND):]}"))
        self.video(output, temperature, paths.video(f"controller_in_dream{name[len(CHECKPOINT_KIND):]}"))
        return output

    def _reached_stop(self, population_mean: float | None) -> bool:
        """Whether a generation whose population scored ``population_mean`` ends the evolution (``stop_at``)."""
        stop_at = self.config.controller.stop_at
        return stop_at is not None and population_mean is not None and population_mean >= stop_at

    @property
    def pick_temperature(self) -> float:
        """The dream temperature at which a C is scored to pick it: within a search's checks and among
        ``restarts`` searches (``controller.pick_temperature``, else the search's own)."""
        settings = self.config.controller
        return settings.temperature if settings.pick_temperature is None else settings.pick_temperature

    def _pick_key(self) -> str:
        """The check's score that picks C and stops the search."""
        settings = self.config.controller
        if settings.fitness_in == "real":
            return "eval/real_mean"
        return "eval/dream_mean" if settings.pick_temperature is None else "eval/pick_mean"

    def _reached_score(self, score: float) -> bool:
        """Whether the CMA mean's score at a check ends the evolution (``stop_at_score``)."""
        stop_at_score = self.config.controller.stop_at_score
        return stop_at_score is not None and score >= stop_at_score

    @contextlib.contextmanager
    def _workers_closed_after(self) -> Iterator[None]:
        """Close the real-fitness workers when the evolution ends (at once, killing them, on an error)."""
        try:
            yield
        except BaseException:
            if self._real_workers is not None:
                self._real_workers.close(kill=True)
            raise
        finally:
            if self._real_workers is not None:
                self._real_workers.close()
                self._real_workers = None

    def video(self, controller: Path, temperature: float, path: Path) -> None:
        """C of ``controller`` playing in M's dream at ``temperature`` from the first dream start, as a GIF."""
        _, checkpoint = load_controller(controller)
        start_state = None if self.start_states is None else tuple(s[0] for s in self.start_states)
        settings = self.config.controller
        frames, returns = controller_dream(self.model, self.vae, checkpoint["parameters"], settings.inputs,
                                           self.start_mu[0], self.start_logvar[0], temperature, self.steps,
                                           seed=settings.seed, reward=settings.dream_reward, start_state=start_state,
                                           layer_size=settings.layer_size)
        write_gif([(f"C, dream at tau {temperature:g}", frames, returns)], path)

    def _evaluate_mean(self, mean: np.ndarray, temperature: float, check_seeds: list[int]) -> dict[str, float]:
        """The CMA mean scored on many dream rollouts and on a few real episodes."""
        settings = self.config.controller
        result = {"eval/dream_mean": self.dream_score(mean, temperature, settings.eval_dream_rollouts,
                                                      settings.seed + 7)}
        if settings.pick_temperature is not None:
            result["eval/pick_mean"] = self.dream_score(mean, self.pick_temperature, settings.eval_dream_rollouts,
                                                        settings.seed + 7)
        if check_seeds:
            real, env_steps = self.real_play(mean, check_seeds)
            # The check's env steps count in the agent's budget (vmc/env_budget.py), whether or not C's pick uses it.
            result |= {"eval/real_mean": float(real.mean()), "eval/real_std": float(real.std()),
                       "eval/real_env_steps": env_steps}
        return result


def temperature_table(config: PipelineConfig, paths: PipelinePaths, evolution: Evolution,
                      controllers: dict[float, Path]) -> dict[str, Any]:
    """Score each tau's C in its own dream and in the real env, beside the random policy.

    Writes ``scores/temperature_table.json`` and ``scores/temperature_table.md``; returns the table.
    """
    settings = config.controller
    seeds = evaluation_seeds(config.evaluate.seed, config.evaluate.episodes)
    rows = []
    for temperature, path in controllers.items():
        _, checkpoint = load_controller(path)
        parameters = checkpoint["parameters"].numpy()
        dream = evolution.dream_returns(parameters, temperature, settings.eval_dream_rollouts, settings.seed + 11)
        real = evolution.real_returns(parameters, seeds)
        rows.append({"agent": "worldmodel", "temperature": temperature, "dream_mean": float(dream.mean()),
                     "dream_std": float(dream.std()), "real_mean": float(real.mean()), "real_std": float(real.std()),
                     "controller": path.name})
    rollouts = RolloutReader(paths.rollouts)
    collect = config.collect
    random = make_exploration_policy(collect.policy, rollouts.action_size, collect.hold_min, collect.hold_max,
                                     collect.brownian_std, collect.action_scale_min)
    real = evaluate_policy(config.env, random, seeds, workers=config.evaluate.workers)
    rows.append({"agent": "random", "temperature": None, "dream_mean": None, "real_mean": float(real.mean()),
                 "real_std": float(real.std())})
    table = {"episodes": len(seeds), "seeds": seeds, "dream_rollouts": settings.eval_dream_rollouts, "rows": rows}
    paths.ensure()
    atomic_write(paths.score("temperature_table"),
                 lambda temporary: temporary.write_text(json_text(table)))
    markdown = format_temperature_table(table, beside_paper=config.env.id == PAPER_TASK)
    atomic_write(paths.temperature_table, lambda temporary: temporary.write_text(markdown))
    logger.info(markdown)
    return table


def format_temperature_table(table: dict[str, Any], beside_paper: bool = False) -> str:
    """The paper's table form: temperature, dream score, real score (mean +- std); with
    ``beside_paper``, the paper's TakeCover numbers in two more columns, row for row."""
    if beside_paper:
        header = ["Temperature tau", "Dream", "Real", "Paper: dream", "Paper: real"]
        rows = beside_the_paper(table["rows"])
    else:
        header, rows = ["Temperature tau", "Score in the dream", "Score in the real env"], sweep_rows(table["rows"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines.append(f"\nReal scores over {table['episodes']} evaluation episodes; dream scores over "
                 f"{table['dream_rollouts']} dreams at the controller's own temperature.")
    return "\n".join(lines) + "\n"


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Evolve C (and the temperature sweep's Cs, if asked); returns the path of ``controller.pt``."""
    evolution, main = evolve_main(config, paths, progress)
    if config.controller.temperatures:
        sweep(config, paths, evolution, main, progress)
    return main


def evolve_main(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> tuple[Evolution, Path]:
    """Evolve the pipeline's C at ``controller.temperature`` (or continue it); with ``controller.restarts``
    above 1, that many searches, the dream's pick copied to ``controller.pt``."""
    evolution = Evolution(config, paths)
    if config.controller.restarts == 1:
        return evolution, evolution.evolve(config.controller.temperature, progress=progress)
    return evolution, evolve_searches(evolution, progress)


def evolve_searches(evolution: Evolution, progress: bool = True) -> Path:
    """``controller.restarts`` independent CMA-ES searches of C (seeds ``controller.seed``, +1, ...), each
    its own resumable run (``controller_search<k>.pt``, the single search of its seed); the dream alone
    picks: the search whose C scores best on the same ``eval_dream_rollouts`` dreams becomes
    ``controller.pt`` (its log ``metrics/controller.jsonl``, its CMA-ES curve and dream GIF drawn again
    under the main names). Each search's real score on the evaluation episodes is measured beside the
    pick, never used by it: ``scores/controller_searches.json``. Returns ``controller.pt``."""
    config, paths = evolution.config, evolution.paths
    settings = config.controller
    found = []
    for index in range(settings.restarts):
        logger.info(f"C: search {index + 1}/{settings.restarts} (controller.seed {settings.seed + index})")
        found.append(evolution.with_seed(settings.seed + index).evolve(settings.temperature, search_name(index + 1),
                                                                       progress=progress))
    parameters = [load_controller(path)[1]["parameters"].numpy() for path in found]
    dreams = [evolution.dream_score(p, evolution.pick_temperature, settings.eval_dream_rollouts, settings.seed + 13)
              for p in parameters]
    chosen = int(np.argmax(dreams))
    seeds = evaluation_seeds(config.evaluate.seed, config.evaluate.episodes)
    reals = [float(evolution.real_returns(p, seeds).mean()) for p in parameters]
    searches = searches_beside_reality(dreams, chosen, reals) | {
        "restart_seeds": [settings.seed + index for index in range(settings.restarts)],
        "restart_controllers": [path.name for path in found], "episodes": len(seeds),
        "dream_rollouts": settings.eval_dream_rollouts, "temperature": evolution.pick_temperature}
    output = paths.controller
    atomic_write(output, lambda temporary: shutil.copyfile(found[chosen], temporary))
    searches["controller_sha256"] = file_sha256(output)  # the report shows the searches only beside this C
    atomic_write(paths.score("controller_searches"), lambda temporary: temporary.write_text(json_text(searches)))
    chosen_log = paths.metrics(search_name(chosen + 1))
    atomic_write(paths.metrics(CHECKPOINT_KIND), lambda temporary: shutil.copyfile(chosen_log, temporary))
    # The chosen search's curve and GIF as its run drew them; drawn again only where that run was stopped
    # between its last checkpoint and its figures.
    suffix = search_name(chosen + 1)[len(CHECKPOINT_KIND):]
    drawings = ((paths.figure("cmaes_curve"), paths.figure(f"cmaes_curve{suffix}"),
                 lambda: cmaes_curve(MetricsLog(chosen_log, step_key="generation").read(),
                                     paths.figure("cmaes_curve"))),
                (paths.video("controller_in_dream"), paths.video(f"controller_in_dream{suffix}"),
                 lambda: evolution.video(output, settings.temperature, paths.video("controller_in_dream"))))
    for main, searched, draw in drawings:
        if searched.is_file():
            atomic_write(main, lambda temporary, searched=searched: shutil.copyfile(searched, temporary))
        else:
            draw()
    logger.info(f"C: {settings.restarts} CMA-ES searches, dream / real ({len(seeds)} episodes): "
                + ", ".join(f"{d:.0f} / {r:.0f}" for d, r in zip(dreams, reals, strict=True))
                + f"; the dream picked search {chosen + 1} -> {output.name}")
    return output


def sweep(config: PipelineConfig, paths: PipelinePaths, evolution: Evolution, main: Path,
          progress: bool = True) -> dict[str, Any]:
    """One C per ``controller.temperatures`` (the main tau reuses ``main``), then the table."""
    settings = config.controller
    controllers = {tau: main if tau == settings.temperature
                   else evolution.evolve(tau, sweep_name(tau), progress=progress)
                   for tau in settings.temperatures}
    return temperature_table(config, paths, evolution, controllers)
