"""Speed of one CMA-ES generation in the dream, batched against one rollout at a time, and of
real-env evaluation with 1 and 2 worker processes; JSON.

    .venv/bin/python benchmarks/controller.py [--steps 1000] [--out benchmarks/results/controller.json]

At the paper's CarRacing sizes (z 32, LSTM 256, 3 actions, 867 controller parameters, 64
candidates x 16 rollouts): the seconds of one generation with the whole population as one batch,
and the rate of one rollout at a time over a sample of rollouts, in the same run. Then V + M + C
(untrained weights: the cost is the same) plays the one-shot recipe's cartpole episodes (camera 0)
in 0, 1 and 2 worker processes (0: in this process).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from worldmodels.config import load_pipeline
from worldmodels.core.es import CMAES
from worldmodels.evaluation.episodes import evaluate_policy, evaluation_seeds
from worldmodels.models.controller import LinearController
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import ConvVAE
from worldmodels.vmc.agent import WorldModelAgent
from worldmodels.vmc.dream import DreamEnv, population_returns

Z, H, A, POPSIZE, ROLLOUTS = 32, 256, 3, 64, 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="dream steps per rollout (CarRacing: 1000)")
    parser.add_argument("--single-rollouts", type=int, default=4, help="rollouts timed one at a time")
    parser.add_argument("--real-episodes", type=int, default=48, help="real episodes per worker setting")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/controller.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = MDNRNN(Z, A, H, 5).eval()
    with torch.no_grad():  # an untrained done head would end rollouts at random: keep them all running
        model.done_head.weight.zero_()
        model.done_head.bias.fill_(-20.0)
    starts_mu, starts_logvar = torch.randn(100, Z), torch.full((100, Z), -2.0)
    dimension = LinearController(Z, H, A).num_parameters
    strategy = CMAES(dimension, 0.1, POPSIZE, seed=0)

    started = time.perf_counter()
    population = strategy.ask()
    dream = DreamEnv(model, starts_mu, starts_logvar, max_steps=args.steps)
    fitness = population_returns(dream, torch.from_numpy(population).float(), ROLLOUTS, A)
    strategy.tell(population, fitness.double().numpy())
    generation_s = time.perf_counter() - started
    batched_rate = POPSIZE * ROLLOUTS * args.steps / generation_s

    started = time.perf_counter()
    for index in range(args.single_rollouts):
        single = DreamEnv(model, starts_mu, starts_logvar, max_steps=args.steps)
        population_returns(single, torch.from_numpy(population[index:index + 1]).float(), 1, A)
    single_rate = args.single_rollouts * args.steps / (time.perf_counter() - started)
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"), "controller_parameters": dimension,
        "generation_seconds": generation_s, "batched_dream_steps_per_s": batched_rate,
        "one_at_a_time_dream_steps_per_s": single_rate, "ratio": batched_rate / single_rate,
        "one_at_a_time_generation_seconds_estimate": POPSIZE * ROLLOUTS * args.steps / single_rate,
        "real_evaluation": real_evaluation(args.real_episodes),
    }
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def real_evaluation(episodes: int) -> dict[str, float]:
    """Episodes/s of V + M + C in the one-shot recipe's env (camera 0, as docs/performance.md measured it), in
    this process and in 1 and 2 workers.

    Groups of 8 lockstep envs, as ``wm evaluate`` plays them; a worker's start-up (spawning,
    imports, the EGL context) is included, as it is in every evaluation.
    """
    env = load_pipeline("cartpole_balance_oneshot").env
    agent = WorldModelAgent(ConvVAE(32), MDNRNN(32, 1, 256, 5), LinearController(32, 256, 1))
    seeds = evaluation_seeds(0, episodes)
    rates = {}
    for workers in (0, 1, 2):
        started = time.perf_counter()
        evaluate_policy(env, agent, seeds, batch=8, workers=workers)
        rates[f"episodes_per_s_workers_{workers}"] = episodes / (time.perf_counter() - started)
    rates["ratio_2_workers_to_1"] = rates["episodes_per_s_workers_2"] / rates["episodes_per_s_workers_1"]
    return rates


if __name__ == "__main__":
    main()
