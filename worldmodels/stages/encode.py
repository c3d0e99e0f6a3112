"""Stage `encode`: every frame of ``rollouts.h5`` through V into ``latents.h5`` (mu and logvar).

Row k of episode e in the latents is frame k of episode e in the rollouts. The file records the
hash of the VAE checkpoint and the fingerprint of the rollouts it came from; when both still
match, re-running does nothing.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.artifacts import load_vae, vae_identity
from worldmodels.checkpoint import atomic_write, file_sha256
from worldmodels.config import PipelineConfig
from worldmodels.data.latents import latents_match, write_latents
from worldmodels.data.store import RolloutReader
from worldmodels.models.vae import frames_to_input
from worldmodels.paths import PipelinePaths
from worldmodels.runtime import resolve
from worldmodels.training import refuse_if_made_by_another_run

logger = logging.getLogger(__name__)


@torch.no_grad()
def encode_frames(model: torch.nn.Module, reader: RolloutReader, batch_size: int,
                  progress: bool = True, channels_last: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """(mu, logvar) of every committed frame, each ``(F, Z)`` float32, and frames/s; the frames go to the
    model's device in uint8 batches."""
    frames_total = reader.num_frames
    mu = np.empty((frames_total, model.z_size), np.float32)
    logvar = np.empty_like(mu)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    started = time.perf_counter()
    with tqdm(total=frames_total, unit="frame", desc="encode", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, frames_total, batch_size):
            stop = min(start + batch_size, frames_total)
            frames = torch.from_numpy(reader.read_frame_range(start, stop))
            x = frames_to_input(frames.to(device, non_blocking=device.type == "cuda"))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batch_mu, batch_logvar = model.encode(x)
            mu[start:stop] = batch_mu.cpu().numpy()
            logvar[start:stop] = batch_logvar.cpu().numpy()
            bar.update(stop - start)
    return mu, logvar, frames_total / max(time.perf_counter() - started, 1e-9)


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True, v_of_other_rollouts: bool = False) -> Path:
    """Write ``latents.h5`` for the current ``vae.pt`` and ``rollouts.h5``; returns its path.

    ``vae.pt`` must be this pipeline's V: trained with its settings on this ``rollouts.h5`` (or, with
    ``v_of_other_rollouts``, on any rollouts: the iterative procedure's rounds keep the first round's V)."""
    runtime = resolve(config.runtime).apply()
    reader = RolloutReader(paths.rollouts)
    if not paths.vae.is_file():
        raise FileNotFoundError(f"{paths.vae}: no VAE checkpoint; run `wm train-vae` first")
    model, checkpoint = load_vae(paths.vae, runtime.device)
    identity = vae_identity(config, reader)
    if v_of_other_rollouts:
        identity.pop("rollouts_fingerprint")
    refuse_if_made_by_another_run(checkpoint, paths.vae, identity, "wm train-vae")
    if latents_match(paths.latents, paths.vae, reader):
        logger.info(f"{paths.latents}: up to date with {paths.vae.name} and {paths.rollouts.name}")
        return paths.latents
    mu, logvar, rate = encode_frames(model, reader, config.vae.encode_batch_size, progress,
                                     config.vae.channels_last)
    vae_hash, fingerprint = file_sha256(paths.vae), reader.fingerprint
    atomic_write(paths.latents, lambda temporary: write_latents(temporary, reader.episodes, mu, logvar,
                                                                vae_hash, fingerprint))
    logger.info(f"encoded {len(mu)} frames at {rate:.0f} frames/s into {paths.latents}")
    return paths.latents
