"""``wm info FILE``: what a rollouts or latents file holds, in words a person can check; ``--check`` reads
every chunk of it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from worldmodels.data.latents import LATENTS_KIND, LatentReader
from worldmodels.data.store import (
    DamagedDataError,
    RolloutReader,
    StoreError,
    checksum_words,
    damage_report,
    damaged_rows,
    open_h5,
)

LAYOUT = ("an episode of T steps stores T + 1 frames (reset frame, then one per action) and T "
          "actions / rewards / terminated / truncated; actions[t] is taken on frames[t]")


def describe_file(path: str | Path) -> str:
    """The summary of a rollouts or a latents file, whichever ``path`` is."""
    try:
        with open_h5(Path(path), "r") as handle:
            kind = handle.attrs.get("kind")
    except StoreError:
        kind = None  # let the rollouts reader explain what is wrong with the file
    try:
        return describe_latents(path) if kind == LATENTS_KIND else describe_rollouts(path)
    except DamagedDataError as error:  # a summary needs data that cannot be read; `--check` lists the damage
        return f"file            {path}\ndamaged         {error}"


def check_file(path: str | Path) -> list[str]:
    """Problems with a rollouts or latents file, one line each (empty: none found).

    Every chunk of every dataset is read, and a damaged one is named with its dataset, rows and episodes:
    with checksums any changed byte is found, without them only a chunk that no longer decompresses. In a
    rollouts file, episodes committed without their data are found too (``RolloutReader.verify``)."""
    path = Path(path)
    with open_h5(path, "r") as handle:
        kind = handle.attrs.get("kind")
        index_whole = "episodes" not in handle or not damaged_rows(handle["episodes"])
    if kind != LATENTS_KIND and index_whole:
        with RolloutReader(path) as reader:  # refuses a file that is not a rollouts file
            return reader.verify()
    with open_h5(path, "r") as handle:
        problems = damage_report(handle)
    if not problems:
        LatentReader(path)  # refuses a file that is not a whole latents file
    return problems


def describe_latents(path: str | Path) -> str:
    """A multi-line summary of a latents file."""
    latents = LatentReader(Path(path))
    with open_h5(latents.path, "r") as handle:
        checksums = checksum_words(handle)
    lengths = latents.episodes["length"]
    return "\n".join([
        f"file            {latents.path} ({Path(latents.path).stat().st_size / 2**20:.1f} MiB)",
        "schema version  1 (latents)",
        "layout          mu and logvar (float32) per frame; row k of episode e = frame k of episode e",
        f"latents         {len(latents.mu)} x {latents.z_size}",
        f"episodes        {len(lengths)} ({int(lengths.sum())} steps)",
        f"mu              mean |mu| {abs(latents.mu).mean():.3f}, mean sigma {np.exp(0.5 * latents.logvar).mean():.3f}",
        f"made by         vae.pt sha256 {latents.vae_sha256[:16]}..., rollouts fingerprint "
        f"{latents.rollouts_fingerprint[:16]}...",
        f"checksums       {checksums}",
    ])


def describe_rollouts(path: str | Path) -> str:
    """A multi-line summary of a rollouts file (raises StoreError if it cannot be read)."""
    with RolloutReader(path) as reader:
        lengths, returns = reader.lengths, reader.returns
        sources = Counter(reader.episodes["source"].astype(str))
        lines = [
            f"file            {reader.path} ({Path(reader.path).stat().st_size / 2**20:.1f} MiB)",
            f"schema version  {reader.schema_version} (rollouts)",
            f"layout          {LAYOUT}",
            f"env             {json.dumps(reader.env_config, sort_keys=True)}",
            f"env facts       {json.dumps(reader.env_info, sort_keys=True)}",
            f"frames          {reader.num_frames} x {'x'.join(map(str, reader.frame_shape))} uint8",
            f"actions         {reader.num_steps} x {reader.action_size} float32 in [-1, 1]",
            f"action repeat   {reader.action_repeat}",
            f"episodes        {reader.num_episodes}"
            + (f" ({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))})" if sources else ""),
            f"checksums       {checksum_words(reader.handle)}",
        ]
        if reader.num_episodes:
            lines += [
                f"steps           {reader.num_steps} agent steps "
                f"({reader.num_steps * reader.action_repeat} env steps); per episode "
                f"min {lengths.min()} / mean {lengths.mean():.1f} / max {lengths.max()}",
                f"returns         mean {returns.mean():.2f} +- {returns.std():.2f} "
                f"(min {returns.min():.2f}, median {np.median(returns):.2f}, max {returns.max():.2f})",
            ]
        return "\n".join(lines)
