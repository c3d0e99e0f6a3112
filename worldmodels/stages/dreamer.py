"""Stage `dreamer`: Dreamer v1 on the same rollouts as V-M-C, scored with the same protocol.

Offline phase: ``dreamer.updates`` updates on windows of ``rollouts.h5``'s training episodes
(the held-out split every model shares). Each update fits the world model (image + reward
likelihood + KL with free nats) on a batch of windows, then the actor and value in imagination
from every posterior state of that batch. Optional online phase (``dreamer.online_steps``): the
actor plus noise plays episodes that are appended to ``dreamer_rollouts.h5`` (a copy of the
rollouts, same schema), ``updates_per_episode`` updates after each.

Every ``eval_every`` updates: the actor (its mode) on the first ``eval_episodes`` seeds of
`wm evaluate`, metrics to ``metrics/dreamer.jsonl``, ``dreamer.pt`` and the resume state
(models, optimizers, RNG) written atomically; re-running continues at the last saved update.
At the end: ``scores/dreamer.json`` over the same 100 seeds as `wm evaluate`, and the figures
``dreamer_returns.png``, ``openloop_dreamer.png`` and ``prediction_error.png`` (beside V+M's
open-loop error on the same held-out episodes when V and M exist).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.agents import DreamerAgent
from worldmodels.artifacts import DREAMER_KIND, load_dreamer
from worldmodels.checkpoint import atomic_write
from worldmodels.config import DreamerConfig, PipelineConfig
from worldmodels.data.datasets import WindowDataset
from worldmodels.data.split import split_episodes
from worldmodels.data.store import RolloutReader, RolloutWriter
from worldmodels.dreamer import Dreamer, update
from worldmodels.envs import probe_env
from worldmodels.evaluation import Score, evaluate_policy, evaluation_seeds, play_episodes
from worldmodels.figures import openloop_strip, prediction_errors, training_returns
from worldmodels.metrics import MetricsLog
from worldmodels.paths import PipelinePaths
from worldmodels.runtime import Runtime, resolve
from worldmodels.training import TrainingRun

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = DREAMER_KIND
ONLINE_SOURCE = "dreamer:actor+noise"
DREAMER_STREAM = 0xD7EA  # env seeds of the online phase's episodes
# Settings that say how long or how visibly Dreamer trains, not what it trains to.
_NOT_IDENTITY = ("updates", "online_steps", "eval_every", "eval_episodes")


class WindowSampler:
    """Uniform random windows of ``L`` steps from the training episodes of a rollouts file."""

    def __init__(self, path: Path, steps: int, heldout_fraction: float) -> None:
        self.path, self.steps, self.heldout_fraction = path, steps, heldout_fraction
        self.refresh()

    def refresh(self) -> None:
        """Re-read the file's episode index (after episodes were appended)."""
        with RolloutReader(self.path) as reader:
            train, _ = split_episodes(reader.episodes["seed"], self.heldout_fraction)
        self.dataset = WindowDataset(self.path, self.steps, train)
        if len(self.dataset) == 0:
            raise ValueError(f"{self.path}: no training episode has {self.steps} steps for dreamer.sequence_length")

    def batch(self, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """frames uint8 ``(B, L + 1, H, W, 3)``, actions ``(B, L, A)``, rewards ``(B, L)``."""
        indices = torch.randint(len(self.dataset), (size,), generator=generator)
        items = [self.dataset[int(i)] for i in indices]
        return {name: torch.stack([item[name] for item in items]) for name in ("frames", "actions", "rewards")}

    def close(self) -> None:
        """Let go of the file (so that a writer may append to it)."""
        self.dataset.reader.close()


def _env_steps(path: Path) -> int:
    with RolloutReader(path) as reader:
        return reader.num_steps * reader.action_repeat


def _identity(settings: DreamerConfig, rollouts: RolloutReader, runtime: Runtime) -> dict[str, Any]:
    kept = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _NOT_IDENTITY}
    # The precision shapes the trajectory of the updates; the device alone does not (up to rounding).
    return {"settings": kept, "rollouts_fingerprint": rollouts.fingerprint, "precision": runtime.precision}


def _online_episodes(path: Path) -> int:
    with RolloutReader(path) as reader:
        return int(sum(row.decode().startswith(ONLINE_SOURCE) for row in reader.episodes["source"]))


def _collect_online_episode(config: PipelineConfig, dreamer: Dreamer, path: Path, index: int) -> float:
    """Play one episode with the actor plus noise and append it to ``path``; returns its return."""
    env_seed, noise_seed = np.random.SeedSequence([config.dreamer.seed, DREAMER_STREAM, index]).generate_state(
        2, dtype=np.uint32)
    agent = DreamerAgent(dreamer.world_model, dreamer.actor, noise_std=config.dreamer.exploration_noise)
    episode = next(play_episodes(config.env, agent, [int(env_seed)], [int(noise_seed)], batch=1))
    dreamer.train()
    episode.index, episode.base_seed = index, config.dreamer.seed
    episode.source = f"{ONLINE_SOURCE}{config.dreamer.exploration_noise:g}"
    env_info, frame_shape, action_size = probe_env(config.env)
    with RolloutWriter(path, dataclasses.asdict(config.env), env_info, frame_shape, action_size,
                       config.collect.compression) as writer:
        writer.append(episode)
    return episode.total_return


def _evaluate(config: PipelineConfig, dreamer: Dreamer, seeds: list[int]) -> np.ndarray:
    returns = evaluate_policy(config.env, DreamerAgent(dreamer.world_model, dreamer.actor), seeds,
                              workers=config.evaluate.workers)
    dreamer.train()
    return returns


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Train Dreamer (or continue), score it, draw its figures; returns ``scores/dreamer.json``."""
    settings = config.dreamer
    runtime = resolve(config.runtime).apply()
    rollouts = RolloutReader(paths.rollouts)
    data_path = paths.rollouts
    if settings.online_steps:
        data_path = paths.dreamer_rollouts
        if not data_path.is_file():
            atomic_write(data_path, lambda temporary: shutil.copyfile(paths.rollouts, temporary))
    paths.ensure()
    dreamer = Dreamer.build(rollouts.action_size, settings, runtime.device).compile(runtime)
    # dreamer.pt is the last evaluated model (Dreamer keeps no held-out measure to pick a best by).
    run = TrainingRun(CHECKPOINT_KIND, {"identity": _identity(settings, rollouts, runtime)},
                      paths.last_checkpoint(CHECKPOINT_KIND), paths.dreamer,
                      MetricsLog(paths.metrics(CHECKPOINT_KIND), step_key="update"), runtime, "Dreamer")
    log = run.log
    generator = torch.Generator().manual_seed(settings.seed)
    done_updates = 0
    state = run.resume()
    if state is not None:
        for name, module in dreamer.modules().items():
            module.load_state_dict(state[name])
        for name, optimizer in dreamer.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        generator.set_state(state["generator"])
        done_updates = state["update"]
    sampler = WindowSampler(data_path, settings.sequence_length, config.data.heldout_fraction)
    eval_seeds = evaluation_seeds(config.evaluate.seed, min(settings.eval_episodes, config.evaluate.episodes))
    common = {"action_size": rollouts.action_size, "settings": dataclasses.asdict(settings)}
    sums: dict[str, float] = {}
    started, timed_updates, online_returns = time.perf_counter(), 0, []

    def target_updates(online_episodes: int) -> int:
        return settings.updates + online_episodes * settings.updates_per_episode

    online = _online_episodes(data_path) if settings.online_steps else 0
    base_env_steps = rollouts.num_steps * rollouts.action_repeat
    if _finished(paths, done_updates, target_updates(online), settings, data_path, base_env_steps):
        logger.info(f"{paths.score('dreamer')}: Dreamer already trained for {done_updates} updates and scored")
        return paths.score("dreamer")
    with tqdm(total=target_updates(online), initial=done_updates, desc="Dreamer", unit="update",
              disable=not progress, dynamic_ncols=True) as bar:
        while True:
            if done_updates >= target_updates(online):
                if _env_steps(data_path) - base_env_steps >= settings.online_steps:
                    break
                sampler.close()
                episode_return = _collect_online_episode(config, dreamer, data_path, online)
                online_returns.append(episode_return)
                online += 1
                sampler.refresh()
                bar.total = target_updates(online)
                bar.set_postfix(online_return=f"{episode_return:.0f}")
                continue
            batch = {name: runtime.to_device(value) for name, value in sampler.batch(settings.batch_size,
                                                                                      generator).items()}
            metrics = update(dreamer, batch, settings, runtime)
            done_updates += 1
            timed_updates += 1
            for key, value in metrics.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix(image=f"{metrics['train/loss/image_nll']:.0f}", kl=f"{metrics['train/loss/kl']:.1f}")
            if done_updates % settings.eval_every and done_updates != target_updates(online):
                continue
            returns = _evaluate(config, dreamer, eval_seeds)
            record = {"update": done_updates,
                      "env_steps": _env_steps(data_path),
                      **{key: value / timed_updates for key, value in sums.items()},
                      "seconds_per_update": (time.perf_counter() - started) / timed_updates,
                      "eval/return_mean": float(returns.mean()), "eval/return_std": float(returns.std())}
            if online_returns:  # the actor-plus-noise episodes played since the last record
                record["train/episode_returns"] = online_returns
            log.append(record)
            tqdm.write(f"Dreamer update {done_updates}: real return {record['eval/return_mean']:.1f} +- "
                       f"{record['eval/return_std']:.1f}, image NLL {record['train/loss/image_nll']:.0f}, "
                       f"{record['seconds_per_update']:.2f} s/update")
            state = {**common, **{name: m.state_dict() for name, m in dreamer.modules().items()},
                     "update": done_updates, "metrics": record}
            run.save_best(state)
            run.save_last({**state, "optimizers": {k: o.state_dict() for k, o in dreamer.optimizers.items()},
                           "generator": generator.get_state()})
            sums, started, timed_updates, online_returns = {}, time.perf_counter(), 0, []
    return finish(config, paths, data_path, runtime)


def _finished(paths: PipelinePaths, done_updates: int, target: int, settings: DreamerConfig, data_path: Path,
              base_env_steps: int) -> bool:
    """True when every update and online episode is done and the score is of this very model."""
    if done_updates < target or not paths.score("dreamer").is_file():
        return False
    if settings.online_steps and _env_steps(data_path) - base_env_steps < settings.online_steps:
        return False
    return json.loads(paths.score("dreamer").read_text()).get("updates") == done_updates


def finish(config: PipelineConfig, paths: PipelinePaths, data_path: Path, runtime: Runtime) -> Path:
    """Score ``dreamer.pt`` on `wm evaluate`'s seeds and draw the figures; returns the score file."""
    dreamer, checkpoint = load_dreamer(paths.dreamer, runtime.device)
    seeds = evaluation_seeds(config.evaluate.seed, config.evaluate.episodes)
    started = time.perf_counter()
    returns = evaluate_policy(config.env, DreamerAgent(dreamer.world_model, dreamer.actor), seeds,
                              workers=config.evaluate.workers)
    score = Score.of("dreamer", returns, seeds, _env_steps(data_path), time.perf_counter() - started,
                     updates=checkpoint["update"]).write(paths.score("dreamer"))
    logger.info(f"dreamer: {score.summary()} after {checkpoint['update']} updates")
    training_returns(MetricsLog(paths.metrics(CHECKPOINT_KIND), step_key="update").read(),
                     paths.figure("dreamer_returns"))
    measure_prediction(config, paths, dreamer)
    return paths.score("dreamer")


@torch.no_grad()
def measure_prediction(config: PipelineConfig, paths: PipelinePaths, dreamer: Dreamer) -> dict[str, Any]:
    """Open-loop image and reward error of the RSSM (and of V+M when they exist) on the same held-out
    episodes as the M stage; the RSSM's foreground ratio; ``metrics/dreamer_prediction.json``."""
    from worldmodels import prediction

    summary = prediction.compare(config, paths, dreamer.world_model)
    context = config.mdnrnn.context_frames
    openloop_strip(summary.pop("truth_frames"), summary.pop("rssm_frames"), context,
                   f"RSSM open loop on held-out episodes: {context} context frames through the posterior, then "
                   f"{config.mdnrnn.openloop_steps} from the prior with the real actions (rows: truth / model / error)",
                   paths.figure("openloop_dreamer"))
    prediction_errors(summary["curves"], paths.figure("prediction_error"))
    atomic_write(paths.dreamer_prediction,
                 lambda temporary: temporary.write_text(json.dumps(summary, indent=1)))
    return summary
