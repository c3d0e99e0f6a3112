"""``latents.h5``: V's encoding of every frame of a rollouts file, for M to train on.

Layout (schema version 1)::

    /mu        float32 (F, Z)   row k of episode e = frame k of episode e in rollouts.h5
    /logvar    float32 (F, Z)
    /episodes  the rollouts file's episode index, copied (same frame offsets)

    attributes: schema_version, kind = "latents", z_size, vae_sha256 (hash of the vae.pt that
    encoded it), rollouts_fingerprint (RolloutReader.fingerprint of its source)

Every dataset has a checksum per chunk (``CHECKSUMS``, as in the rollouts file); one written before
checksums has none and reads as before.

A stage that reads latents names the VAE checkpoint and rollouts file it expects; a latents file
made from others is refused, so M never trains on latents of a stale V. The refusal says which
commands make it again: ``wm encode``, preceded by ``wm train-vae`` when ``vae.pt`` itself was not
made from this rollouts file (``wm encode`` refuses such a V).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worldmodels.core.checkpoint import file_sha256, load_checkpoint
from worldmodels.core.training import differing_fields
from worldmodels.data.store import (
    CHECKSUMS,
    SCHEMA_VERSION,
    RolloutReader,
    StoreError,
    check_schema,
    open_h5,
    read_rows,
)
from worldmodels.errors import UserError

LATENTS_KIND = "latents"


class StaleLatentsError(StoreError):
    """A latents file was not encoded by the VAE checkpoint or from the rollouts a stage names."""


def write_latents(path: Path, episodes: np.ndarray, mu: np.ndarray, logvar: np.ndarray,
                  vae_sha256: str, rollouts_fingerprint: str) -> None:
    """Write a complete latents file at ``path`` (callers write to a temporary path and rename)."""
    rows = (min(len(mu), 4096), mu.shape[1])
    with open_h5(path, "w") as handle:
        handle.create_dataset("mu", data=mu.astype(np.float32), chunks=rows, **CHECKSUMS)
        handle.create_dataset("logvar", data=logvar.astype(np.float32), chunks=rows, **CHECKSUMS)
        handle.create_dataset("episodes", data=episodes, chunks=(max(1, min(len(episodes), 1024)),), **CHECKSUMS)
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


def remake_advice(vae_path: Path, rollouts: RolloutReader | None, vae_identity: dict[str, Any] | None = None) -> str:
    """The commands that make the latents again, as a sentence: `wm encode` when ``vae_path`` is this
    pipeline's V, else `wm train-vae` first, since `wm encode` refuses any other V.

    This pipeline's V: one whose checkpoint holds ``vae_identity`` (the pipeline's ``artifacts.vae_identity``:
    its settings and the rollouts it was trained on) or, when that is not known, one made from ``rollouts``."""
    then = "`wm encode`, then this command again"
    try:
        checkpoint = load_checkpoint(vae_path, "vae")  # the kind `wm train-vae` saves
    except (OSError, UserError):  # no V, or an unreadable one: there is none to encode with
        return f"Run `wm train-vae`, then {then}."
    if vae_identity is not None:
        differing = differing_fields(checkpoint, vae_identity)
    else:  # without the pipeline's settings, only the chain of files can be followed
        made_from = checkpoint.get("rollouts_fingerprint")
        differing = [] if rollouts is None or made_from == rollouts.fingerprint else ["rollouts_fingerprint"]
    if differing:
        return (f"{vae_path} is not this pipeline's V either ({', '.join(differing)} differ), and `wm encode` "
                f"refuses it: run `wm train-vae`, then {then}.")
    return f"Run {then}."


class LatentReader:
    """Reads a latents file after checking it was encoded by ``vae_path`` from ``rollouts``.

    ``vae_identity``: what the pipeline expects of ``vae_path`` (``artifacts.vae_identity``), which makes the
    advice of a refusal exact (see :func:`remake_advice`). A damaged chunk raises
    :class:`~worldmodels.data.store.DamagedDataError` naming the file and the episodes whose latents it holds."""

    def __init__(self, path: Path, vae_path: Path | None = None, rollouts: RolloutReader | None = None,
                 vae_identity: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        handle = open_h5(self.path, "r")
        try:
            check_schema(handle, self.path, LATENTS_KIND, ("mu", "logvar", "episodes"))
            self.vae_sha256 = str(handle.attrs["vae_sha256"])
            self.rollouts_fingerprint = str(handle.attrs["rollouts_fingerprint"])
            self.z_size = int(handle.attrs["z_size"])
            self.episodes = read_rows(handle["episodes"], slice(None), None)
            self.mu = read_rows(handle["mu"], slice(None), self.episodes)
            self.logvar = read_rows(handle["logvar"], slice(None), self.episodes)
        finally:
            handle.close()
        stale = None
        if vae_path is not None:
            made_by = f"it was encoded by a VAE checkpoint with sha256 {self.vae_sha256[:12]}"
            if not Path(vae_path).is_file():
                stale = f"{made_by}, and there is no {vae_path}"
            elif (expected := file_sha256(vae_path)) != self.vae_sha256:
                stale = f"{made_by}, but {vae_path} has sha256 {expected[:12]}"
        if stale is None and rollouts is not None and rollouts.fingerprint != self.rollouts_fingerprint:
            stale = (f"it was encoded from other rollouts than {rollouts.path} holds now (episodes were added or "
                     "the file was replaced)")
        if stale is not None:
            advice = "Run `wm encode` again." if vae_path is None else remake_advice(vae_path, rollouts, vae_identity)
            raise StaleLatentsError(f"{self.path} is stale: {stale}. {advice}")

    def episode(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, logvar)`` of every frame of episode ``index``, each ``(T + 1, Z)``."""
        row = self.episodes[index]
        start, stop = int(row["frame_offset"]), int(row["frame_offset"] + row["length"] + 1)
        return self.mu[start:stop], self.logvar[start:stop]
