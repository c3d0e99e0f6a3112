"""How torch thread settings hold up when another process keeps one core busy; prints and saves JSON.

    .venv/bin/python benchmarks/threads.py [--seconds 4] [--out benchmarks/results/threads.json]

Three of the pipeline's hot loops (M's training step at batch 16 x 125, one dream step of 1,024
rollouts with their linear controllers, V's training step at batch 100) are timed under each
thread setting, first on an otherwise idle machine, then beside a competing process: one Python
busy loop per spare core (nice 0, the worst case; the numbers say what a laptop's background
job costs). Each measurement runs in a fresh process, because the OpenMP wait policy is read once
when torch loads.

For every setting the script prints the rate alone, the rate beside the competitor, and the
slowdown (alone / busy); ``runtime.threads: auto`` must keep that slowdown under 2x. Run it with
nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKLOADS = ("mdnrnn_train", "dream_step", "vae_train")


# OpenMP wait policies: ``default`` is libgomp's own (spin about 300,000 times, then sleep); ``PASSIVE``
# sleeps at once; ``SPIN10K`` spins 10,000 times (GOMP_SPINCOUNT), then sleeps.
WAIT_POLICIES = {"default": {}, "PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}, "SPIN10K": {"GOMP_SPINCOUNT": "10000"}}


def _settings(cores: int) -> list[dict[str, str | int]]:
    """Thread counts x OpenMP wait policies to compare (one thread never waits, so one policy for it)."""
    settings: list[dict[str, str | int]] = [{"threads": 1, "wait_policy": "default"}]
    if cores > 1:
        settings += [{"threads": cores, "wait_policy": policy} for policy in WAIT_POLICIES]
    return settings


def _workload(name: str):
    """A function doing one unit of ``name``'s work, and the items (timesteps, steps, images) it does."""
    import torch

    from worldmodels.models.controller import population_actions
    from worldmodels.models.mdnrnn import MDNRNN, mdn_loss
    from worldmodels.models.vae import ConvVAE, vae_loss
    from worldmodels.vmc.dream import DreamEnv

    torch.manual_seed(0)
    if name == "mdnrnn_train":
        model = MDNRNN(32, 1, 256, 5)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        z, actions = torch.randn(16, 126, 32), torch.rand(16, 125, 1) * 2 - 1
        rewards, dones, mask = torch.randn(16, 125), torch.zeros(16, 125), torch.ones(16, 125)

        def step() -> None:
            losses = mdn_loss(model(z[:, :-1], actions)[0], z[:, 1:], rewards, dones, mask)
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
        return step, 16 * 125
    if name == "dream_step":
        model = MDNRNN(32, 1, 256, 5)
        dream = DreamEnv(model, torch.randn(100, 32), torch.full((100, 32), -2.0), max_steps=10**9)
        rows = torch.randn(1024, (32 + 256 + 1) * 1) * 0.1
        state = {"z": dream.reset(1024), "h": dream.h}

        def step() -> None:
            result = dream.step(population_actions(rows, state["z"], state["h"], 1, "zh"))
            state["z"], state["h"] = result.z, result.h
        return step, 1024
    if name == "vae_train":
        model = ConvVAE(32).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        x = torch.rand(100, 3, 64, 64).contiguous(memory_format=torch.channels_last)

        def step() -> None:
            reconstruction, mu, logvar = model(x)
            losses = vae_loss(reconstruction, x, mu, logvar, 0.5)
            optimizer.zero_grad()
            losses["total"].backward()
            optimizer.step()
        return step, 100
    raise ValueError(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")


def _measure_here(name: str, threads: int, seconds: float) -> float:
    """Items per second of ``name`` in this process, after two warm-up units."""
    import torch

    torch.set_num_threads(threads)
    step, items = _workload(name)
    step()
    step()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        done += 1
    return done * items / (time.perf_counter() - started)


def _measure(name: str, setting: dict, seconds: float) -> float:
    environment = {name: value for name, value in os.environ.items()
                   if name not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    environment |= WAIT_POLICIES[str(setting["wait_policy"])] | {"OMP_NUM_THREADS": str(setting["threads"])}
    output = subprocess.run([sys.executable, __file__, "--worker", name, "--threads", str(setting["threads"]),
                             "--seconds", str(seconds)], env=environment, check=True, capture_output=True,
                            text=True, cwd=ROOT).stdout
    return float(output.strip().splitlines()[-1])


def _competitors(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/threads.json")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(_measure_here(args.worker, args.threads, args.seconds))
        return

    import torch

    from worldmodels.core.runtime import cpu_description

    cores = os.cpu_count() or 1
    rows = []
    for setting in _settings(cores):
        for name in WORKLOADS:
            alone = _measure(name, setting, args.seconds)
            busy_processes = _competitors(max(cores - 1, 1))
            try:
                busy = _measure(name, setting, args.seconds)
            finally:
                for process in busy_processes:
                    process.kill()
                    process.wait()
            rows.append({**setting, "workload": name, "alone_per_s": alone, "busy_per_s": busy,
                         "slowdown_when_busy": alone / busy})
            print(f"threads {setting['threads']} wait {setting['wait_policy']:<7} {name:<13} alone {alone:10.0f}/s "
                  f"busy {busy:10.0f}/s  slowdown {alone / busy:5.2f}x", flush=True)
    best_alone = {name: max(r["alone_per_s"] for r in rows if r["workload"] == name) for name in WORKLOADS}
    for row in rows:
        # What a setting costs against the fastest setting on an idle machine, when the machine is busy.
        row["busy_vs_best_alone"] = best_alone[row["workload"]] / row["busy_per_s"]
    result = {"machine": platform.platform(), "cpu": cpu_description(), "cores": cores, "torch": torch.__version__,
              "seconds_per_measurement": args.seconds, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
