"""The device check: CUDA tests, the smoke pipeline on CUDA, and CPU against GPU speeds; JSON.

    .venv/bin/python benchmarks/device_check.py [--out benchmarks/results/device.json]   (make device-check)

Made to finish within 8 minutes on one GPU machine. In order:

1. the tests parametrized over devices, their CUDA half (``pytest -k cuda``), which includes the
   smoke pipeline end to end through the CLI with ``--device cuda``;
2. on the CPU and on the GPU, in the same run: V's training img/s (batch 100, frames in memory),
   M's training timesteps/s (batch 16 x 125), dream steps/s with 1,024 rollouts in one batch, the
   seconds of one C generation at CarRacing sizes (z 32, LSTM 256, 3 actions, 64 candidates x 16
   dreams x ``--generation-steps`` steps), and Dreamer's seconds per update at batch 50 x 50,
   horizon 15, in the precision ``runtime.precision: auto`` picks on each device.

On a machine without CUDA it says so and measures the CPU only (exit status 0), so the script
itself can be checked anywhere.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.dreamer import _batch, seconds_per_update  # noqa: E402
from worldmodels.config import DreamerConfig, RuntimeConfig  # noqa: E402
from worldmodels.core.runtime import Runtime, resolve  # noqa: E402
from worldmodels.models.controller import LinearController  # noqa: E402
from worldmodels.models.mdnrnn import MDNRNN, mdn_loss  # noqa: E402
from worldmodels.models.vae import ConvVAE, frames_to_input, vae_loss  # noqa: E402
from worldmodels.vmc.dream import DreamEnv, population_returns  # noqa: E402


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(step: Callable[[], None], items: int, device: torch.device, seconds: float) -> float:
    """Items per second of ``step`` (two warm-up calls, then as many as fit in ``seconds``)."""
    step()
    step()
    _synchronize(device)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < 2:
        step()
        done += 1
    _synchronize(device)
    return done * items / (time.perf_counter() - started)


def vae_images_per_s(device: torch.device, seconds: float) -> float:
    torch.manual_seed(0)
    model = ConvVAE(32).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    frames = torch.randint(0, 255, (100, 64, 64, 3), dtype=torch.uint8).to(device)

    def step() -> None:
        x = frames_to_input(frames).contiguous(memory_format=torch.channels_last)
        reconstruction, mu, logvar = model(x)
        loss = vae_loss(reconstruction, x, mu, logvar, 0.5)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return _rate(step, 100, device, seconds)


def mdnrnn_timesteps_per_s(device: torch.device, seconds: float) -> float:
    torch.manual_seed(0)
    model = MDNRNN(32, 1, 256, 5).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    z, actions = torch.randn(16, 126, 32, device=device), torch.rand(16, 125, 1, device=device) * 2 - 1
    zeros, mask = torch.zeros(16, 125, device=device), torch.ones(16, 125, device=device)

    def step() -> None:
        losses = mdn_loss(model(z[:, :-1], actions)[0], z[:, 1:], zeros, zeros, mask)
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    return _rate(step, 16 * 125, device, seconds)


def _carracing_dream(device: torch.device, action_size: int) -> DreamEnv:
    torch.manual_seed(0)
    model = MDNRNN(32, action_size, 256, 5).to(device).eval()
    with torch.no_grad():  # an untrained done head would end dreams at random: keep them all running
        model.done_head.weight.zero_()
        model.done_head.bias.fill_(-20.0)
    return DreamEnv(model, torch.randn(100, 32), torch.full((100, 32), -2.0), max_steps=10**9)


def dream_steps_per_s(device: torch.device, seconds: float) -> float:
    dream = _carracing_dream(device, 1)
    rows = torch.randn(1024, LinearController(32, 256, 1).num_parameters) * 0.1
    dream.max_steps = 50  # the dreams never end by themselves (see _carracing_dream)
    population_returns(dream, rows[:64], 16, 1)  # warm-up of one short generation
    started = time.perf_counter()
    population_returns(dream, rows[:64], 16, 1)
    return 1024 * 50 / (time.perf_counter() - started)


def controller_generation_s(device: torch.device, steps: int) -> float:
    """Seconds of one generation in the dream at CarRacing sizes: 64 candidates x 16 dreams x ``steps``."""
    dream = _carracing_dream(device, 3)
    population = torch.randn(64, LinearController(32, 256, 3).num_parameters) * 0.1
    dream.max_steps = 5
    population_returns(dream, population, 16, 3)  # warm-up
    dream.max_steps = steps
    started = time.perf_counter()
    population_returns(dream, population, 16, 3)
    return time.perf_counter() - started


def dreamer_seconds_per_update(runtime: Runtime, updates: int) -> float:
    settings = DreamerConfig(batch_size=50, sequence_length=50, horizon=15)
    return seconds_per_update(settings, _batch(50, 50), updates, runtime)


def measure(runtime: Runtime, seconds: float, generation_steps: int, updates: int) -> dict[str, float | str]:
    device = runtime.device
    print(f"measuring on {runtime.describe()}", flush=True)
    result: dict[str, float | str] = {"device": runtime.device_name(), "dreamer_precision": runtime.precision}
    result["vae_train_img_per_s"] = vae_images_per_s(device, seconds)
    result["mdnrnn_train_timesteps_per_s"] = mdnrnn_timesteps_per_s(device, seconds)
    result["dream_steps_per_s_1024_rows"] = dream_steps_per_s(device, seconds)
    result[f"controller_generation_s_carracing_{generation_steps}_steps"] = controller_generation_s(
        device, generation_steps)
    result["dreamer_s_per_update_50x50_h15"] = dreamer_seconds_per_update(runtime, updates)
    print(json.dumps(result, indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/device.json")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds per throughput measurement")
    parser.add_argument("--generation-steps", type=int, default=1000, help="dream steps of the C generation")
    parser.add_argument("--updates", type=int, default=2, help="timed Dreamer updates per device")
    parser.add_argument("--skip-tests", action="store_true", help="only the speeds")
    args = parser.parse_args()
    has_cuda = torch.cuda.is_available()
    results: dict[str, object] = {"date": time.strftime("%Y-%m-%d %H:%M"), "platform": platform.platform(),
                                  "torch": torch.__version__, "cuda": has_cuda}
    if not args.skip_tests:
        started = time.perf_counter()
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
                                "tests/"], cwd=ROOT)
        results["cuda_tests"] = {"exit_status": tests.returncode, "seconds": time.perf_counter() - started}
    devices = [RuntimeConfig(device="cpu")] + ([RuntimeConfig(device="cuda")] if has_cuda else [])
    results["speeds"] = {resolve(settings).device.type: measure(resolve(settings).apply(), args.seconds,
                                                                args.generation_steps, args.updates)
                         for settings in devices}
    if has_cuda:
        cpu, gpu = results["speeds"]["cpu"], results["speeds"]["cuda"]
        results["gpu_over_cpu"] = {key: (gpu[key] / cpu[key] if "per_s" in key else cpu[key] / gpu[key])
                                   for key in cpu if isinstance(cpu[key], float)}
    else:
        print("no CUDA device here: measured the CPU only", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results.get("gpu_over_cpu", {}), indent=1))
    print(f"saved {args.out}")
    if results.get("cuda_tests", {}).get("exit_status", 0) not in (0, 5):  # 5: no test selected (no CUDA)
        sys.exit(1)


if __name__ == "__main__":
    main()
