"""Every env step a V+M+C agent used, from the records its stages left: the budget it is compared at.

The published scores at 100k env steps (Dreamer, DrQ, ...) count every step the agent took in the
real env. V+M+C takes real steps in three places, and each is counted:

- ``data``: the rollouts V and M learned from (the final round's file, which holds the collected
  episodes and the episodes every iterative round played);
- ``real_checks``: the real episodes C's training played to check the CMA mean (``eval_real_episodes``
  every ``eval_every`` generations, in every search of ``restarts`` and every round), whether or not
  the pick of C used them: they were played to decide how the run went;
- ``real_fitness``: the episodes of C's fitness when it is evolved in the real env (``--in real``);
- ``round_scores``: each iterative round's real score of its C (``iterate.eval_episodes``).

The evaluation episodes (`wm evaluate`) are the measurement and are not counted; nor are the
temperature sweep's other Cs, which the agent is not. A check logged before its env steps were
(``eval/real_env_steps``) is counted in ``unlogged_checks``, and the total is then a lower bound.
"""

from __future__ import annotations

import json
from typing import Any

from worldmodels.config import PipelineConfig
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.store import RolloutReader

CONTROLLER_LOG = "controller"


def controller_logs(config: PipelineConfig, paths: PipelinePaths) -> list[str]:
    """The metrics logs of the CMA-ES runs that made one round's C: the searches of ``controller.restarts``
    (``controller.jsonl`` is then a copy of the one picked), else ``controller.jsonl``."""
    restarts = config.controller.restarts
    return ([f"{CONTROLLER_LOG}_search{index + 1}" for index in range(restarts)] if restarts > 1
            else [CONTROLLER_LOG])


def data_env_steps(paths: PipelinePaths) -> int:
    """Env steps in the data a folder's models were trained on: from its rollouts, or, for a finished
    round that handed its rollouts on to the next round, from its round marker."""
    if not paths.rollouts.is_file() and paths.round_marker.is_file():
        return int(json.loads(paths.round_marker.read_text())["record"]["env_steps_of_data"])
    with RolloutReader(paths.rollouts) as rollouts:
        return rollouts.num_steps * rollouts.action_repeat


def world_model_env_steps(config: PipelineConfig, paths: PipelinePaths, rounds: int | None = None) -> dict[str, Any]:
    """Every env step the V+M+C of round ``rounds`` (default: the final one, ``iterate.iterations``) of
    ``paths`` (a pipeline's folder) used, by where it was taken:
    ``{"data", "real_checks", "real_fitness", "round_scores", "unlogged_checks", "total"}``."""
    rounds = config.iterate.iterations if rounds is None else rounds
    used = {"data": data_env_steps(paths.round(rounds)), "real_checks": 0, "real_fitness": 0, "round_scores": 0,
            "unlogged_checks": 0}
    for index in range(rounds + 1):
        for name in controller_logs(config, paths.round(index)):
            for record in MetricsLog(paths.round(index).metrics(name), step_key="generation").read():
                used["real_fitness"] += int(record.get("env_steps", 0))
                if "eval/real_env_steps" in record:
                    used["real_checks"] += int(record["eval/real_env_steps"])
                elif "eval/real_mean" in record:
                    used["unlogged_checks"] += 1
    for record in MetricsLog(paths.metrics("iterate"), step_key="iteration").read() if rounds else []:
        if record["iteration"] > rounds:  # a later round's score: not this round's agent's
            continue
        if "real_env_steps" in record:
            used["round_scores"] += int(record["real_env_steps"])
        else:
            used["unlogged_checks"] += 1
    used["total"] = used["data"] + used["real_checks"] + used["real_fitness"] + used["round_scores"]
    return used


def describe(used: dict[str, Any]) -> str:
    """``used`` in words: "100,000 env steps: data 92,000, real checks 8,000"."""
    parts = [f"{label} {used[key]:,}" for key, label in (("data", "data"), ("real_checks", "real checks"),
                                                         ("real_fitness", "real fitness"),
                                                         ("round_scores", "round scores")) if used[key]]
    if len(parts) == 1 and not used["unlogged_checks"]:
        return f"{used['total']:,} env steps, all of them its data (no real episode in its training)"
    text = f"{used['total']:,} env steps: " + ", ".join(parts)
    if used["unlogged_checks"]:
        count = used["unlogged_checks"]
        checks = f"{count} real check{'s' if count != 1 else ''}"
        text += f", and {checks} logged without {'their' if count != 1 else 'its'} env steps (so at least this many)"
    return text
