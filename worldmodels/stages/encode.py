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
from worldmodels.config import PipelineConfig
from worldmodels.core.checkpoint import atomic_write, file_sha256
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import resolve
from worldmodels.core.training import refuse_if_made_by_another_run
from worldmodels.data.latents import LatentReader, latents_match, write_latents
from worldmodels.data.store import RolloutReader, StoreError
from worldmodels.models.vae import frames_to_input

logger = logging.getLogger(__name__)


@torch.no_grad()
def encode_frames(model: torch.nn.Module, reader: RolloutReader, batch_size: int,
                  progress: bool = True, channels_last: bool = True,
                  first_frame: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """(mu, logvar) of every committed frame from row ``first_frame`` on, each ``(F - first_frame, Z)``
    float32, and frames/s; the frames go to the model's device in uint8 batches."""
    frames_total = reader.num_frames - first_frame
    mu = np.empty((frames_total, model.z_size), np.float32)
    logvar = np.empty_like(mu)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device
    started = time.perf_counter()
    with tqdm(total=frames_total, unit="frame", desc="encode", disable=not progress, dynamic_ncols=True) as bar:
        for start in range(0, frames_total, batch_size):
            stop = min(start + batch_size, frames_total)
            frames = torch.from_numpy(reader.read_frame_range(first_frame + start, first_frame + stop))
            x = frames_to_input(frames.to(device, non_blocking=device.type == "cuda"))
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            batch_mu, batch_logvar = model.encode(x)
            mu[start:stop] = batch_mu.cpu().numpy()
            logvar[start:stop] = batch_logvar.cpu().numpy()
            bar.update(stop - start)
    return mu, logvar, frames_total / max(time.perf_counter() - started, 1e-9)


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True, v_of_other_rollouts: bool = False,
        reuse: Path | None = None) -> Path:
    """Write ``latents.h5`` for the current ``vae.pt`` and ``rollouts.h5``; returns its path.

    ``vae.pt`` must be this pipeline's V: trained with its settings on this ``rollouts.h5`` (or, with
    ``v_of_other_rollouts``, on any rollouts: the iterative procedure's rounds keep the first round's V).
    ``reuse``: a latents file of the same V whose episodes are the first ones of ``rollouts.h5`` (the
    previous round's): its rows are kept and only the frames after them are encoded."""
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
    kept_mu, kept_logvar = _reusable_rows(reuse, paths.vae, reader)
    mu, logvar, rate = encode_frames(model, reader, config.vae.encode_batch_size, progress,
                                     config.vae.channels_last, first_frame=len(kept_mu))
    if len(kept_mu):
        logger.info(f"kept {len(kept_mu)} frames' latents of {reuse}")
        mu, logvar = np.concatenate([kept_mu, mu]), np.concatenate([kept_logvar, logvar])
    vae_hash, fingerprint = file_sha256(paths.vae), reader.fingerprint
    atomic_write(paths.latents, lambda temporary: write_latents(temporary, reader.episodes, mu, logvar,
                                                                vae_hash, fingerprint))
    logger.info(f"encoded {len(mu)} frames at {rate:.0f} frames/s into {paths.latents}")
    return paths.latents


def _reusable_rows(reuse: Path | None, vae_path: Path, reader: RolloutReader) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) ``(F0, Z)`` of ``reuse`` when it was encoded by ``vae_path`` from episodes that are
    the first ones of ``reader`` (same index rows, so the same frame rows); empty arrays otherwise."""
    empty = np.zeros((0, 1), np.float32)
    if reuse is None or not reuse.is_file():
        return empty, empty
    try:
        latents = LatentReader(reuse, vae_path)
    except StoreError as error:
        logger.info(f"not reusing {reuse}: {error}")
        return empty, empty
    count = len(latents.episodes)
    if count > len(reader.episodes) or not np.array_equal(latents.episodes, reader.episodes[:count]):
        logger.info(f"not reusing {reuse}: its episodes are not the first ones of {reader.path}")
        return empty, empty
    return latents.mu, latents.logvar
