"""Throughput and memory of V's training and encoding; prints and saves JSON.

    .venv/bin/python benchmarks/vae.py [--steps N] [--out benchmarks/results/vae.json]

Measures, in one run:
- training img/s at batch 100 with frames streamed from HDF5 (the stage's batches) against the
  same training on frames already in memory, as a ratio;
- training img/s with and without channels-last memory format;
- encoding frames/s (batch 1000);
- peak resident memory of training on a small and on a 20x larger rollouts file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from worldmodels.data.batches import ShuffledFrameBatches
from worldmodels.data.store import Episode, RolloutReader, RolloutWriter
from worldmodels.models.vae import ConvVAE, frames_to_input, vae_loss
from worldmodels.stages.encode import encode_frames

BATCH = 100


def _train(batches, steps: int, channels_last: bool = True) -> float:
    """img/s of ``steps`` training steps (after 2 warm-up steps) on uint8 batches from ``batches``."""
    torch.manual_seed(0)
    model = ConvVAE(32)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    started, images = None, 0
    for step, frames in enumerate(batches):
        if step == 2:
            started, images = time.perf_counter(), 0
        x = frames_to_input(frames)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        reconstruction, mu, logvar = model(x)
        loss = vae_loss(reconstruction, x, mu, logvar, 0.5)["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        images += len(frames)
        if step == steps + 1:
            break
    return images / (time.perf_counter() - started)


def streamed(reader: RolloutReader, seed: int = 0):
    batches = ShuffledFrameBatches(reader, reader.frame_rows(), BATCH, seed)
    epoch = 0
    while True:
        yield from batches.epoch(epoch)
        epoch += 1


def in_memory(frames: torch.Tensor, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield frames[torch.randint(len(frames), (BATCH,), generator=generator)]


def write_rollouts(path: Path, episodes: int, steps: int = 125) -> None:
    """Random-pixel episodes (incompressible, like the worst case for memory)."""
    rng = np.random.default_rng(0)
    with RolloutWriter(path, {"id": "gym:Benchmark-v0"}, {}, (64, 64, 3), 1) as writer:
        for index in range(episodes):
            frames = rng.integers(0, 256, (steps + 1, 64, 64, 3), dtype=np.uint8)
            writer.append(Episode(frames, np.zeros((steps, 1), np.float32), np.zeros(steps, np.float32),
                                  np.zeros(steps, bool), np.zeros(steps, bool), seed=index, index=index))


def peak_rss_of_training(path: Path, steps: int) -> float:
    """Peak RSS (MiB) of a fresh process that trains ``steps`` streamed steps on ``path``."""
    code = ("import resource, sys; from benchmarks.vae import _train, streamed; "
            "from worldmodels.data.store import RolloutReader; "
            f"_train(streamed(RolloutReader(sys.argv[1])), {steps}); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    output = subprocess.run([sys.executable, "-c", code, str(path)], check=True, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1]).stdout
    return int(output.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per measurement")
    parser.add_argument("--rollouts", type=Path, default=Path("data/cartpole_balance/rollouts.h5"),
                        help="real frames to train and encode on (made with `make collect` if missing)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/vae.json"))
    args = parser.parse_args()
    if not args.rollouts.is_file():
        subprocess.run([sys.executable, "-m", "worldmodels.cli", "collect", "--no-progress"], check=True)
    torch.set_num_threads(os.cpu_count() or 1)
    reader = RolloutReader(args.rollouts)
    results: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__},
        "date": time.strftime("%Y-%m-%d %H:%M"), "rollouts": str(args.rollouts), "batch": BATCH,
    }
    sample = torch.from_numpy(reader.read_frame_range(0, min(reader.num_frames, 5000)))
    print("training: in memory vs streamed from HDF5 ...", flush=True)
    _train(in_memory(sample), 3)  # warm-up: thread pools and allocator
    # Alternate the variants and keep each one's best, so that a slow moment of a shared
    # machine does not decide the ratio.
    memory_rate = stream_rate = plain_rate = 0.0
    for _ in range(2):
        memory_rate = max(memory_rate, _train(in_memory(sample), args.steps))
        stream_rate = max(stream_rate, _train(streamed(reader), args.steps))
        plain_rate = max(plain_rate, _train(in_memory(sample), args.steps, channels_last=False))
    results["train_img_per_s"] = {"in_memory": memory_rate, "streamed_hdf5": stream_rate,
                                  "streamed_over_in_memory": stream_rate / memory_rate,
                                  "in_memory_contiguous_format": plain_rate}
    print(json.dumps(results["train_img_per_s"], indent=1), flush=True)
    print("encoding ...", flush=True)
    _, _, encode_rate = encode_frames(ConvVAE(32).eval(), reader, 1000, progress=False)
    results["encode_frames_per_s"] = encode_rate
    print(encode_rate, flush=True)
    print("peak memory against file size ...", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        small, large = Path(scratch) / "small.h5", Path(scratch) / "large.h5"
        write_rollouts(small, 10)
        write_rollouts(large, 200)
        results["peak_rss_mib"] = {
            f"{small.stat().st_size / 2**20:.0f} MiB file": peak_rss_of_training(small, args.steps),
            f"{large.stat().st_size / 2**20:.0f} MiB file": peak_rss_of_training(large, args.steps),
        }
    print(json.dumps(results["peak_rss_mib"], indent=1), flush=True)
    results["this_process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
