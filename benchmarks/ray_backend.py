"""Ray against the local pool, and the throughput model for CarRacing at the paper's scale; prints and saves JSON.

    .venv/bin/python benchmarks/ray_backend.py [--episodes N] [--out benchmarks/results/ray.json]

Measures, with the machine otherwise idle (ratios within one run):
- collect throughput (agent steps/s of the whole stage: play, ship back, commit to HDF5) on the default
  pipeline's cartpole-balance with 2 workers, local processes against Ray actors (Ray already started:
  its start-up is a fixed cost of the command, not of the throughput);
- real-env fitness (V + M + C in the loop, the paper's CarRacing mode) of one generation on Ray with 1
  and with 2 workers;
- CarRacing-v3 env steps/s on one core: the env alone (collection) and with V + M + C acting on a
  lockstep batch of 1 and of 16 episodes (the paper's 16 rollouts per candidate), from which the
  cores x hours of the paper's budget are read off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from worldmodels.config import load_pipeline  # noqa: E402
from worldmodels.core.paths import PipelinePaths  # noqa: E402
from worldmodels.core.runtime import cpu_description  # noqa: E402
from worldmodels.envs import make_exploration_policy  # noqa: E402
from worldmodels.evaluation.episodes import evaluation_seeds, play_episodes  # noqa: E402
from worldmodels.models.controller import LinearController  # noqa: E402
from worldmodels.models.mdnrnn import MDNRNN  # noqa: E402
from worldmodels.models.vae import ConvVAE  # noqa: E402
from worldmodels.pools.backend import use_backend  # noqa: E402
from worldmodels.stages import collect  # noqa: E402
from worldmodels.vmc.agent import WorldModelAgent  # noqa: E402
from worldmodels.vmc.real_fitness import RealFitnessWorkers  # noqa: E402

PAPER_COLLECT_STEPS = 10_000 * 1_000  # 10,000 random episodes of 1,000 frames
PAPER_EVOLUTION_STEPS = 1_800 * 64 * 16 * 1_000  # generations x population x rollouts x frames


def collect_rate(backend: str, episodes: int, scratch: Path) -> dict[str, float]:
    """Agent steps/s of the collect stage with 2 workers on ``backend``."""
    config = load_pipeline("cartpole_balance_oneshot", [f"collect.episodes={episodes}", "collect.workers=2",
                                                f"runtime.backend={backend}"])
    paths = PipelinePaths.for_pipeline(scratch / backend, config.name)
    started = time.perf_counter()
    collect.run(config, paths, progress=False)
    seconds = time.perf_counter() - started
    from worldmodels.data.store import RolloutReader

    with RolloutReader(paths.rollouts) as reader:
        steps = reader.num_steps
    return {"agent_steps": steps, "seconds": seconds, "agent_steps_per_s": steps / seconds}


def world_model(z_size: int = 32, hidden: int = 256) -> tuple[ConvVAE, MDNRNN, dict]:
    """The paper's CarRacing V and M sizes (untrained: the cost, not the skill, is measured)."""
    torch.manual_seed(0)
    args = {"z_size": z_size, "hidden_size": hidden, "action_size": 3}
    return ConvVAE(z_size).eval(), MDNRNN(z_size, 3, hidden, 5).eval(), args


def fitness_rate(workers: int, population: int, rollouts: int) -> dict[str, float]:
    """One generation of real-env fitness on CarRacing (episodes cut at 200 steps) with ``workers`` Ray actors,
    timed after a first generation (the actors' start-up and V and M's shipping happen once per evolution)."""
    env = load_pipeline("carracing_small", ["env.max_episode_steps=200"]).env
    vae, model, args = world_model()
    candidates = np.random.default_rng(0).normal(0, 0.1, (population, LinearController(**args).num_parameters))
    seeds = evaluation_seeds(0, rollouts)
    with RealFitnessWorkers(env, vae, model, args, workers) as pool:
        pool.fitness(candidates, seeds)
        started = time.perf_counter()
        _, steps = pool.fitness(candidates, evaluation_seeds(0, rollouts, offset=rollouts))
        seconds = time.perf_counter() - started
    return {"agent_steps": steps, "seconds": seconds, "agent_steps_per_s": steps / seconds}


def carracing_rates(steps: int) -> dict[str, float]:
    """CarRacing-v3 env steps/s on one core: the env with the collect policy, and with V + M + C."""
    torch.set_num_threads(1)
    env = load_pipeline("carracing").env
    rates = {}
    policy = make_exploration_policy("brownian", 3)
    seeds = evaluation_seeds(1, max(1, steps // 1000))
    started = time.perf_counter()
    played = sum(e.length for e in play_episodes(env, policy, seeds, batch=1))
    rates["env_alone"] = played / (time.perf_counter() - started)
    vae, model, args = world_model()
    for batch in (1, 16):
        agent = WorldModelAgent(vae, model, LinearController(**args))
        short = load_pipeline("carracing", [f"env.max_episode_steps={max(steps // batch, 50)}"]).env
        started = time.perf_counter()
        played = sum(e.length for e in play_episodes(short, agent, evaluation_seeds(2, batch), batch=batch))
        rates[f"with_vmc_batch{batch}"] = played / (time.perf_counter() - started)
    return rates


def budget(rates: dict[str, float]) -> dict[str, dict[str, float]]:
    """Core-hours of the paper's budget and of carracing.yaml's collection at the measured per-core rates, and
    the wall-clock hours on 64 cores (rates scale with cores: each worker is one env on one core)."""
    rows = {
        "paper collection (10,000 x 1,000 frames)": (PAPER_COLLECT_STEPS, rates["env_alone"]),
        "paper evolution (1,800 gens x 64 x 16 x 1,000)": (PAPER_EVOLUTION_STEPS, rates["with_vmc_batch16"]),
        "carracing.yaml collection (10,000 episodes)": (PAPER_COLLECT_STEPS, rates["env_alone"]),
    }
    return {name: {"env_steps": steps, "core_hours": steps / rate / 3600, "hours_on_64_cores": steps / rate / 3600 / 64}
            for name, (steps, rate) in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=40, help="collect episodes per backend")
    parser.add_argument("--carracing-steps", type=int, default=2000, help="CarRacing steps per rate")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/ray.json"))
    args = parser.parse_args()
    from worldmodels.pools.ray_cluster import connect

    results: dict[str, object] = {"machine": {"cpu": cpu_description(), "python": platform.python_version(),
                                              "torch": torch.__version__}}
    connect(None)
    with tempfile.TemporaryDirectory() as scratch:
        local = collect_rate("local", args.episodes, Path(scratch))
        on_ray = collect_rate("ray", args.episodes, Path(scratch))
    results["collect_2_workers"] = {"local": local, "ray": on_ray,
                                    "ray_over_local": on_ray["agent_steps_per_s"] / local["agent_steps_per_s"]}
    print(json.dumps(results["collect_2_workers"], indent=1), flush=True)
    use_backend("ray")
    one, two = fitness_rate(1, 8, 2), fitness_rate(2, 8, 2)
    use_backend("local")
    results["real_fitness_ray"] = {"1_worker": one, "2_workers": two,
                                   "speedup": two["agent_steps_per_s"] / one["agent_steps_per_s"]}
    print(json.dumps(results["real_fitness_ray"], indent=1), flush=True)
    rates = carracing_rates(args.carracing_steps)
    results["carracing_steps_per_s_one_core"] = rates
    results["budget"] = budget(rates)
    print(json.dumps({"carracing_steps_per_s_one_core": rates, "budget": results["budget"]}, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
