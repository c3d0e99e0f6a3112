"""Stage `train-vae`: the ConvVAE on frames streamed from ``rollouts.h5``.

Per epoch: train on shuffled batches of the training episodes' frames, score the held-out
episodes (the split every model shares), log both to ``metrics/vae.jsonl``, save the resume
state to ``checkpoints/vae_last.pt`` and, when the held-out loss improves, the model to
``vae.pt``. Re-running the command continues after the last finished epoch.

The held-out score includes the *foreground ratio*: the squared error summed over foreground
pixels (those that differ from the median training frame by more than a threshold), divided by
the same sum when the median frame itself is the reconstruction. A V that draws only the
background scores ~0.9 even when its per-pixel MSE looks as good as a working one's.

It also counts the *z dimensions in use*: those whose mu varies across the held-out frames more
than V's own posterior noise on them (signal-to-noise above ``ACTIVE_SNR``). The KL term pushes
every dimension towards the prior; the ones it wins are noise in a z drawn from the posterior,
which M must then learn and dream as noise. The mean signal-to-noise of the dimensions in use says
how finely z places what V sees.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.artifacts import VAE_KIND, vae_identity
from worldmodels.config import PipelineConfig, VAEConfig
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import Runtime, resolve
from worldmodels.core.training import TrainingRun
from worldmodels.data.batches import ShuffledFrameBatches
from worldmodels.data.frames import evenly_spaced, median_frame
from worldmodels.data.split import split_episodes
from worldmodels.data.store import RolloutReader
from worldmodels.errors import UserValueError
from worldmodels.models.vae import FRAME_SIZE, ConvVAE, foreground_mask, frames_to_input, vae_loss
from worldmodels.reporting.figures import reconstruction_grid

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = VAE_KIND
COLLAPSE_RATIO = 0.8  # a foreground ratio above this after a few epochs: V draws only the background
ACTIVE_SNR = 1.0  # a z dimension is in use when mu's spread across frames exceeds the posterior's sigma
EVAL_BATCH = 500
FIGURE_FRAMES = 8


def split_frame_rows(reader: RolloutReader, config: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, held-out rows) of /frames, split by episode as every stage splits them."""
    train_episodes, heldout_episodes = split_episodes(reader.episodes["seed"], config.data.heldout_fraction)
    if len(heldout_episodes) == 0:
        raise UserValueError(f"data.heldout_fraction={config.data.heldout_fraction} leaves no held-out episode "
                         f"among the {reader.num_episodes} of {reader.path}; V needs at least one")
    return reader.frame_rows(train_episodes), reader.frame_rows(heldout_episodes)


def pixel_weights(x: torch.Tensor, background: torch.Tensor, config: VAEConfig) -> torch.Tensor | None:
    """``1 + foreground_weight`` on foreground pixels, 1 elsewhere: ``(B, 1, H, W)``; None for the paper's loss."""
    if config.foreground_weight == 0:
        return None
    mask = foreground_mask(x, background, config.foreground_threshold)
    return 1.0 + config.foreground_weight * mask.to(x.dtype)


@torch.no_grad()
def evaluate(model: ConvVAE, reader: RolloutReader, rows: np.ndarray, background: torch.Tensor,
             config: VAEConfig) -> dict[str, float]:
    """Held-out losses (reconstructing from z = mu), per-pixel MSE, foreground ratio and the z
    dimensions in use (see `latent_signal_to_noise`).

    ``background`` ``(3, H, W)`` on the model's device; frames are moved to it in batches."""
    model.eval()
    totals = {"recon": 0.0, "kl": 0.0, "kl_loss": 0.0, "squared": 0.0, "fg_model": 0.0, "fg_median": 0.0}
    mus, sigmas = [], []
    for start in range(0, len(rows), EVAL_BATCH):
        frames = torch.from_numpy(reader.read_frame_rows(np.sort(rows[start:start + EVAL_BATCH])))
        x = _memory_format(frames_to_input(frames.to(background.device)), config)
        mu, logvar = model.encode(x)
        mus.append(mu.float().cpu())
        sigmas.append(torch.exp(0.5 * logvar.float()).cpu())
        reconstruction = model.decode(mu)
        losses = vae_loss(reconstruction, x, mu, logvar, config.kl_tolerance, pixel_weights(x, background, config))
        count = len(x)
        for key in ("recon", "kl", "kl_loss"):
            totals[key] += float(losses[key]) * count
        squared = (reconstruction - x).pow(2)
        totals["squared"] += float(squared.sum())
        mask = foreground_mask(x, background, config.foreground_threshold)
        totals["fg_model"] += float((squared * mask).sum())
        totals["fg_median"] += float(((background - x).pow(2) * mask).sum())
    frames = len(rows)
    model.train()
    snr = latent_signal_to_noise(torch.cat(mus), torch.cat(sigmas))
    in_use = snr > ACTIVE_SNR
    return {
        "heldout/loss/recon": totals["recon"] / frames,
        "heldout/loss/kl": totals["kl"] / frames,
        "heldout/loss/total": (totals["recon"] + totals["kl_loss"]) / frames,
        "heldout/mse": totals["squared"] / (frames * 3 * FRAME_SIZE * FRAME_SIZE),
        "heldout/foreground_ratio": totals["fg_model"] / max(totals["fg_median"], 1e-12),
        "heldout/z_dims_in_use": int(in_use.sum()),
        "heldout/z_snr_in_use": float(snr[in_use].mean()) if bool(in_use.any()) else 0.0,
    }


def latent_signal_to_noise(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per z dimension, ``(Z,)``: the standard deviation of mu across frames over the mean posterior
    sigma. ``mu``, ``sigma``: ``(N, Z)``. Below ~1 a dimension drawn from the posterior is mostly noise."""
    return mu.std(dim=0, unbiased=False) / sigma.mean(dim=0).clamp_min(1e-12)


def _memory_format(x: torch.Tensor, config: VAEConfig) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x


def _warn_if_collapsed(metrics: dict[str, Any], epoch: int) -> None:
    ratio = metrics["heldout/foreground_ratio"]
    if epoch >= 2 and ratio > COLLAPSE_RATIO:
        logger.warning(f"after {epoch} epochs V still draws only the background: held-out foreground "
                       f"ratio {ratio:.2f} (1.0 = no better than the median frame). Small objects (a 1-px pole) "
                       "are invisible to per-pixel MSE; raise vae.foreground_weight (e.g. --set "
                       "vae.foreground_weight=19).")


def _frames_with_objects(reader: RolloutReader, rows: np.ndarray, background: torch.Tensor,
                         config: VAEConfig, count: int) -> np.ndarray:
    """``count`` evenly spaced rows among those whose frame shows foreground (>= 10 pixels);
    all rows if too few do (on cartpole the random policy often drives the cart out of view).
    ``background`` on the CPU."""
    candidates = np.sort(evenly_spaced(rows, 50 * count))
    x = frames_to_input(torch.from_numpy(reader.read_frame_rows(candidates)))
    visible = foreground_mask(x, background, config.foreground_threshold).flatten(1).sum(dim=1) >= 10
    chosen = candidates[visible.numpy()] if int(visible.sum()) >= count else candidates
    return evenly_spaced(chosen, count)


def _reconstruction_figure(model: ConvVAE, reader: RolloutReader, rows: np.ndarray,
                           metrics: dict[str, Any], epoch: int, path: Path, runtime: Runtime) -> None:
    frames = reader.read_frame_rows(rows)
    with torch.no_grad():
        mu, _ = model.encode(frames_to_input(runtime.to_device(torch.from_numpy(frames))))
        reconstructed = model.decode(mu).cpu()
    reconstructed = (reconstructed.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    title = (f"held-out frames with objects in view (top) and V's reconstructions from z = mu (bottom), "
             f"epoch {epoch}\nall held-out frames: per-pixel MSE {metrics['heldout/mse']:.5f}, "
             f"foreground ratio {metrics['heldout/foreground_ratio']:.2f} (1.0 = background only)")
    reconstruction_grid(frames, reconstructed, title, path)


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Train (or continue training) V; returns the path of ``vae.pt``."""
    settings = config.vae
    runtime = resolve(config.runtime).apply()
    reader = RolloutReader(paths.rollouts)
    if reader.frame_shape != (FRAME_SIZE, FRAME_SIZE, 3):
        raise UserValueError(f"env.frame_size: the ConvVAE takes 64x64 frames; {reader.path} holds "
                         f"{'x'.join(map(str, reader.frame_shape))}")
    paths.ensure()
    train_rows, heldout_rows = split_frame_rows(reader, config)
    eval_rows = evenly_spaced(heldout_rows, settings.eval_frames)
    identity = vae_identity(config, reader)
    run = TrainingRun(CHECKPOINT_KIND, identity, paths.last_checkpoint(CHECKPOINT_KIND), paths.vae,
                      MetricsLog(paths.metrics(CHECKPOINT_KIND)), runtime, "V")

    torch.manual_seed(settings.seed)  # the initial weights; a resumed run overwrites them and the RNG
    model = ConvVAE(settings.z_size).to(runtime.device)
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    runtime.compile_modules(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    state = run.resume()
    if state is None:
        background = median_frame(reader, train_rows, settings.median_frames)
        start_epoch, best = 0, float("inf")
        # The untrained V's held-out loss: what a diverging run is measured against before its first best.
        untrained = evaluate(model, reader, eval_rows, runtime.to_device(background), settings)["heldout/loss/total"]
    else:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        background, start_epoch, best = state["background"], state["epoch"], state["best_heldout"]
        untrained = state.get("untrained_heldout", float("inf"))
        if start_epoch >= settings.epochs:
            run.require_best()
            logger.info(f"{paths.vae}: already trained for {start_epoch} epochs (asked for {settings.epochs})")
            return paths.vae
    batches = ShuffledFrameBatches(reader, train_rows, settings.batch_size, settings.seed)
    figure_rows = _frames_with_objects(reader, heldout_rows, background, settings, FIGURE_FRAMES)
    common = {"model_args": {"z_size": settings.z_size}, "background": background}
    device_background = runtime.to_device(background)

    for epoch in range(start_epoch + 1, settings.epochs + 1):
        train_metrics, seconds = _train_epoch(model, optimizer, batches, epoch, device_background, settings,
                                              runtime, progress, run)
        metrics = {"epoch": epoch, **train_metrics,
                   **evaluate(model, reader, eval_rows, device_background, settings),
                   "img_per_s": len(train_rows) / seconds, "epoch_seconds": seconds}
        run.check(epoch, metrics, [model], "heldout/loss/total", min(best, untrained))
        improved = metrics["heldout/loss/total"] < best
        best = min(best, metrics["heldout/loss/total"])
        if improved:
            run.save_best({**common, "model": model.state_dict(), "epoch": epoch, "metrics": metrics})
            _reconstruction_figure(model, reader, figure_rows, metrics, epoch, paths.figure("vae_reconstruction"),
                                   runtime)
        run.save_last({**common, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                       "best_heldout": best, "untrained_heldout": untrained, "metrics": metrics}, record=metrics)
        logger.info(f"epoch {epoch}/{settings.epochs}: held-out MSE {metrics['heldout/mse']:.5f}, foreground ratio "
                    f"{metrics['heldout/foreground_ratio']:.3f}, KL {metrics['heldout/loss/kl']:.1f}, "
                    f"z dimensions in use {metrics['heldout/z_dims_in_use']}/{settings.z_size} (signal/noise "
                    f"{metrics['heldout/z_snr_in_use']:.1f}), {metrics['img_per_s']:.0f} img/s"
                    f"{' (best, saved vae.pt)' if improved else ''}")
        _warn_if_collapsed(metrics, epoch)
    return paths.vae


def _train_epoch(model: ConvVAE, optimizer: torch.optim.Optimizer, batches: ShuffledFrameBatches, epoch: int,
                 background: torch.Tensor, settings: VAEConfig, runtime: Runtime,
                 progress: bool, run: TrainingRun) -> tuple[dict[str, float], float]:
    """One pass over the training frames; returns (mean losses, seconds). ``background`` on the model's device;
    the uint8 frames move there before they become floats (4x fewer bytes to copy). A non-finite loss stops
    the run at once (``run.check``), not at the end of the epoch."""
    model.train()
    sums = {"recon": 0.0, "kl": 0.0, "total": 0.0}
    frames_seen = 0
    started = time.perf_counter()
    with tqdm(total=len(batches.rows), unit="img", desc=f"V epoch {epoch}", disable=not progress,
              dynamic_ncols=True, leave=False) as bar:
        for batch_number, frames in enumerate(batches.epoch(epoch), 1):
            x = _memory_format(frames_to_input(runtime.to_device(frames)), settings)
            reconstruction, mu, logvar = model(x)
            losses = vae_loss(reconstruction, x, mu, logvar, settings.kl_tolerance,
                              pixel_weights(x, background, settings))
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            count = len(frames)
            frames_seen += count
            values = {key: float(losses[key].detach()) for key in sums}  # one device sync per batch
            run.check(epoch, {f"train/loss/{key}": value for key, value in values.items()}, batch=batch_number)
            for key in sums:
                sums[key] += values[key] * count
            bar.update(count)
            bar.set_postfix(recon=f"{values['recon']:.1f}", kl=f"{values['kl']:.1f}")
    seconds = time.perf_counter() - started
    return {f"train/loss/{key}": value / frames_seen for key, value in sums.items()}, seconds
