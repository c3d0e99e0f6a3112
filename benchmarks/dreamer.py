"""Seconds per Dreamer update at the paper's shapes, plain against optimised, in one run; JSON.

    .venv/bin/python benchmarks/dreamer.py [--device cpu] [--batch 50] [--length 50] [--updates 3] [--compile]
                                           [--profile] [--schedules cartpole_balance_dreamer,...]
                                           [--out benchmarks/results/dreamer.json]

With ``--schedules`` (default: the official schedule and the laptop one), each named pipeline's Dreamer
is timed in the same run at the precision ``runtime.precision: auto`` picks on this machine, with the
updates its schedule makes to its ``dreamer.env_steps`` (so the hours of updates a whole run costs).

One update = the world model's losses, backward and step on a batch of windows (batch x length
frames of 64x64), then actor and value in imagination (horizon 15) from every posterior state.
Variants, same model and batch:

- ``plain_fp32``: the RSSM's posterior computed one ``observe_step`` at a time (every layer
  inside the time loop), convolutions in the default memory format, the decoder's first
  transposed convolution as a convolution; fp32;
- ``fast_fp32``: the layers that do not need the recurrence (the embeddings' share of the
  posterior layer, the prior's layers) batched over all steps, convolutions channels-last, the
  decoder's first layer (on a 1x1 input) as the matrix product it is; fp32;
- ``fast_bf16``: the same under bfloat16 autocast (world model and imagination; the image
  loss, the optimizers and the parameters stay fp32).

Also the relative difference of each loss (world model, actor, value) between fp32 and bf16 on
the same batch and noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from worldmodels.config import DreamerConfig
from worldmodels.core.runtime import Runtime, cpu_description, cpu_has_native_bf16, resolve_threads
from worldmodels.dreamer.learner import Dreamer, update
from worldmodels.models.actor_critic import behaviour_losses
from worldmodels.models.rssm import world_model_losses


def _batch(size: int, length: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    # Smooth random images (a blurred noise field per frame), closer to rendered frames than white noise.
    coarse = torch.randint(0, 255, (size, length + 1, 8, 8, 3), generator=generator, dtype=torch.uint8)
    frames = coarse.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
    return {"frames": frames, "actions": torch.rand(size, length, 1, generator=generator) * 2 - 1,
            "rewards": torch.rand(size, length, generator=generator)}


def _stepwise(rssm):
    """Make ``rssm.observe`` the one-step-at-a-time reference."""
    def observe(embeds, previous_actions, state=None, sample=True, noise=None):
        noise = torch.randn(*embeds.shape[:2], rssm.stoch_size, device=embeds.device) if noise is None else noise
        return rssm.observe_stepwise(embeds, previous_actions, noise)
    rssm.observe = observe


def runtime_for(device: str, precision: str) -> Runtime:
    """A runtime on ``device`` with ``precision`` forced (the benchmark compares both on one machine)."""
    return Runtime(torch.device(device), precision, resolve_threads(0), why="benchmark")


def _warmed_up(settings: DreamerConfig, batch: dict[str, torch.Tensor], runtime: Runtime,
               plain: bool = False) -> tuple[Dreamer, dict[str, torch.Tensor]]:
    """A fresh Dreamer and the batch on the runtime's device, after one update (allocator and kernels)."""
    dreamer = Dreamer.build(1, settings, runtime.device).compile(runtime)
    batch = {name: value.to(runtime.device) for name, value in batch.items()}
    if plain:
        _stepwise(dreamer.world_model.rssm)
        dreamer.world_model.encoder.fast = dreamer.world_model.decoder.fast = False
    update(dreamer, batch, settings, runtime)
    return dreamer, batch


def seconds_per_update(settings: DreamerConfig, batch: dict[str, torch.Tensor], updates: int, runtime: Runtime,
                       plain: bool = False) -> float:
    """Mean wall-clock seconds of ``updates`` Dreamer updates on ``batch`` (after one warm-up)."""
    dreamer, batch = _warmed_up(settings, batch, runtime, plain)
    if runtime.is_cuda:
        torch.cuda.synchronize(runtime.device)
    started = time.perf_counter()
    for _ in range(updates):
        update(dreamer, batch, settings, runtime)  # returns floats: each update ends in a device sync
    return (time.perf_counter() - started) / updates


def schedule_seconds(pipelines: list[str], updates: int, device: str) -> dict[str, dict]:
    """Each pipeline's Dreamer (its model sizes and batch) timed on one synthetic batch at the precision
    ``auto`` resolves to here, with the updates its online schedule makes (prefill of 5,000 env steps)."""
    from worldmodels.config import RuntimeConfig, load_pipeline
    from worldmodels.core.runtime import resolve
    from worldmodels.dreamer.learner import updates_due

    timed = {}
    for name in pipelines:
        settings = load_pipeline(name).dreamer
        runtime = resolve(RuntimeConfig(device=device, precision="auto"))
        batch = _batch(settings.batch_size, settings.sequence_length)
        seconds = seconds_per_update(settings, batch, updates, runtime)
        total = updates_due(settings, settings.env_steps, 5000)
        timed[name] = {"batch": f"{settings.batch_size} x {settings.sequence_length}", "depth": settings.depth,
                       "head_hidden": settings.head_hidden, "precision": runtime.precision,
                       "seconds_per_update": seconds, "updates_to_env_steps": total,
                       "env_steps": settings.env_steps, "hours_of_updates": seconds * total / 3600}
        print(f"{name}: {seconds:.3f} s per update ({runtime.precision}), {total:,} updates to "
              f"{settings.env_steps:,} env steps: {seconds * total / 3600:.2f} h of updates", flush=True)
    return timed


@torch.no_grad()
def _loss_agreement(settings: DreamerConfig, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    dreamer = Dreamer.build(1, settings)
    results = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(1)
        with runtime_for("cpu", name).autocast():
            losses, posterior = world_model_losses(dreamer.world_model, batch["frames"], batch["actions"],
                                                   batch["rewards"], settings.free_nats)
            torch.manual_seed(2)
            behaviour = behaviour_losses(dreamer.world_model, dreamer.actor, dreamer.value, posterior,
                                         settings.horizon, settings.discount, settings.lambda_)
        results[name] = {k: float(v) for k, v in losses.items()} | {
            k: float(behaviour[k]) for k in ("actor", "value")}
    return {k: abs(results["bf16"][k] - results["fp32"][k]) / max(abs(results["fp32"][k]), 1e-9)
            for k in results["fp32"]}


def profile_update(settings: DreamerConfig, batch: dict[str, torch.Tensor], runtime: Runtime,
                   path: Path, updates: int = 2) -> dict[str, float]:
    """Where a fast update's time goes: ``torch.profiler`` over ``updates`` updates after a warm-up.

    Writes the 30 costliest operators (by self time on the device: CUDA kernels on a GPU, CPU time
    on the CPU) to ``path`` and returns per update: wall seconds, operator calls, and on CUDA the
    kernel launches and the GPU's busy seconds (launches x a few microseconds against busy time
    says whether the update is launch-bound)."""
    from torch.profiler import ProfilerActivity, profile

    dreamer, batch = _warmed_up(settings, batch, runtime)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if runtime.is_cuda else [])
    started = time.perf_counter()
    with profile(activities=activities) as profiler:
        for _ in range(updates):
            update(dreamer, batch, settings, runtime)
    wall = (time.perf_counter() - started) / updates
    events = profiler.key_averages()
    sort_by = "self_device_time_total" if runtime.is_cuda else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(events.table(sort_by=sort_by, row_limit=30))
    result = {"wall_s_per_update_profiled": wall,
              "operator_calls_per_update": sum(e.count for e in events if e.key.startswith("aten::")) / updates}
    if runtime.is_cuda:
        result["kernel_launches_per_update"] = sum(e.count for e in events if "LaunchKernel" in e.key) / updates
        result["gpu_busy_s_per_update"] = sum(getattr(e, "self_device_time_total", 0.0) for e in events) / updates / 1e6
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--updates", type=int, default=3, help="timed updates per variant (after one warm-up)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/dreamer.json"))
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (bf16 is timed where it is native)")
    parser.add_argument("--compile", action="store_true", help="also time fast fp32 with runtime.compile")
    parser.add_argument("--profile", action="store_true",
                        help="also profile fast fp32 (benchmarks/results/dreamer_profile_<device>.txt)")
    parser.add_argument("--schedules", default="cartpole_balance_dreamer,cartpole_balance_dreamer_laptop",
                        help="pipelines whose Dreamer schedules are timed against each other ('' for none)")
    parser.add_argument("--bf16-anyway", action="store_true",
                        help="time bf16 even on a CPU that emulates it (20-110x slower than fp32 there)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        bf16 = torch.cuda.get_device_capability(device)[0] >= 8 or args.bf16_anyway
    else:
        bf16 = args.bf16_anyway or cpu_has_native_bf16()
    torch.set_num_threads(os.cpu_count() or 1)
    settings = DreamerConfig(batch_size=args.batch, sequence_length=args.length)
    batch = _batch(args.batch, args.length)
    seconds = {
        "plain_fp32": seconds_per_update(settings, batch, args.updates, runtime_for(args.device, "fp32"), plain=True),
        "fast_fp32": seconds_per_update(settings, batch, args.updates, runtime_for(args.device, "fp32")),
    }
    if args.compile:
        compiled = Runtime(device, "fp32", resolve_threads(0), compile=True, why="benchmark")
        seconds["fast_fp32_compiled"] = seconds_per_update(settings, batch, args.updates, compiled)
    if bf16:
        seconds["fast_bf16"] = seconds_per_update(settings, batch, args.updates, runtime_for(args.device, "bf16"))
    schedules = schedule_seconds([name for name in args.schedules.split(",") if name], args.updates, args.device)
    profiled = None
    if args.profile:
        table = args.out.parent / f"dreamer_profile_{device.type}.txt"
        profiled = profile_update(settings, batch, runtime_for(args.device, "fp32"), table)
        print(table.read_text())
    results = {
        "machine": {"cpu": cpu_description(), "platform": platform.platform(), "torch": torch.__version__,
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"},
        "date": time.strftime("%Y-%m-%d %H:%M"), "batch": args.batch, "length": args.length,
        "horizon": settings.horizon, "seconds_per_update": seconds,
        "speedup_over_plain": {k: seconds["plain_fp32"] / v for k, v in seconds.items()},
        "bf16_relative_loss_difference": _loss_agreement(settings, batch) if bf16 and device.type == "cpu" else
        "not measured: this CPU has no native bf16 (runtime.precision auto runs fp32 here)",
        **({"profile_fast_fp32": profiled} if profiled else {}),
        **({"schedules": schedules} if schedules else {}),
    }
    print(json.dumps(results, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
