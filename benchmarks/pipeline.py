"""The whole V+M+C pipeline on several seeds: each stage's time, every env step used, the score; one JSON.

    .venv/bin/python -m benchmarks.pipeline [--pipeline cartpole_balance] [--seeds 0 1 2]
                                            [--data-dir data/bench] [--set KEY=VALUE ...] [--read-only]
                                            [--out benchmarks/results/pipeline_<pipeline>.json]

Seed ``s`` is the pipeline with ``collect.seed``, ``vae.seed``, ``mdnrnn.seed`` and ``controller.seed``
set to ``s`` (other data, other initial weights, another CMA-ES search), in ``<data-dir>/seed<s>/``.
Each seed runs the stages `make all` runs for V+M+C (collect, train-vae, encode, train-mdnrnn,
train-controller, iterate, evaluate), each a `wm` command that resumes, so a stopped benchmark goes on
where it stopped; with ``--read-only`` nothing runs and the folders are read as they are.

Per seed: mean, std and worst of the 100 evaluation episodes, how many fell below the zero action's
mean, env steps used (``vmc/env_budget.py``), M's dream of doing nothing against the real one (at the
temperature C is searched at), and every stage's seconds from ``metrics/stage_times.json`` (the stages
run one after another on an otherwise idle machine: the times are only as true as that).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from worldmodels.config import load_pipeline
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.run_record import read_runs
from worldmodels.core.runtime import cpu_description
from worldmodels.core.stage_times import read_stage_times
from worldmodels.evaluation.episodes import Score
from worldmodels.vmc.env_budget import describe, world_model_env_steps

VMC_STAGES = ("collect", "train-vae", "encode", "train-mdnrnn", "train-controller", "iterate", "evaluate")
SEEDED = ("collect.seed", "vae.seed", "mdnrnn.seed", "controller.seed")


def seed_settings(seed: int, extra: list[str]) -> list[str]:
    return [*extra, *(f"{key}={seed}" for key in SEEDED)]


def run_stages(pipeline: str, folder: Path, settings: list[str]) -> None:
    """Every V+M+C stage of ``pipeline`` into ``folder`` (a data dir), one `wm` command each."""
    wm = Path(sys.executable).with_name("wm")
    for stage in VMC_STAGES:
        command = [str(wm), stage, "-p", pipeline, "--data-dir", str(folder), "--no-progress"]
        command += [part for setting in settings for part in ("--set", setting)]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)


def seed_row(pipeline: str, folder: Path, settings: list[str]) -> dict:
    """One seed's numbers, read from the pipeline folder its stages wrote."""
    config = load_pipeline(pipeline, settings)
    paths = PipelinePaths(folder / config.name)
    score, zero = Score.read(paths.score("worldmodel")), Score.read(paths.score("zero"))
    simulator = json.loads(paths.simulator_metrics.read_text())
    held = simulator["held_action"]
    doing_nothing = held["actions"].index(0.0)
    dream, real = held["dream_return_mean"][doing_nothing], held["real_return_mean"][doing_nothing]
    times = read_stage_times(paths)
    seconds = {stage: times[stage]["seconds"] for stage in VMC_STAGES if stage in times}
    returns = np.array(score.returns)
    return {
        "settings": settings, "folder": str(paths.root),
        "mean": score.mean, "std": score.std, "worst": float(returns.min()), "episodes": score.episodes,
        "zero_action_mean": zero.mean, "below_zero_action": int((returns < zero.mean).sum()),
        "env_steps_used": world_model_env_steps(config, paths),
        "m_doing_nothing": {"dream": dream, "real": real, "relative_error": (dream - real) / real,
                            "temperature": held["temperature"], "steps": held["steps"]},
        "stage_seconds": seconds, "vmc_seconds": sum(seconds.values()),
        # The commits the stages ran at (from runs.jsonl), not the one reading the folder.
        "commits": sorted({run["git_commit"][:12] for run in read_runs(paths)
                           if run["event"] == "start" and run.get("command") in VMC_STAGES and run.get("git_commit")}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="cartpole_balance")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", type=Path, default=Path("data/bench"))
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--read-only", action="store_true", help="read the seeds' folders; run nothing")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    for seed in args.seeds:
        settings, folder = seed_settings(seed, args.settings), args.data_dir / f"seed{seed}"
        if not args.read_only:
            run_stages(args.pipeline, folder, settings)
        rows.append({"seed": seed, **seed_row(args.pipeline, folder, settings)})
        row = rows[-1]
        print(f"seed {seed}: {row['mean']:.1f} +- {row['std']:.1f}, worst {row['worst']:.1f}, "
              f"{row['below_zero_action']} below the zero action ({row['zero_action_mean']:.1f}); "
              f"{describe(row['env_steps_used'])}; M's doing nothing "
              f"{row['m_doing_nothing']['relative_error']:+.1%}; V+M+C stages {row['vmc_seconds'] / 60:.1f} min",
              flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"pipeline": args.pipeline, "cpu": cpu_description(), "read_at_commit": commit, "seeds": rows,
              "worst_seed_mean": min(r["mean"] for r in rows), "worst_episode": min(r["worst"] for r in rows),
              "slowest_vmc_seconds": max(r["vmc_seconds"] for r in rows)}
    out = args.out or Path("benchmarks/results") / f"pipeline_{args.pipeline}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"worst seed's mean {result['worst_seed_mean']:.1f}, worst episode {result['worst_episode']:.1f}, "
          f"slowest V+M+C {result['slowest_vmc_seconds'] / 60:.1f} min ({result['cpu']}) -> {out}")


if __name__ == "__main__":
    main()
