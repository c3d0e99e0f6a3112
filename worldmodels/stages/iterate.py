"""Stage `iterate`: the paper's iterative procedure, ``iterate.iterations`` rounds after the first C.

Round ``k`` lives in ``iterations/<k>/``, a pipeline folder of its own (round 0 is the pipeline's
folder itself, whose artifacts stay as the paper's one-shot recipe made them):

1. ``rollouts.h5``: round ``k - 1``'s file plus ``iterate.episodes`` new episodes played by
   round ``k - 1``'s V + M + C with Gaussian action noise (source ``iteration<k>:...``). Round 1
   copies the pipeline's file (which its stages keep reading); later rounds take the finished
   round's file over instead of copying it, since its episodes are the head of theirs (a TakeCover
   round's file is ~6 GB): a finished round's folder keeps its models and metrics, not its data;
2. ``vae.pt``: round ``k - 1``'s V, or a V re-trained on the grown data (``retrain_vae``);
3. ``latents.h5`` (with the same V only the new episodes are encoded; the rest are round
   ``k - 1``'s rows), then ``mdnrnn.pt``: M continued from round ``k - 1``'s M for
   ``mdnrnn_epochs`` on the grown data (or trained from scratch), and measured as a simulator;
4. ``controller.pt``: CMA-ES started at round ``k - 1``'s C (or at C = 0, ``evolve_from: zero``),
   ``controller_generations`` more (a count per round if a list);
5. the round's C scored on ``eval_episodes`` real episodes: ``metrics/iterate.jsonl`` (in the
   pipeline's folder) gets one line per round with the real and dream scores, the env steps of
   data so far and M's simulator numbers.

Every step resumes (each is a stage that does), a finished round is marked by ``round.json``
(asked again with other settings it is refused, except the last round asked for more generations
of C: its search goes on), and ``agent.json`` names the final agent, which `wm evaluate` scores.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.artifacts import load_controller, load_mdnrnn, load_vae
from worldmodels.config import PipelineConfig
from worldmodels.core.checkpoint import atomic_write, file_sha256
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.data.store import PLAYED_SOURCE_PREFIX, RolloutReader, RolloutWriter
from worldmodels.envs import probe_env
from worldmodels.errors import UserValueError
from worldmodels.evaluation.episodes import CHECK_STREAM, ITERATION_STREAM, evaluation_seeds, play_in_workers
from worldmodels.models.controller import LinearController
from worldmodels.stages import encode
from worldmodels.stages import mdnrnn as mdnrnn_stage
from worldmodels.stages import vae as vae_stage
from worldmodels.stages.controller import Evolution
from worldmodels.vmc.agent import WorldModelAgent

logger = logging.getLogger(__name__)

# Round scores use check-stream seeds past those C's training checks use.
ROUND_SEED_OFFSET = 10_000


def round_source(round_index: int, noise_std: float) -> str:
    return f"{PLAYED_SOURCE_PREFIX}{round_index}:worldmodel+noise{noise_std:g}"


def round_episode_seeds(base_seed: int, round_index: int, index: int) -> tuple[int, int]:
    """(env seed, noise seed) of on-policy episode ``index`` of round ``round_index``."""
    env_seed, noise_seed = np.random.SeedSequence([base_seed, ITERATION_STREAM, round_index, index]).generate_state(
        2, dtype=np.uint32)
    return int(env_seed), int(noise_seed)


def _identity(config: PipelineConfig, previous: PipelinePaths, round_index: int) -> dict[str, Any]:
    """What a round is made from: the iterate settings (C's generations: this round's count) and the
    previous round's controller."""
    settings = {k: v for k, v in dataclasses.asdict(config.iterate).items() if k not in ("iterations", "eval_episodes")}
    settings["controller_generations"] = config.iterate.generations_of(round_index)
    for key, default in (("start_from", "controller"), ("evolve_from", "previous")):
        if settings[key] == default:  # the paper's rounds, as before these settings existed: they resume
            settings.pop(key)
    return {"settings": settings, "previous_controller_sha256": file_sha256(previous.controller)}


def _longer_search_of_the_last_round(recorded: dict[str, Any], identity: dict[str, Any], following: PipelinePaths
                                     ) -> bool:
    """Whether a finished round differs from what is asked only by more generations of C, with no
    round after it yet (whose data and C would then be of another C): its search can go on."""
    asked, done = identity["settings"], recorded["settings"]

    def others(settings: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in settings.items() if k != "controller_generations"}

    return (not following.root.exists() and others(asked) == others(done)
            and recorded["previous_controller_sha256"] == identity["previous_controller_sha256"]
            and asked["controller_generations"] > done["controller_generations"])


def _copy_atomically(source: Path, target: Path) -> None:
    atomic_write(target, lambda temporary: shutil.copyfile(source, temporary))


def _take_over_rollouts(previous: PipelinePaths, current: PipelinePaths, round_index: int) -> None:
    """Start round ``round_index``'s data from the previous round's: a copy of the pipeline's own file
    for round 1, the finished round's file itself (renamed, atomically) after that."""
    if round_index == 1:
        _copy_atomically(previous.rollouts, current.rollouts)
        return
    if not previous.rollouts.is_file():
        raise FileNotFoundError(f"{previous.rollouts}: round {round_index - 1}'s episodes are gone (a finished "
                                f"round hands its file on to the next, and {current.root} was deleted); delete "
                                f"{current.root.parent} to redo the rounds")
    os.replace(previous.rollouts, current.rollouts)


def grow_rollouts(config: PipelineConfig, previous: PipelinePaths, current: PipelinePaths, round_index: int,
                  progress: bool) -> int:
    """Round ``k``'s rollouts: ``k - 1``'s plus on-policy episodes (resumed); returns how many were played now."""
    settings = config.iterate
    current.ensure()
    if not current.rollouts.is_file():
        _take_over_rollouts(previous, current, round_index)
    source = round_source(round_index, settings.noise_std)
    env_info, frame_shape, action_size = probe_env(config.env)
    with RolloutWriter(current.rollouts, dataclasses.asdict(config.env), env_info, frame_shape, action_size,
                       config.collect.compression) as writer:
        rows = writer.episode_rows()
        done = int(sum(row["source"].decode() == source for row in rows))
        todo = list(range(done, settings.episodes))
        if not todo:
            return 0
        device = resolve(config.runtime).device
        vae, _ = load_vae(previous.vae, device)
        model, _ = load_mdnrnn(previous.mdnrnn, device)
        controller = played_controller(config, previous, round_index)
        agent = WorldModelAgent(vae, model, controller, noise_std=settings.noise_std)
        seeds = [round_episode_seeds(config.collect.seed, round_index, i) for i in todo]
        episodes = play_in_workers(config.env, agent, [env for env, _ in seeds], [noise for _, noise in seeds],
                                   workers=config.collect.workers)
        with tqdm(total=settings.episodes, initial=done, unit="ep", desc=f"round {round_index}: collect",
                  disable=not progress, dynamic_ncols=True) as bar:
            for index, episode in zip(todo, episodes, strict=True):
                episode.index, episode.base_seed, episode.source = index, config.collect.seed, source
                writer.append(episode)
                bar.update(1)
                bar.set_postfix(ret=f"{episode.total_return:.0f}")
    return len(todo)


def played_controller(config: PipelineConfig, previous: PipelinePaths, round_index: int) -> LinearController:
    """The C that round ``round_index`` collects with (before noise): the previous round's, or C = 0
    for the first round with ``iterate.start_from: zero``."""
    controller, _ = load_controller(previous.controller)
    if round_index == 1 and config.iterate.start_from == "zero":
        controller.set_flat(torch.zeros(controller.num_parameters))
    return controller


def score_round(config: PipelineConfig, current: PipelinePaths, round_index: int) -> dict[str, Any]:
    """One line of ``metrics/iterate.jsonl``: the round's C in the real env and in its dream, and M's numbers."""
    evolution = Evolution(config, current)
    _, checkpoint = load_controller(current.controller)
    parameters = checkpoint["parameters"].numpy()
    seeds = evaluation_seeds(config.controller.seed, config.iterate.eval_episodes, CHECK_STREAM,
                             offset=ROUND_SEED_OFFSET)
    real, env_steps = evolution.real_play(parameters, seeds)
    dream = evolution.dream_score(parameters, config.controller.temperature, config.controller.eval_dream_rollouts,
                                  config.controller.seed + 11)
    rollouts = RolloutReader(current.rollouts)
    record = {"iteration": round_index, "real_mean": float(real.mean()), "real_std": float(real.std()),
              "real_episodes": len(seeds),
              "real_env_steps": env_steps, "dream_mean": dream,
              "episodes_of_data": rollouts.num_episodes,
              "env_steps_of_data": rollouts.num_steps * rollouts.action_repeat}
    if current.simulator_metrics.is_file():
        simulator = json.loads(current.simulator_metrics.read_text())
        record |= {"m/replay_mean_abs_gap": simulator["mean_abs_gap"],
                   "m/replay_correlation": simulator["correlation"],
                   "m/zero_action_dream": simulator["zero_action"]["dream_return_mean"],
                   "m/zero_action_real": simulator["zero_action"]["real_return_mean"]}
        if "action_sensitivity" in simulator:
            record["m/action_sensitivity"] = simulator["action_sensitivity"]["ratio"]
        if "held_action" in simulator:
            record["m/held_action_overestimate"] = simulator["held_action"]["largest_overestimate"]
    return record


def encode_round(config: PipelineConfig, previous: PipelinePaths, current: PipelinePaths, progress: bool) -> None:
    """``latents.h5`` of the round: with the previous round's V, its latents are kept and only the
    new episodes are encoded."""
    retrained = config.iterate.retrain_vae
    encode.run(config, current, progress, v_of_other_rollouts=not retrained,
               reuse=None if retrained else previous.latents)


def _train_round(config: PipelineConfig, paths: PipelinePaths, round_index: int, progress: bool) -> None:
    settings = config.iterate
    previous, current = paths.round(round_index - 1), paths.round(round_index)
    marker = current.round_marker
    identity = _identity(config, previous, round_index)
    if marker.is_file():
        recorded = json.loads(marker.read_text())["identity"]
        if recorded == identity:
            return
        if not _longer_search_of_the_last_round(recorded, identity, paths.round(round_index + 1)):
            raise UserValueError(f"{current.root} was made from another controller or other iterate settings; delete "
                             f"{paths.iterations_dir} to redo the rounds, or use another --data-dir")
        logger.info(f"round {round_index}: C's search goes on from {recorded['settings']['controller_generations']} "
                    f"to {identity['settings']['controller_generations']} generations")
        marker.unlink()  # every step below resumes: only C's evolution has more to do
    started = time.perf_counter()
    played = grow_rollouts(config, previous, current, round_index, progress)
    if settings.retrain_vae:
        vae_stage.run(config, current, progress)
    elif not current.vae.is_file() or file_sha256(current.vae) != file_sha256(previous.vae):
        _copy_atomically(previous.vae, current.vae)
    encode_round(config, previous, current, progress)
    if settings.mdnrnn_epochs:
        m_config = dataclasses.replace(config, mdnrnn=dataclasses.replace(config.mdnrnn, epochs=settings.mdnrnn_epochs))
        mdnrnn_stage.run(m_config, current, progress, start_from=previous.mdnrnn)
    else:
        mdnrnn_stage.run(config, current, progress)
    start = played_controller(config, previous, round_index).get_flat().numpy().astype(np.float64)
    if settings.evolve_from == "zero":
        start = np.zeros_like(start)
    Evolution(config, current).evolve(config.controller.temperature, generations=settings.generations_of(round_index),
                                      start=start, progress=progress)
    record = score_round(config, current, round_index) | {"episodes_played": played,
                                                           "seconds": time.perf_counter() - started}
    log = MetricsLog(paths.metrics("iterate"), step_key="iteration")
    log.keep_up_to(round_index - 1)
    log.append(record)
    atomic_write(marker, lambda temporary: temporary.write_text(json.dumps({"identity": identity,
                                                                            "record": record}, indent=1)))
    logger.info(f"round {round_index}: real {record['real_mean']:.1f} +- {record['real_std']:.1f}, dream "
                f"{record['dream_mean']:.1f}, {record['env_steps_of_data']} env steps of data")


def write_agent_file(config: PipelineConfig, paths: PipelinePaths) -> Path:
    """``agent.json``: the final agent's folder and controller hash, rewritten only when they change
    (Make rebuilds the evaluation when this file changes)."""
    final = paths.round(config.iterate.iterations)
    content = json.dumps({"iterations": config.iterate.iterations, "root": str(final.root),
                          "controller_sha256": file_sha256(final.controller)}, indent=1)
    path = paths.agent
    if not path.is_file() or path.read_text() != content:
        atomic_write(path, lambda temporary: temporary.write_text(content))
    return path


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Run the rounds not yet done, then write ``agent.json``; returns its path."""
    resolve(config.runtime).apply()
    if config.iterate.iterations and config.controller.restarts != 1:
        raise UserValueError(f"controller.restarts={config.controller.restarts}: each round of `wm iterate` evolves "
                             "one CMA-ES search; set controller.restarts=1 for the rounds")
    if not paths.controller.is_file():
        raise FileNotFoundError(f"{paths.controller}: no controller to start from; run `wm train-controller` first")
    log = MetricsLog(paths.metrics("iterate"), step_key="iteration")
    if config.iterate.iterations and not any(r["iteration"] == 0 for r in log.read()):
        log.keep_up_to(-1)
        log.append(score_round(config, paths, 0) | {"episodes_played": 0})
    for round_index in range(1, config.iterate.iterations + 1):
        _train_round(config, paths, round_index, progress)
    return write_agent_file(config, paths)
