"""Throughput of the collect stage, measured as ratios within one run; prints and saves JSON.

    .venv/bin/python benchmarks/collect.py [--episodes N] [--out benchmarks/results/collect.json]

Measures, on dm_control cartpole-balance with action repeat 8 at 64x64:
- agent steps/s of one env in one thread, for the pipeline's render settings and for others;
- scaling of collect workers (1 vs 2 processes, one thread each);
- the cost of writing episodes to HDF5 against stepping the env alone;
- random 32-step windows/s read back from the file;
- the collector's memory (RSS) as the number of episodes grows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from worldmodels.config import EnvConfig, load_pipeline  # noqa: E402
from worldmodels.data.store import RolloutReader, RolloutWriter  # noqa: E402
from worldmodels.envs import make_env, make_exploration_policy  # noqa: E402
from worldmodels.evaluation.rollout import episode_seeds, run_episode  # noqa: E402
from worldmodels.pools.backend import ordered_map  # noqa: E402
from worldmodels.pools.workers import environment, thread_limits
from worldmodels.stages import collect  # noqa: E402


def step_rate(env_config: EnvConfig, steps: int) -> float:
    """Agent steps/s of one env in this process, held-random actions, after a warm-up."""
    env = make_env(env_config)
    policy = make_exploration_policy("held_random", env.action_size)
    run_episode(env, policy, 0, 0)
    done, seed, started = 0, 1, time.perf_counter()
    while done < steps:
        done += run_episode(env, policy, seed, seed).length
        seed += 1
    rate = done / (time.perf_counter() - started)
    env.close()
    return rate


def render_settings(base: EnvConfig, steps: int) -> dict[str, float]:
    variants = {
        "pipeline (no shadows/reflections, no antialias)": base,
        "no shadows/reflections, antialias": EnvConfig(**{**base.__dict__, "antialias": True}),
        "dm_control default render (shadows, reflections, antialias)":
            EnvConfig(**{**base.__dict__, "shadows": True, "reflections": True, "antialias": True}),
    }
    # Rendering threads as a collect worker has them (one thread per worker).
    with environment(thread_limits(1)):
        return {name: step_rate(config, steps) for name, config in variants.items()}


def worker_scaling(config, episodes: int) -> dict[str, float]:
    """Steps/s of collect workers, timed from the first finished episode (start-up excluded)."""
    rates = {}
    for workers in (1, 2):
        started, steps = None, 0
        for episode in ordered_map(collect._collect_episode, range(episodes), workers, collect._init_worker,
                                   (config.env, config.collect), threads_per_worker=1):
            if started is None:
                started = time.perf_counter()
                continue
            steps += episode.length
        rates[f"{workers} worker(s)"] = steps / (time.perf_counter() - started)
    rates["ratio 2 vs 1"] = rates["2 worker(s)"] / rates["1 worker(s)"]
    return rates


def write_overhead(config, episodes: int, path: Path) -> dict[str, float]:
    """Seconds stepping the env vs seconds writing the same episodes to HDF5, in one process."""
    with environment(thread_limits(1)):
        env = make_env(config.env)
        policy = make_exploration_policy("held_random", env.action_size)
        started = time.perf_counter()
        collected = [run_episode(env, policy, *episode_seeds(0, i)) for i in range(episodes)]
        stepping = time.perf_counter() - started
        info, shape, size = env.describe(), env.frame_shape, env.action_size
        env.close()
    started = time.perf_counter()
    with RolloutWriter(path, config.env.__dict__, info, shape, size) as writer:
        for episode in collected:
            writer.append(episode)
    writing = time.perf_counter() - started
    return {"stepping_s": stepping, "writing_s": writing, "write_cost_fraction": writing / stepping}


def window_rate(path: Path, steps: int, count: int) -> float:
    """Random ``steps``-step windows/s read from ``path`` (page cache warm after the first pass)."""
    reader = RolloutReader(path)
    rng = np.random.default_rng(0)
    lengths = reader.lengths
    episodes = rng.integers(0, reader.num_episodes, count)
    starts = [int(rng.integers(0, lengths[e] - steps + 1)) for e in episodes]
    for episode, start in zip(episodes[:200], starts[:200], strict=True):
        reader.window(int(episode), start, steps)
    started = time.perf_counter()
    for episode, start in zip(episodes, starts, strict=True):
        reader.window(int(episode), start, steps)
    return count / (time.perf_counter() - started)


def memory_growth(episodes: int, data_dir: Path) -> dict[str, float]:
    """Resident memory (MiB) of the `wm collect` process after successive committed episodes."""
    command = [sys.executable, "-m", "worldmodels.cli", "collect", "--pipeline", "cartpole_balance_oneshot",
               "--data-dir", str(data_dir), "--no-progress", "--set", f"collect.episodes={episodes}"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples = {}
    for line in process.stdout:
        if line.startswith("committed episode"):
            done = int(line.split()[2].split("/")[0])
            status = Path(f"/proc/{process.pid}/status").read_text()
            rss_kib = int(next(x for x in status.splitlines() if x.startswith("VmRSS")).split()[1])
            samples[done] = rss_kib / 1024
    process.wait()
    first = samples[min(k for k in samples if k >= 5)]
    last = samples[max(samples)]
    return {"rss_mib_after_5": first, f"rss_mib_after_{max(samples)}": last, "growth_ratio": last / first}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=12, help="episodes per scaling / writing measurement")
    parser.add_argument("--memory-episodes", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/collect.json"))
    args = parser.parse_args()
    config = load_pipeline("cartpole_balance_oneshot")
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "task": f"{config.env.id}, action repeat {config.env.action_repeat}, {config.env.frame_size}px",
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        print("one env, one thread: agent steps/s by render settings ...", flush=True)
        results["steps_per_s_one_thread"] = render_settings(config.env, steps=125 * 4)
        print(json.dumps(results["steps_per_s_one_thread"], indent=1), flush=True)
        print("collect workers ...", flush=True)
        results["workers"] = worker_scaling(config, args.episodes)
        print(json.dumps(results["workers"], indent=1), flush=True)
        print("HDF5 writing vs stepping ...", flush=True)
        results["hdf5_write"] = write_overhead(config, args.episodes, scratch / "write.h5")
        print(json.dumps(results["hdf5_write"], indent=1), flush=True)
        print("random 32-step windows ...", flush=True)
        results["windows_per_s_32_steps"] = window_rate(scratch / "write.h5", 32, 3000)
        print(results["windows_per_s_32_steps"], flush=True)
        print("collector memory ...", flush=True)
        results["memory"] = memory_growth(args.memory_episodes, scratch / "memory")
        print(json.dumps(results["memory"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
