"""Stage `dreamer`: Dreamer v1 on the same rollouts as V-M-C, scored with the same protocol.

Each update fits the world model (image + reward likelihood + KL with free nats) on a batch of
windows, then the actor and value in imagination from every posterior state of that batch.

Offline (``dreamer.env_steps: 0``, the default pipeline): ``dreamer.updates`` updates on windows of
``rollouts.h5``'s training episodes (the held-out split every model shares); every ``eval_every``
updates the actor (its mode) plays the first ``eval_episodes`` seeds of `wm evaluate`.

Online (Dreamer v1's own schedule; ``pipelines/cartpole_balance_dreamer.yaml``): the collect
stage's episodes are the prefill and the start of the replay ``dreamer_rollouts.h5`` (same schema);
``updates`` pretraining updates, then the actor (a sample plus exploration noise) plays whole
episodes into the replay, and between episodes the updates due (``updates_per_train`` per
``train_every`` env steps played, :func:`worldmodels.dreamer.learner.updates_due`) are made, until the
replay holds ``env_steps``. Evaluations every ``eval_every_env_steps`` from the prefill on, before
the updates due at that point (the first one is the untrained actor, as in Dreamer v1's curves).
The prefill's held-out episodes stay out of training; every episode Dreamer plays is trained on.

Metrics go to ``metrics/dreamer.jsonl`` (loss means and seconds per update of each block of updates,
the return of every online episode, the evaluations). The resume state (models, optimizers, the
batch sampler's RNG, the next evaluation) is written atomically after every block of updates and
every evaluation; re-running continues there, on the replay as it is. At the end: ``dreamer.pt``,
``scores/dreamer.json`` over the same 100 seeds as `wm evaluate`, and the figures
``dreamer_returns.png`` (against the official curve where one is published),
``openloop_dreamer.png`` and ``prediction_error.png`` (beside V+M when V and M exist).
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

from worldmodels.artifacts import DREAMER_KIND, load_dreamer
from worldmodels.config import DreamerConfig, PipelineConfig
from worldmodels.core.checkpoint import atomic_write
from worldmodels.core.metrics import MetricsLog, json_text
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import Runtime, resolve
from worldmodels.core.training import TrainingRun
from worldmodels.data.replay import open_replay
from worldmodels.data.store import RolloutReader, RolloutWriter
from worldmodels.dreamer.agent import DreamerAgent
from worldmodels.dreamer.learner import Dreamer, update, updates_due
from worldmodels.errors import UserValueError
from worldmodels.evaluation.episodes import Score, evaluate_policy, evaluation_seeds, play_episodes
from worldmodels.reference import dreamer_v1_curve
from worldmodels.reporting.figures import dreamer_returns, openloop_strip, prediction_errors

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = DREAMER_KIND
ONLINE_SOURCE = "dreamer:actor+noise"
DREAMER_STREAM = 0xD7EA  # env seeds of the online phase's episodes
# Settings that say how long or how visibly Dreamer trains, not what it trains to.
_NOT_IDENTITY = ("updates", "env_steps", "eval_every", "eval_every_env_steps", "eval_episodes")


def _env_steps(path: Path) -> int:
    with RolloutReader(path) as reader:
        return reader.num_steps * reader.action_repeat


def _identity(config: PipelineConfig, rollouts: RolloutReader, runtime: Runtime) -> dict[str, Any]:
    settings = config.dreamer
    kept = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _NOT_IDENTITY}
    # The precision shapes the trajectory of the updates; the device alone does not (up to rounding).
    # The held-out split decides which episodes the replay trains on.
    return {"settings": kept, "rollouts_fingerprint": rollouts.fingerprint, "precision": runtime.precision,
            "online": settings.env_steps > 0, "heldout_fraction": config.data.heldout_fraction}


def prefill_size(rollouts: RolloutReader, settings: DreamerConfig) -> tuple[int, int]:
    """(episodes, env steps) of the collect stage's episodes that start the replay: the first
    ``dreamer.prefill_episodes`` of them (all when 0)."""
    episodes = settings.prefill_episodes or rollouts.num_episodes
    if episodes > rollouts.num_episodes:
        raise UserValueError(f"dreamer.prefill_episodes={settings.prefill_episodes} is more than the "
                             f"{rollouts.num_episodes} episodes of {rollouts.path}")
    return episodes, int(rollouts.lengths[:episodes].sum()) * rollouts.action_repeat


def _start_replay(rollouts_path: Path, replay_path: Path, episodes: int, compression: str | None) -> None:
    """``replay_path`` holds the first ``episodes`` episodes of ``rollouts_path`` (a copy when all)."""
    with RolloutReader(rollouts_path) as source:
        if episodes == source.num_episodes:
            atomic_write(replay_path, lambda temporary: shutil.copyfile(rollouts_path, temporary))
            return
        described = source.env_config, source.env_info, source.frame_shape, source.action_size

        def write(temporary: Path) -> None:
            with RolloutWriter(temporary, *described, compression) as writer:
                for index in range(episodes):
                    writer.append(source.episode(index))

        atomic_write(replay_path, write)


def _online_episodes(path: Path) -> int:
    with RolloutReader(path) as reader:
        return int(sum(row.decode().startswith(ONLINE_SOURCE) for row in reader.episodes["source"]))


def _collect_online_episode(config: PipelineConfig, dreamer: Dreamer, path: Path, index: int) -> tuple[float, int]:
    """Play one episode (the actor's sample plus noise) and append it to ``path``; returns its return
    and its env steps. Its seeds come from ``index``, so a resumed run plays the same episode."""
    env_seed, noise_seed = np.random.SeedSequence([config.dreamer.seed, DREAMER_STREAM, index]).generate_state(
        2, dtype=np.uint32)
    agent = DreamerAgent(dreamer.world_model, dreamer.actor, noise_std=config.dreamer.exploration_noise,
                         explore=True)
    played_env = (dataclasses.replace(config.env, max_episode_steps=config.dreamer.episode_steps)
                  if config.dreamer.episode_steps else config.env)
    episode = next(play_episodes(played_env, agent, [int(env_seed)], [int(noise_seed)], batch=1))
    dreamer.train()
    episode.index, episode.base_seed = index, config.dreamer.seed
    episode.source = f"{ONLINE_SOURCE}{config.dreamer.exploration_noise:g}"
    with RolloutReader(path) as replay:  # it holds the prefill: the env's description is there already
        described = replay.env_info, replay.frame_shape, replay.action_size
    with RolloutWriter(path, dataclasses.asdict(config.env), *described, config.collect.compression) as writer:
        writer.append(episode)
    return episode.total_return, len(episode.actions) * config.env.action_repeat


def _evaluate(config: PipelineConfig, dreamer: Dreamer, seeds: list[int]) -> np.ndarray:
    returns = evaluate_policy(config.env, DreamerAgent(dreamer.world_model, dreamer.actor), seeds,
                              workers=config.evaluate.workers)
    dreamer.train()
    return returns


class _Training:
    """One Dreamer run's moving parts: networks, replay and its RNG, the resumable run, the
    progress bar and the loss sums of the current block of updates."""

    def __init__(self, config: PipelineConfig, paths: PipelinePaths, runtime: Runtime, rollouts: RolloutReader,
                 data_path: Path, run: TrainingRun, bar: tqdm, prefill_episodes: int) -> None:
        settings = config.dreamer
        self.config, self.paths, self.runtime, self.run, self.bar = config, paths, runtime, run, bar
        self.dreamer = Dreamer.build(rollouts.action_size, settings, runtime.device).compile(runtime)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.done_updates, self.next_eval = 0, None
        self.common = {"action_size": rollouts.action_size, "settings": dataclasses.asdict(settings)}
        state = run.resume()
        if settings.env_steps and state is None:  # a fresh online run: its replay starts as the prefill
            _start_replay(paths.rollouts, data_path, prefill_episodes, config.collect.compression)
        if state is not None:
            for name, module in self.dreamer.modules().items():
                module.load_state_dict(state[name])
            for name, optimizer in self.dreamer.optimizers.items():
                optimizer.load_state_dict(state["optimizers"][name])
            self.generator.set_state(state["generator"])
            self.done_updates, self.next_eval = state["update"], state.get("next_eval_env_steps")
        # Wall-clock seconds of this run before this process (a resumed run adds its earlier processes').
        self.seconds_before, self.process_started = float((state or {}).get("wall_seconds", 0.0)), time.perf_counter()
        final_frames = (max(settings.env_steps, rollouts.num_steps * rollouts.action_repeat) // rollouts.action_repeat
                        + 2 * rollouts.num_episodes)  # the frames the replay will hold, with margin for ends
        self.replay = open_replay(data_path, settings.sequence_length, config.data.heldout_fraction,
                                   prefill_episodes, final_frames, runtime.device, settings.episode_start_share)
        self.eval_seeds = evaluation_seeds(config.evaluate.seed, min(settings.eval_episodes, config.evaluate.episodes))
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}  # per metric: the warm-up's updates have no actor or value losses
        self.started, self.timed = time.perf_counter(), 0

    def wall_seconds(self) -> float:
        """Wall-clock seconds this run has taken so far, over every process that worked on it."""
        return self.seconds_before + time.perf_counter() - self.process_started

    def train_to(self, target: int) -> None:
        """Updates until ``target`` are done (metrics summed for the next record)."""
        settings = self.config.dreamer
        if not self.timed:  # seconds per update count updates only, not the episodes or evaluations between
            self.started = time.perf_counter()
        while self.done_updates < target:
            batch = {name: self.runtime.to_device(value)
                     for name, value in self.replay.batch(settings.batch_size, self.generator).items()}
            metrics = update(self.dreamer, batch, settings, self.runtime,
                             behaviour=self.done_updates >= settings.world_model_warmup,
                             actor=self.done_updates >= settings.world_model_warmup + settings.value_warmup)
            self.run.check(self.done_updates + 1, metrics)
            self.done_updates += 1
            self.timed += 1
            for key, value in metrics.items():
                self.sums[key] = self.sums.get(key, 0.0) + value
                self.counts[key] = self.counts.get(key, 0) + 1
            self.bar.update(1)
            self.bar.set_postfix(image=f"{metrics['train/loss/image_nll']:.0f}", kl=f"{metrics['train/loss/kl']:.1f}")

    def log(self, record: dict[str, Any]) -> dict[str, Any]:
        """Append ``record`` to the metrics log, stamped with the run's wall-clock seconds so far."""
        record = {**record, "wall_seconds": round(self.wall_seconds(), 1)}
        self.run.log.append(record)
        return record

    def commit(self, record: dict[str, Any], best: bool = False) -> dict[str, Any]:
        """Save the resume state (and with ``best``, ``dreamer.pt``) with ``record``, then log ``record`` (see
        ``TrainingRun.save_last``: an evaluation or a block of updates is logged once its checkpoint is on disk)."""
        record = {**record, "wall_seconds": round(self.wall_seconds(), 1)}
        self.save(record, best=best, log=True)
        return record

    def block_record(self) -> dict[str, Any]:
        """Loss means and seconds per update since the last record (empty when no update was made)."""
        if not self.timed:
            return {}
        record = {**{key: value / self.counts[key] for key, value in self.sums.items()},
                  "seconds_per_update": (time.perf_counter() - self.started) / self.timed}
        self.sums, self.counts, self.started, self.timed = {}, {}, time.perf_counter(), 0
        return record

    def evaluate(self, env_steps: int) -> dict[str, Any]:
        returns = _evaluate(self.config, self.dreamer, self.eval_seeds)
        record = {"update": self.done_updates, "env_steps": env_steps,
                  "eval/return_mean": float(returns.mean()), "eval/return_std": float(returns.std()),
                  "eval/returns": returns.tolist()}
        tqdm.write(f"Dreamer at {env_steps:,} env steps, update {self.done_updates}: real return "
                   f"{record['eval/return_mean']:.1f} +- {record['eval/return_std']:.1f}")
        return record

    def save(self, metrics: dict[str, Any] | None = None, best: bool = False, log: bool = False) -> None:
        """The resume state; with ``best``, also ``dreamer.pt`` (the model the later stages load); with ``log``,
        ``metrics`` is logged once the resume state is on disk."""
        self.run.check(self.done_updates, metrics or {}, self.dreamer.modules().values())
        state = {**self.common, **{name: m.state_dict() for name, m in self.dreamer.modules().items()},
                 "update": self.done_updates, "metrics": metrics or {}, "wall_seconds": self.wall_seconds()}
        if best:
            self.run.save_best(state)
        self.run.save_last({**state, "optimizers": {k: o.state_dict() for k, o in self.dreamer.optimizers.items()},
                            "generator": self.generator.get_state(), "next_eval_env_steps": self.next_eval,
                            "wall_seconds": self.wall_seconds()}, record=metrics if log else None)

    def draw(self) -> None:
        dreamer_returns(self.run.log.read(), dreamer_v1_curve(self.config.env.id), self.config.env.action_repeat,
                        self.paths.figure("dreamer_returns"), score=None)


def _forget_run_without_replay(paths: PipelinePaths, run: TrainingRun) -> None:
    """An online run whose replay file is gone cannot go on: start again from the prefill."""
    if run.last.is_file() and not paths.dreamer_rollouts.is_file():
        logger.info(f"{paths.dreamer_rollouts} is missing: Dreamer's online run starts again from the prefill")
        run.last.unlink()


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Train Dreamer (or continue), score it, draw its figures; returns ``scores/dreamer.json``."""
    settings = config.dreamer
    runtime = resolve(config.runtime).apply()
    rollouts = RolloutReader(paths.rollouts)
    paths.ensure()
    run = TrainingRun(CHECKPOINT_KIND, {"identity": _identity(config, rollouts, runtime)},
                      paths.last_checkpoint(CHECKPOINT_KIND), paths.dreamer,
                      MetricsLog(paths.metrics(CHECKPOINT_KIND), step_key="update"), runtime, "Dreamer")
    data_path = paths.dreamer_rollouts if settings.env_steps else paths.rollouts
    if settings.env_steps:
        _forget_run_without_replay(paths, run)
    # Online, the replay starts from the first prefill_episodes of the collect stage's; offline it is all of them.
    prefill_episodes, prefill = (prefill_size(rollouts, settings) if settings.env_steps
                                 else (rollouts.num_episodes, rollouts.num_steps * rollouts.action_repeat))
    if settings.env_steps and settings.env_steps < prefill:
        raise UserValueError(f"dreamer.env_steps={settings.env_steps} is below the prefill's {prefill} env steps "
                         f"({paths.rollouts})")
    final_updates = updates_due(settings, max(settings.env_steps, prefill), prefill)
    with tqdm(total=final_updates, desc="Dreamer", unit="update", disable=not progress, dynamic_ncols=True) as bar:
        training = _Training(config, paths, runtime, rollouts, data_path, run, bar, prefill_episodes)
        bar.update(training.done_updates)
        if _finished(paths, training.done_updates, final_updates, settings, data_path):
            run.require_best()
            logger.info(f"{paths.score('dreamer')}: Dreamer already trained for {training.done_updates} updates "
                        "and scored")
            return paths.score("dreamer")
        if settings.env_steps:
            _train_online(training, data_path, prefill)
        else:
            _train_offline(training)
    return finish(config, paths, data_path, runtime)


def _train_offline(training: _Training) -> None:
    settings = training.config.dreamer
    env_steps = _env_steps(training.paths.rollouts)
    while training.done_updates < settings.updates:
        next_eval = min((training.done_updates // settings.eval_every + 1) * settings.eval_every, settings.updates)
        training.train_to(next_eval)
        training.commit({**training.block_record(), **training.evaluate(env_steps)}, best=True)


def _train_online(training: _Training, data_path: Path, prefill: int) -> None:
    """Dreamer v1's loop: evaluations when due, the updates due, then one more episode, until the
    replay holds ``dreamer.env_steps``."""
    settings = training.config.dreamer
    env_steps, episodes = _env_steps(data_path), _online_episodes(data_path)
    if training.next_eval is None:
        training.next_eval = prefill
    while True:
        if env_steps >= training.next_eval:
            record = training.evaluate(env_steps)
            training.next_eval += settings.eval_every_env_steps
            training.commit(record, best=True)
            training.draw()
        due = updates_due(settings, env_steps, prefill)
        if training.done_updates < due:
            training.train_to(due)
            training.commit({"update": training.done_updates, "env_steps": env_steps, **training.block_record()})
            continue
        if env_steps >= settings.env_steps:
            break
        training.replay.close()
        episode_return, steps = _collect_online_episode(training.config, training.dreamer, data_path, episodes)
        training.replay.refresh()
        episodes, env_steps = episodes + 1, env_steps + steps
        training.log({"update": training.done_updates, "env_steps": env_steps, "train/return": episode_return})
        training.bar.set_postfix(env_steps=f"{env_steps:,}", train_return=f"{episode_return:.0f}")
    training.save(best=True)


def _finished(paths: PipelinePaths, done_updates: int, target: int, settings: DreamerConfig, data_path: Path) -> bool:
    """True when every update and online episode is done and the score is of this very model."""
    if done_updates < target or not paths.score("dreamer").is_file():
        return False
    if settings.env_steps and _env_steps(data_path) < settings.env_steps:
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
                     updates=checkpoint["update"], training_seconds=checkpoint.get("wall_seconds"),
                     online=config.dreamer.env_steps > 0).write(paths.score("dreamer"))
    logger.info(f"dreamer: {score.summary()} after {checkpoint['update']} updates")
    dreamer_returns(MetricsLog(paths.metrics(CHECKPOINT_KIND), step_key="update").read(),
                    dreamer_v1_curve(config.env.id), config.env.action_repeat, paths.figure("dreamer_returns"),
                    score=score)
    measure_prediction(config, paths, dreamer)
    return paths.score("dreamer")


@torch.no_grad()
def measure_prediction(config: PipelineConfig, paths: PipelinePaths, dreamer: Dreamer) -> dict[str, Any]:
    """Open-loop image and reward error of the RSSM (and of V+M when they exist) on the same held-out
    episodes as the M stage; the RSSM's foreground ratio; ``metrics/dreamer_prediction.json``."""
    from worldmodels.probes import prediction

    summary = prediction.compare(config, paths, dreamer.world_model)
    context = config.mdnrnn.context_frames
    openloop_strip(summary.pop("truth_frames"), summary.pop("rssm_frames"), context,
                   f"RSSM open loop on held-out episodes: {context} context frames through the posterior, then "
                   f"{config.mdnrnn.openloop_steps} from the prior with the real actions (rows: truth / model / error)",
                   paths.figure("openloop_dreamer"))
    prediction_errors(summary["curves"], prediction.FOREGROUND_THRESHOLD, paths.figure("prediction_error"))
    for name, curve in summary["curves"].items():
        horizon = curve["foreground_horizon"]
        logger.info(f"{name}: the objects' open-loop error passes {prediction.FOREGROUND_THRESHOLD:g} of drawing "
                    + (f"none at step {horizon}" if horizon else f"none within {len(curve['foreground_ratio'])} steps"))
    atomic_write(paths.dreamer_prediction,
                 lambda temporary: temporary.write_text(json_text(summary)))
    return summary
