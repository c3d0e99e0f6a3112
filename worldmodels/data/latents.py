"""``latents.h5``: V's encoding of every frame of a rollouts file, for M to train on.

Layout (schema version 1)::

    /mu        float32 (F, Z)   row k of episode e = frame k of episode e in rollouts.h5
    /logvar    float32 (F, Z)
    /episodes  the rollouts file's episode index, copied (same frame offsets)

    attributes: schema_version, kind = "latents", z_size, vae_sha256 (hash of the vae.pt that
    encoded it), rollouts_fingerprint (RolloutReader.fingerprint of its source)

A stage that reads latents names the VAE checkpoint and rollouts file it expects; a latents file
made from others is refused, so M never trains on latents of a stale V.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from worldmodels.core.checkpoint import file_sha256
from worldmodels.data.store import SCHEMA_VERSION, RolloutReader, StoreError, check_schema, open_h5

LATENTS_KIND = "latents"


def write_latents(path: Path, episodes: np.ndarray, mu: np.ndarray, logvar: np.ndarray,
                  vae_sha256: str, rollouts_fingerprint: str) -> None:
    """Write a complete latents file at ``path`` (callers write to a temporary path and rename)."""
    with h5py.File(path, "w") as handle:
        handle.create_dataset("mu", data=mu.astype(np.float32), chunks=(min(len(mu), 4096), mu.shape[1]))
        handle.create_dataset("logvar", data=logvar.astype(np.float32),
                              chunks=(min(len(mu), 4096), mu.shape[1]))
        handle.create_dataset("episodes", data=episodes)
        handle.attrs["schema_version"] = SCHEMA_VERSION
        handle.attrs["kind"] = LATENTS_KIND
        handle.attrs["z_size"] = mu.shape[1]
        handle.attrs["vae_sha256"] = vae_sha256
        handle.attrs["rollouts_fingerprint"] = rollouts_fingerprint


def latents_match(path: Path, vae_path: Path, rollouts: RolloutReader) -> bool:
    """True if ``path`` is a readable latents file made by ``vae_path`` from ``rollouts``."""
    try:
        LatentReader(path, vae_path, rollouts)
    except (StoreError, FileNotFoundError):
        return False
    return True


class LatentReader:
    """Reads a latents file after checking it was encoded by ``vae_path`` from ``rollouts``."""

    def __init__(self, path: Path, vae_path: Path | None = None, rollouts: RolloutReader | None = None) -> None:
        self.path = Path(path)
        handle = open_h5(self.path, "r")
        try:
            check_schema(handle, self.path, LATENTS_KIND, ("mu", "logvar", "episodes"))
            self.vae_sha256 = str(handle.attrs["vae_sha256"])
            self.rollouts_fingerprint = str(handle.attrs["rollouts_fingerprint"])
            self.z_size = int(handle.attrs["z_size"])
            self.episodes = handle["episodes"][:]
            self.mu = handle["mu"][:]
            self.logvar = handle["logvar"][:]
        finally:
            handle.close()
        if vae_path is not None:
            expected = file_sha256(vae_path)
            if expected != self.vae_sha256:
                raise StoreError(f"{self.path} is stale: it was encoded by a VAE checkpoint with sha256 "
                                 f"{self.vae_sha256[:12]}, but {vae_path} has sha256 {expected[:12]}. "
                                 "Run `wm encode` again.")
        if rollouts is not None and rollouts.fingerprint != self.rollouts_fingerprint:
            raise StoreError(f"{self.path} is stale: it was encoded from other rollouts than {rollouts.path} "
                             "holds now (episodes were added or the file was replaced). Run `wm encode` again.")

    def episode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, logvar)`` of every frame of episode ``index``, each ``(T + 1, Z)``."""
        row = self.episodes[index]
        start, stop = int(row["frame_offset"]), int(row["frame_offset"] + row["length"] + 1)
        return self.mu[start:stop], self.logvar[start:stop]
