"""Throughput of M's training and of the batched dream; prints and saves JSON.

    .venv/bin/python benchmarks/mdnrnn.py [--out benchmarks/results/mdnrnn.json]

- training timesteps/s at batch 16, sequence 100 (z 32, LSTM 256, 5 mixtures, 1 action);
- dream steps/s for 1,024 rollouts as one batch (64 controllers x 16 rollouts, each row with its
  own linear controller a = tanh(W [z, h] + b)) against one rollout at a time, in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from worldmodels.models.mdnrnn import MDNRNN, mdn_loss
from worldmodels.vmc.dream import DreamEnv

Z, A, H = 32, 1, 256


def training_rate(batch: int = 16, length: int = 100, steps: int = 20) -> float:
    model = MDNRNN(Z, A, H, 5)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    z, actions = torch.randn(batch, length + 1, Z), torch.rand(batch, length, A) * 2 - 1
    rewards, dones, mask = torch.randn(batch, length), torch.zeros(batch, length), torch.ones(batch, length)
    for step in range(steps + 2):
        if step == 2:
            started = time.perf_counter()
        losses = mdn_loss(model(z[:, :-1], actions)[0], z[:, 1:], rewards, dones, mask)
        optimizer.zero_grad()
        losses["total"].backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
    return steps * batch * length / (time.perf_counter() - started)


@torch.no_grad()
def dream_rate(model: MDNRNN, rollouts: int, steps: int) -> float:
    """Dream steps/s (rollouts x steps) with a separate linear controller per rollout."""
    dream = DreamEnv(model, torch.randn(100, Z), torch.full((100, Z), -2.0), max_steps=10_000)
    weights, biases = torch.randn(rollouts, Z + H, A) * 0.1, torch.zeros(rollouts, A)
    z = dream.reset(rollouts)
    h = torch.zeros(rollouts, H)
    started = time.perf_counter()
    for _ in range(steps):
        actions = torch.tanh(torch.einsum("ni,nia->na", torch.cat([z, h], dim=1), weights) + biases)
        result = dream.step(actions)
        z, h = result.z, result.h
    return rollouts * steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/mdnrnn.json"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    results: dict[str, object] = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                              "torch": torch.__version__}, "date": time.strftime("%Y-%m-%d %H:%M")}
    results["train_timesteps_per_s_batch16_seq100"] = max(training_rate() for _ in range(2))
    print("training timesteps/s:", round(results["train_timesteps_per_s_batch16_seq100"]), flush=True)
    model = MDNRNN(Z, A, H, 5).eval()
    dream_rate(model, 1024, 5)  # warm-up
    batched = max(dream_rate(model, 1024, 100) for _ in range(2))
    single = max(dream_rate(model, 1, 500) for _ in range(2))
    results["dream_steps_per_s"] = {"1024 rollouts as one batch": batched, "one rollout at a time": single,
                                    "ratio": batched / single}
    print(json.dumps(results["dream_steps_per_s"], indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
