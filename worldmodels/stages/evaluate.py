"""Stage `evaluate`: V + M + C in the real env, beside the random-policy and zero-action baselines.

The random policy is the collect policy; when that is not uniform at every step, the uniform one
is scored too (``uniform_random``: the paper's random rows, e.g. TakeCover's 210 +- 108).

Every agent plays the same episodes: seeds from the evaluation stream, disjoint from the collect
seeds and from the checks made during C's training, in ``evaluate.workers`` processes. The
agent scored is the pipeline's final one (the last round's, with ``iterate.iterations > 0``;
the one-shot C of round 0 is then scored too, as ``worldmodel_round0``). Writes
``scores/<agent>.json`` (mean, std, every return, the seeds, env steps of data the agent was
trained on, wall-clock) and ``figures/score_hist.png``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from worldmodels.artifacts import load_controller, load_mdnrnn, load_vae, refuse_parts_of_other_runs
from worldmodels.config import PipelineConfig
from worldmodels.core.checkpoint import file_sha256
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.data.store import RolloutReader
from worldmodels.envs import make_exploration_policy
from worldmodels.envs.policies import Policy
from worldmodels.evaluation.baselines import ZeroPolicy
from worldmodels.evaluation.episodes import Score, evaluate_policy, evaluation_seeds
from worldmodels.reporting.figures import score_histogram
from worldmodels.vmc.agent import WorldModelAgent
from worldmodels.vmc.env_budget import world_model_env_steps

logger = logging.getLogger(__name__)


def _score(config: PipelineConfig, policy: Policy, seeds: list[int], env_steps: int, path: Path,
           about: dict | None = None) -> Score:
    """Score ``policy`` on ``seeds`` into ``path``; ``about``: what a V+M+C agent is (its rounds, C's hash)."""
    started = time.perf_counter()
    returns = evaluate_policy(config.env, policy, seeds, workers=config.evaluate.workers)
    score = Score.of(path.stem, returns, seeds, env_steps, time.perf_counter() - started, **(about or {}))
    score.write(path)
    logger.info(f"{path.stem:>12}: {score.summary()}")
    return score


def _world_model(config: PipelineConfig, paths: PipelinePaths, device: torch.device,
                 round_index: int) -> tuple[WorldModelAgent, int, dict]:
    """V + M + C of round ``round_index`` of the pipeline folder ``paths`` on ``device``, the env steps of
    data they were trained on, and every env step they used (``vmc/env_budget.py``)."""
    folder = paths.round(round_index)
    vae, v_checkpoint = load_vae(folder.vae, device)
    mdnrnn, m_checkpoint = load_mdnrnn(folder.mdnrnn, device)
    controller, c_checkpoint = load_controller(folder.controller)
    refuse_parts_of_other_runs(folder.vae, folder.mdnrnn, m_checkpoint, folder.controller, c_checkpoint, v_checkpoint,
                               folder.rollouts)
    used = world_model_env_steps(config, paths, round_index)
    return WorldModelAgent(vae, mdnrnn, controller), used["data"], used


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Score V+M+C (when ``report.agents`` has it) and the baselines; returns ``scores/worldmodel.json``
    (``scores/zero.json`` without V+M+C)."""
    runtime = resolve(config.runtime).apply()
    seeds = evaluation_seeds(config.evaluate.seed, config.evaluate.episodes)
    final = paths.round(config.iterate.iterations)  # the last round's agent
    agents: dict[str, tuple[Policy, int]] = {}
    if "worldmodel" in config.report.agents:
        if not final.controller.is_file():
            command = ("wm train-controller" if final == paths
                       else f"wm iterate (iterate.iterations={config.iterate.iterations})")
            raise FileNotFoundError(f"{final.controller}: no final controller; run `{command}`")
        world_models = {"worldmodel": _world_model(config, paths, runtime.device, config.iterate.iterations)}
        if final != paths:
            world_models["worldmodel_round0"] = _world_model(config, paths, runtime.device, 0)
        agents |= {name: (agent, steps) for name, (agent, steps, _) in world_models.items()}
        action_size = agents["worldmodel"][0].mdnrnn.action_size
    else:  # a pipeline without V+M+C (report.agents): the baselines alone
        with RolloutReader(paths.rollouts) as rollouts:
            action_size = rollouts.action_size
    collect = config.collect
    agents |= {
        "random": (make_exploration_policy(collect.policy, action_size, collect.hold_min, collect.hold_max,
                                           collect.brownian_std, collect.action_scale_min), 0),
        "zero": (ZeroPolicy(action_size), 0),
    }
    if collect.policy != "random":  # the paper's random row acts uniformly at every step, not as collected
        agents["uniform_random"] = (make_exploration_policy("random", action_size), 0)
    paths.ensure()
    # What each V+M+C score is of, so that the report pairs it only with the controller it scored.
    about = {}
    if "worldmodel" in agents:
        about["worldmodel"] = {"iterations": config.iterate.iterations,
                               "controller_sha256": file_sha256(final.controller),
                               "env_steps_used": world_models["worldmodel"][2]}
    if "worldmodel_round0" in agents:
        about["worldmodel_round0"] = {"iterations": 0, "controller_sha256": file_sha256(paths.controller),
                                      "env_steps_used": world_models["worldmodel_round0"][2]}
    scores = {name: _score(config, policy, seeds, steps, paths.score(name), about.get(name))
              for name, (policy, steps) in agents.items()}
    score_histogram({name: np.array(score.returns) for name, score in scores.items()}, paths.figure("score_hist"))
    return paths.score("worldmodel" if "worldmodel" in agents else "zero")
