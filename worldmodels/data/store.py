"""The HDF5 rollout store that V-M-C and Dreamer both read.

Layout of ``rollouts.h5`` (schema version 1). An episode of ``T`` agent steps holds ``T + 1``
frames (the reset frame, then the frame after each action) and ``T`` actions, rewards and flags:
``actions[t]`` is taken on ``frames[t]`` and yields ``rewards[t]`` and ``frames[t + 1]``::

    /frames      uint8   (F, H, W, 3)   F = sum over episodes of (T + 1)
    /actions     float32 (S, A)         S = sum over episodes of T, in [-1, 1]
    /rewards     float32 (S,)
    /terminated  uint8   (S,)           1: the env ended the episode (a real terminal state)
    /truncated   uint8   (S,)           1: the episode was cut by a time limit
                                        (uint8, not HDF5's bool enum, which reads ~10x slower)
    /episodes    compound (E,)          one row per COMMITTED episode:
        step_offset, frame_offset (int64), length (int32, T), seed (uint64: env seed),
        policy_seed (uint64), index (int64: i in the (base_seed, i) seeding), base_seed (int64),
        source (S32: who collected it, e.g. "collect:held_random"; an episode a V + M + C played in
        an iterative round starts with ``PLAYED_SOURCE_PREFIX``), return (float32)

    attributes: schema_version, kind = "rollouts", env_config (JSON of the pipeline's env
    section), env_info (JSON: backend facts such as action bounds), frame_shape, action_size,
    action_repeat, worldmodels_version

Checksums: every dataset is chunked with HDF5's fletcher32 filter (after the compression filter, if
any), so a chunk whose bytes changed on disk fails to read instead of giving wrong frames; readers
turn that failure into a :class:`StoreError` naming the file and the damaged episodes, and
``wm info --check`` reads every chunk. Files written before checksums have none and read as before;
HDF5 cannot add a filter to an existing dataset, so episodes appended to such a file have none either.

Crash safety: the ``/episodes`` row is written only after the episode's data are written and
flushed, and then flushed itself, so an episode is visible exactly when it is complete. Data past
the last committed episode (a writer killed mid-episode) are ignored by readers and cut off by
the next writer. Frames are chunked 16 at a time along time, so random frames (V) and random
windows (M, Dreamer) both read only what they need; nothing loads the whole file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from worldmodels.errors import UserError

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
ROLLOUTS_KIND = "rollouts"
FRAME_CHUNK = 16
SOURCE_BYTES = 32
PLAYED_SOURCE_PREFIX = "iteration"
"""The source of every episode a V + M + C played in an iterative round (``wm iterate``)."""
STEP_CHUNK = 4096
CHECKSUMS = {"fletcher32": True}
"""The filter every dataset of a rollouts or latents file is created with: a checksum per chunk."""
# Readers keep recently used frame chunks in memory: windows overlap chunks, so a cache of a
# few hundred chunks turns most repeat reads into memory copies.
READ_CACHE_BYTES = 64 * 1024 * 1024

EPISODE_DTYPE = np.dtype([
    ("step_offset", np.int64),
    ("frame_offset", np.int64),
    ("length", np.int32),
    ("seed", np.uint64),
    ("policy_seed", np.uint64),
    ("index", np.int64),
    ("base_seed", np.int64),
    ("source", f"S{SOURCE_BYTES}"),
    ("return", np.float32),
])


class StoreError(UserError, RuntimeError):
    """A rollouts file cannot be used; the message names the file and what is wrong."""


class DamagedDataError(StoreError):
    """Data read from a file are damaged (a chunk fails its checksum); the message names the file and episodes."""


@dataclass
class Episode:
    """One episode in memory. ``T`` = ``len(actions)``.

    frames: uint8 ``(T + 1, H, W, 3)``; actions: float32 ``(T, A)``; rewards, terminated,
    truncated: ``(T,)``; seed / policy_seed: what the env and the policy were seeded with;
    index / base_seed: the episode was seeded from ``(base_seed, index)``; source: who made it.
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    seed: int = 0
    policy_seed: int = 0
    index: int = 0
    base_seed: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        steps = len(self.actions)
        if len(self.frames) != steps + 1:
            raise ValueError(f"an episode of {steps} steps needs {steps + 1} frames, got {len(self.frames)}")
        for name in ("rewards", "terminated", "truncated"):
            if len(getattr(self, name)) != steps:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {steps} steps")

    @property
    def length(self) -> int:
        return len(self.actions)

    @property
    def total_return(self) -> float:
        return float(np.sum(self.rewards, dtype=np.float64))


def open_h5(path: Path, mode: str) -> h5py.File:
    """``path`` opened by h5py in ``mode``; a failure raises :class:`StoreError` saying why (:func:`open_failure`)."""
    # A writer caches no chunk: each is written when its data are, so that a failed write (a full disk)
    # raises there, instead of leaving dirty chunks that HDF5 fails to write again when the file closes.
    cache = {"rdcc_nbytes": READ_CACHE_BYTES, "rdcc_nslots": 10007} if mode == "r" else {"rdcc_nbytes": 0}
    try:
        return h5py.File(path, mode, **cache)
    except OSError as error:
        raise StoreError(open_failure(Path(path), mode, error)) from None


def open_failure(path: Path, mode: str, error: OSError) -> str:
    """Why h5py could not open ``path`` in ``mode`` (its ``error``): one line naming the file, the cause first."""
    text, writing = str(error), mode != "r"
    if isinstance(error, FileNotFoundError):
        return f"{path}: no such file" if not writing or path.parent.is_dir() else f"{path.parent}: no such folder"
    if isinstance(error, IsADirectoryError):
        return f"{path}: a folder, not a file"
    if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
        # HDF5 locks the file: a writer against everyone, a reader against writers.
        holder = "has it open" if writing else "is writing it"
        return (f"{path}: locked: another process {holder} (HDF5 locks a file while it is written); "
                "wait for that command to finish, or stop it")
    if "unable to lock file" in text:
        return (f"{path}: cannot be locked ({system_reason(error)}); on a file system without locks, "
                "set HDF5_USE_FILE_LOCKING=FALSE")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        if writing:
            return (f"{path}: cannot be opened for writing ({system_reason(error)}: a read-only file or folder, "
                    "or a read-only file system); make it writable or use another --data-dir")
        return f"{path}: cannot be read ({system_reason(error)})"
    truncated = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        return (f"{path}: truncated file: {truncated.group(1)} of the {truncated.group(2)} bytes it was written "
                "with (a copy cut short, or a disk that filled)")
    if "signature not found" in text:
        empty = path.is_file() and path.stat().st_size == 0
        return f"{path}: not an HDF5 file ({'empty' if empty else 'no HDF5 signature'})"
    if "already open for read-only" in text:
        return f"{path}: open for reading in this process; close its reader before writing it"
    return f"{path}: cannot open as HDF5 ({system_reason(error)})"


def stored_source(source: str) -> str:
    """``source`` as an episode row holds it: its first ``SOURCE_BYTES`` bytes (UTF-8)."""
    return source.encode()[:SOURCE_BYTES].decode(errors="ignore")


STEP_DATASETS = ("actions", "rewards", "terminated", "truncated")
ROLLOUT_DATASETS = ("frames", *STEP_DATASETS, "episodes")


def check_schema(handle: h5py.File, path: Path, kind: str, datasets: tuple[str, ...] = ROLLOUT_DATASETS) -> None:
    attrs = handle.attrs
    if "schema_version" not in attrs or attrs.get("kind") != kind:
        found = attrs.get("kind", "no 'kind' attribute")
        raise StoreError(f"{path}: not a worldmodels {kind} file (kind: {found})")
    version = int(attrs["schema_version"])
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {version}; this worldmodels reads version "
                         f"{SCHEMA_VERSION}. Re-create the file with this version's `wm collect`.")
    for name in datasets:
        if name not in handle:
            raise StoreError(f"{path}: dataset /{name} is missing (a damaged or foreign file)")


def system_reason(error: BaseException) -> str:
    """The system's reason in an HDF5 write error (``No space left on device``), else its first line."""
    text = str(error)
    found = re.search(r"error message = '([^']*)'", text)
    if found:
        return found.group(1)
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return text.splitlines()[0] if text else type(error).__name__


def episodes_with_rows(index: np.ndarray | None, name: str, start: int, stop: int) -> np.ndarray:
    """Numbers of the episodes (rows of the episode ``index``) with data in rows ``[start, stop)`` of dataset
    ``name``: /episodes itself (its rows are the episodes: ``index`` may be None), a step dataset (actions,
    rewards, ...), or one with a row per frame (/frames, a latents file's /mu and /logvar); ``(n,)`` int64."""
    if name == "episodes":
        return np.arange(start, stop, dtype=np.int64)
    steps = name in STEP_DATASETS
    first = index["step_offset" if steps else "frame_offset"].astype(np.int64)
    end = first + index["length"] + (0 if steps else 1)
    return np.flatnonzero((first < stop) & (end > start))


def episode_words(numbers: np.ndarray) -> str:
    """``"episode 4"``, ``"episodes 4..7"`` (numbers are consecutive), or ``"no committed episode"``."""
    if len(numbers) == 0:
        return "no committed episode"
    return f"episode {numbers[0]}" if len(numbers) == 1 else f"episodes {numbers[0]}..{numbers[-1]}"


def _whose(index: np.ndarray | None, name: str, start: int, stop: int) -> str:
    """The episodes with data in rows ``[start, stop)`` of /``name``, in words."""
    if index is None and name != "episodes":
        return "episodes unknown: the episode index is damaged too"
    return episode_words(episodes_with_rows(index, name, start, stop))


def _damage(dataset: h5py.Dataset, error: OSError) -> str:
    """What a failed read of ``dataset``'s chunk means, as words that follow "rows a..b"."""
    if dataset.fletcher32 and re.search("filter|fletcher32|checksum", str(error)):
        return "fail their checksum"  # the checksum is the first filter a chunk passes on reading
    return f"cannot be read ({system_reason(error)})"


def damaged_rows(dataset: h5py.Dataset, start: int = 0, stop: int | None = None) -> list[tuple[int, int, str]]:
    """The damaged chunks of ``dataset`` that hold rows of ``[start, stop)`` (default: every row), as
    ``[(first row, end row, what is wrong), ...]``; neighbouring damaged chunks make one entry.

    Each chunk is read on its own (a dataset with no chunks is read whole). A chunk never written is
    not damage: it reads as zeros (see :func:`first_unwritten_episode`)."""
    length = dataset.shape[0]
    stop = length if stop is None else min(stop, length)
    size = dataset.chunks[0] if dataset.chunks else max(length, 1)
    found: list[tuple[int, int, str]] = []
    for first in range(start - start % size, stop, size):
        end = min(first + size, length)
        try:
            dataset[first:end]
        except OSError as error:
            reason = _damage(dataset, error)
            if found and found[-1][1] == first and found[-1][2] == reason:
                found[-1] = (found[-1][0], end, reason)
            else:
                found.append((first, end, reason))
    return found


def read_rows(dataset: h5py.Dataset, rows: int | slice, index: np.ndarray | None) -> np.ndarray:
    """``dataset[rows]``; a damaged chunk raises :class:`DamagedDataError` naming the file, the dataset and the
    episodes whose data it holds (``index``: the file's episode index; None when ``dataset`` is that index)."""
    try:
        return dataset[rows]
    except OSError as error:
        as_slice = slice(rows, rows + 1) if isinstance(rows, (int, np.integer)) else rows
        start, stop, _ = as_slice.indices(dataset.shape[0])
        raise DamagedDataError(_damage_message(dataset, start, stop, index, error)) from None


def _damage_message(dataset: h5py.Dataset, start: int, stop: int, index: np.ndarray | None, error: OSError) -> str:
    path, name = dataset.file.filename, dataset.name.lstrip("/")
    damaged = damaged_rows(dataset, start, stop)
    if not damaged:  # the read failed, but no chunk does on its own: not a damaged chunk
        return f"{path}: /{name} rows {start}..{stop - 1} cannot be read ({system_reason(error)})"
    first, end, reason = damaged[0]
    return (f"{path}: damaged data in {_whose(index, name, first, end)}: /{name} rows {first}..{end - 1} {reason}; "
            f"`wm info --check {path}` lists every damaged chunk")


def damage_report(handle: h5py.File) -> list[str]:
    """One line per damaged stretch of every dataset of ``handle`` (a rollouts or latents file), naming the
    file, the dataset, its rows and the episodes whose data they hold; empty when every chunk reads.
    Reads every chunk that holds data of a committed episode (in a rollouts file, the uncommitted tail a
    stopped writer leaves is not read)."""
    path = handle.filename
    index_damage = damaged_rows(handle["episodes"]) if "episodes" in handle else []
    index = handle["episodes"][:] if "episodes" in handle and not index_damage else None
    # Rows past the last committed episode are what a stopped writer left: nothing reads them, and the next
    # writer cuts them off, so damage there (a chunk torn by the stop) is no problem of the file.
    ends = committed_ends(index) if index is not None and "frames" in handle else {}
    damaged = {name: index_damage if name == "episodes" else damaged_rows(item, 0, ends.get(name))
               for name, item in handle.items() if isinstance(item, h5py.Dataset)}
    lines = []
    for name, stretches in damaged.items():
        lines += [f"{path}: /{name} rows {first}..{end - 1} {reason} ({_whose(index, name, first, end)})"
                  for first, end, reason in stretches]
    return lines


def checksum_words(handle: h5py.File) -> str:
    """Which datasets of ``handle`` have checksums, for ``wm info``."""
    names = [name for name, item in handle.items() if isinstance(item, h5py.Dataset)]
    checked = [name for name in names if handle[name].fletcher32]
    if checked == names:
        return "fletcher32 on every chunk (`wm info --check` reads them all)"
    if not checked:
        return "none (written before checksums; a damaged chunk cannot be detected)"
    return (f"fletcher32 on /{', /'.join(checked)} only (a damaged chunk of /"
            f"{', /'.join(n for n in names if n not in checked)} cannot be detected)")


def _allocated_chunks(dataset: h5py.Dataset) -> np.ndarray:
    """Sorted first rows of the chunks of ``dataset`` that exist in the file, ``(n,)`` int64."""
    starts: list[int] = []
    dataset.id.chunk_iter(lambda info: starts.append(info.chunk_offset[0]))
    return np.sort(np.asarray(starts, np.int64))


def _first_missing_row(dataset: h5py.Dataset, end: int) -> int | None:
    """The first row below ``end`` that lies in a chunk never written to the file (None: all written)."""
    if end == 0:
        return None
    chunk = dataset.chunks[0]
    needed = np.arange(0, end, chunk, dtype=np.int64)
    written = _allocated_chunks(dataset)
    missing = needed[~np.isin(needed, written)]
    return int(missing[0]) if len(missing) else None


def committed_ends(episodes: np.ndarray) -> dict[str, int]:
    """Rows of each data set that the committed ``episodes`` (index rows) cover: ``{"frames": F, "actions": S,
    ...}``; 0 for every one when there is no episode."""
    if len(episodes) == 0:
        return {name: 0 for name in ("frames", *STEP_DATASETS)}
    last = episodes[-1]
    steps = int(last["step_offset"] + last["length"])
    return {"frames": int(last["frame_offset"] + last["length"] + 1)} | {name: steps for name in STEP_DATASETS}


def first_unwritten_episode(handle: h5py.File) -> int | None:
    """The first committed episode part of whose data is in no chunk of the file (None: every one is whole).

    A chunk that was never written reads as zeros (black frames), so such an episode looks whole to a
    reader. Listing the chunks that exist costs ~0.1 s per 20,000 (a 300,000-frame file)."""
    episodes = read_rows(handle["episodes"], slice(None), None)
    if len(episodes) == 0:
        return None
    frame_ends = episodes["frame_offset"] + episodes["length"] + 1
    step_ends = episodes["step_offset"] + episodes["length"]
    first = None
    for name, end in committed_ends(episodes).items():
        row = _first_missing_row(handle[name], end)
        if row is not None:
            ends = frame_ends if name == "frames" else step_ends
            episode = int(np.searchsorted(ends, row, side="right"))
            first = episode if first is None else min(first, episode)
    return first


def env_differences(stored: dict[str, Any], env_config: dict[str, Any]) -> str:
    """The env settings a file was played with against a config's, where they differ ("" if nowhere):
    ``"env.action_repeat: file has 2, config has 8; ..."``."""
    # Compared as stored: JSON has no tuples, so a config's crop (0, 84) is the file's [0, 84].
    stored, env_config = json.loads(json.dumps(stored)), json.loads(json.dumps(env_config))
    differing = sorted(key for key in set(stored) | set(env_config) if stored.get(key) != env_config.get(key))
    return "; ".join(f"env.{key}: file has {stored.get(key)!r}, config has {env_config.get(key)!r}"
                     for key in differing)


class RolloutWriter:
    """Appends complete episodes to a rollouts file, creating it if needed.

    ``env_config`` (the pipeline's env section) must match the file's when appending, so that
    one file never mixes environments. On open, data left past the last committed episode by a
    killed writer are cut off. A new file gets checksums (``CHECKSUMS``); a file written before them
    keeps none (HDF5 cannot add a filter to an existing dataset).
    """

    def __init__(self, path: str | Path, env_config: dict[str, Any], env_info: dict[str, Any],
                 frame_shape: tuple[int, int, int], action_size: int, compression: str = "none") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        exists = self.path.exists()
        self._file = open_h5(self.path, "a")
        self._datasets: dict[str, h5py.Dataset] = {}
        self._broken: str | None = None
        try:
            if exists and len(self._file.keys()) > 0:
                check_schema(self._file, self.path, ROLLOUTS_KIND)
                self._check_same_env(env_config, frame_shape, action_size)
                if not self._file["frames"].fletcher32:
                    logger.info(f"{self.path} was written before checksums: the episodes appended to it have none "
                                "either (a new file has them)")
                self._drop_unwritten()
                self._cut_uncommitted()
            else:
                self._create(env_config, env_info, frame_shape, action_size, compression)
            # Held open for the writer's life. A dataset object that goes out of scope is closed by h5py
            # in a destructor, where a failed write of its cached chunks (a full disk) can only be printed,
            # never raised: the episode would then be committed with frames that never reached the disk.
            self._datasets = {name: self._file[name] for name in ROLLOUT_DATASETS}
        except BaseException:
            self._file.close()
            raise

    def _create(self, env_config: dict[str, Any], env_info: dict[str, Any],
                frame_shape: tuple[int, int, int], action_size: int, compression: str) -> None:
        from worldmodels import __version__

        handle = self._file
        # h5py puts fletcher32 after the compression filter: the checksum covers the bytes on disk.
        filters = CHECKSUMS | ({} if compression == "none" else {"compression": compression})
        handle.create_dataset("frames", (0, *frame_shape), np.uint8, maxshape=(None, *frame_shape),
                              chunks=(FRAME_CHUNK, *frame_shape), **filters)
        handle.create_dataset("actions", (0, action_size), np.float32, maxshape=(None, action_size),
                              chunks=(STEP_CHUNK, action_size), **CHECKSUMS)
        for name, dtype in (("rewards", np.float32), ("terminated", np.uint8), ("truncated", np.uint8)):
            handle.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(STEP_CHUNK,), **CHECKSUMS)
        handle.create_dataset("episodes", (0,), EPISODE_DTYPE, maxshape=(None,), chunks=(1024,), **CHECKSUMS)
        attrs = handle.attrs
        attrs["schema_version"] = SCHEMA_VERSION
        attrs["kind"] = ROLLOUTS_KIND
        attrs["env_config"] = json.dumps(env_config, sort_keys=True)
        attrs["env_info"] = json.dumps(env_info, sort_keys=True)
        attrs["frame_shape"] = np.asarray(frame_shape, dtype=np.int64)
        attrs["action_size"] = action_size
        attrs["action_repeat"] = int(env_config.get("action_repeat", 1))
        attrs["worldmodels_version"] = __version__
        handle.flush()

    def _check_same_env(self, env_config: dict[str, Any], frame_shape: tuple[int, int, int],
                        action_size: int) -> None:
        detail = env_differences(json.loads(self._file.attrs["env_config"]), env_config)
        if detail:
            raise StoreError(f"{self.path} was collected with other env settings ({detail}). "
                             "Use another --data-dir, or delete the file to start over.")
        if tuple(self._file["frames"].shape[1:]) != tuple(frame_shape) or \
                int(self._file.attrs["action_size"]) != action_size:
            raise StoreError(f"{self.path}: frame shape or action size differs from the env's")

    def _drop_unwritten(self) -> None:
        """Un-commit the episodes from the first one whose data never reached the disk (a file written by a
        version that committed episodes after a failed write); the collect stage plays them again."""
        first = first_unwritten_episode(self._file)
        if first is None:
            return
        episodes = self._file["episodes"]
        logger.warning(f"{self.path}: episodes {first}..{len(episodes) - 1} were committed but part of their data "
                       "never reached the disk (a full disk?); they are dropped and will be collected again")
        episodes.resize(first, axis=0)
        self._file.flush()

    def _cut_uncommitted(self) -> None:
        ends = committed_ends(self.episode_rows())
        cut = [name for name, end in ends.items() if self._file[name].shape[0] != end]
        for name in cut:
            self._file[name].resize(ends[name], axis=0)
        if cut:  # nothing written when there is nothing to cut: a complete file keeps its time stamp
            self._file.flush()

    @property
    def num_episodes(self) -> int:
        return len(self._file["episodes"])

    def episode_rows(self) -> np.ndarray:
        """The committed episodes' index rows (structured array of ``EPISODE_DTYPE``)."""
        return read_rows(self._file["episodes"], slice(None), None)

    def append(self, episode: Episode) -> None:
        """Write ``episode`` and commit it; it is visible to readers only once this returns.

        A write that fails (a full disk, an I/O error) raises :class:`StoreError` naming the file and the
        system's reason; the episode is not committed, and the writer refuses any further episode (the
        file is consistent up to the last committed one, which a later writer continues from)."""
        if self._broken is not None:
            raise StoreError(f"{self.path}: not written to after an earlier failure ({self._broken})")
        data = self._datasets
        if episode.actions.shape[1:] != data["actions"].shape[1:] or \
                episode.frames.shape[1:] != data["frames"].shape[1:]:
            raise StoreError(f"{self.path}: episode shapes {episode.frames.shape[1:]}, "
                             f"{episode.actions.shape[1:]} do not match the file's")
        try:
            self._write(episode)
        except (OSError, RuntimeError) as error:
            self._broken = system_reason(error)
            raise StoreError(f"{self.path}: cannot write episode {episode.index} ({self._broken}); nothing of it "
                             "was committed: make room and run the command again to complete the file") from None

    def _write(self, episode: Episode) -> None:
        handle, data = self._file, self._datasets
        frame_offset = data["frames"].shape[0]
        step_offset = data["actions"].shape[0]
        steps = episode.length
        self._extend("frames", episode.frames, frame_offset)
        self._extend("actions", episode.actions.astype(np.float32), step_offset)
        self._extend("rewards", episode.rewards.astype(np.float32), step_offset)
        self._extend("terminated", episode.terminated.astype(np.uint8), step_offset)
        self._extend("truncated", episode.truncated.astype(np.uint8), step_offset)
        handle.flush()
        row = np.zeros((), EPISODE_DTYPE)
        row["step_offset"], row["frame_offset"], row["length"] = step_offset, frame_offset, steps
        row["seed"], row["policy_seed"] = episode.seed, episode.policy_seed
        row["index"], row["base_seed"] = episode.index, episode.base_seed
        row["source"] = stored_source(episode.source).encode()
        row["return"] = episode.total_return
        episodes = data["episodes"]
        count = len(episodes)
        episodes.resize(count + 1, axis=0)
        episodes[count] = row
        handle.flush()

    def _extend(self, name: str, values: np.ndarray, offset: int) -> None:
        dataset = self._datasets[name]
        dataset.resize(offset + len(values), axis=0)
        dataset[offset:] = values

    def close(self) -> None:
        """Close the file; a failed final write raises :class:`StoreError` (unless one was raised already)."""
        datasets, self._datasets = self._datasets, {}
        if not self._file.id.valid:
            return
        failure = None
        for dataset in [*datasets.values(), self._file]:
            try:  # each closed here, where a failed write raises, not in a destructor
                dataset.id.close() if isinstance(dataset, h5py.Dataset) else dataset.close()
            except (OSError, RuntimeError) as error:
                failure = failure or system_reason(error)
        if failure is not None and self._broken is None:
            self._broken = failure
            raise StoreError(f"{self.path}: cannot close ({failure})")

    def __enter__(self) -> RolloutWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RolloutReader:
    """Reads committed episodes, frames and windows from a rollouts file without loading it.

    Safe to hand to DataLoader worker processes: each process opens its own HDF5 handle on
    first use, since h5py handles must not cross a fork.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._pid = -1
        handle = self._file
        check_schema(handle, self.path, ROLLOUTS_KIND)
        self.episodes = read_rows(handle["episodes"], slice(None), None)
        self._check_consistent(handle)
        self.env_config: dict[str, Any] = json.loads(handle.attrs["env_config"])
        self.env_info: dict[str, Any] = json.loads(handle.attrs["env_info"])
        self.frame_shape = tuple(int(v) for v in handle.attrs["frame_shape"])
        self.action_size = int(handle.attrs["action_size"])
        self.action_repeat = int(handle.attrs["action_repeat"])
        self.schema_version = int(handle.attrs["schema_version"])

    def _check_consistent(self, handle: h5py.File) -> None:
        if any(handle[name].shape[0] < end for name, end in committed_ends(self.episodes).items()):
            raise StoreError(f"{self.path}: the episode index points past the stored data (a damaged file)")

    @property
    def _file(self) -> h5py.File:
        if self._handle is None or self._pid != os.getpid():
            self._handle = open_h5(self.path, "r")
            self._datasets = {}
            self._pid = os.getpid()
        return self._handle

    def _read(self, name: str, rows: int | slice) -> np.ndarray:
        """Rows of /``name``; a damaged chunk raises :class:`DamagedDataError` naming the file and its episodes."""
        return read_rows(self._dataset(name), rows, self.episodes)

    def _dataset(self, name: str) -> h5py.Dataset:
        # Looking a dataset up by name costs as much as reading a small window: keep the objects.
        handle = self._file
        if name not in self._datasets:
            self._datasets[name] = handle[name]
        return self._datasets[name]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handle"], state["_datasets"], state["_pid"] = None, {}, -1
        return state

    @property
    def handle(self) -> h5py.File:
        """The open HDF5 file (this process's)."""
        return self._file

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def fingerprint(self) -> str:
        """Identifies the file's content: committed episodes are never rewritten, so the hash of
        the env settings and the episode index (offsets, lengths, seeds, returns) stands for the
        data without reading gigabytes of frames."""
        digest = hashlib.sha256(json.dumps(self.env_config, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(self.episodes).tobytes())
        return digest.hexdigest()

    @property
    def lengths(self) -> np.ndarray:
        """Agent steps per episode, ``(E,)`` int."""
        return self.episodes["length"].astype(np.int64)

    @property
    def returns(self) -> np.ndarray:
        return self.episodes["return"].astype(np.float64)

    @property
    def num_steps(self) -> int:
        return int(self.lengths.sum())

    @property
    def num_frames(self) -> int:
        return self.num_steps + self.num_episodes

    def frames(self, episode: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frames ``[start, stop)`` of ``episode``: uint8 ``(n, H, W, 3)``."""
        row = self.episodes[episode]
        stop = int(row["length"]) + 1 if stop is None else stop
        offset = int(row["frame_offset"])
        return self._read("frames", slice(offset + start, offset + stop))

    def frame_at(self, flat_index: int) -> np.ndarray:
        """One frame by its row in /frames: uint8 ``(H, W, 3)``."""
        return self._read("frames", flat_index)

    def read_frame_rows(self, rows: np.ndarray) -> np.ndarray:
        """Frames at the given rows of /frames, in the given order: uint8 ``(len(rows), H, W, 3)``."""
        out = np.empty((len(rows), *self.frame_shape), np.uint8)
        for position, row in enumerate(rows):
            out[position] = self._read("frames", int(row))
        return out

    def read_frame_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of /frames: uint8 ``(stop - start, H, W, 3)``."""
        return self._read("frames", slice(start, stop))

    def frame_rows(self, episodes: np.ndarray | None = None) -> np.ndarray:
        """Row numbers in /frames of every frame of ``episodes`` (default: all), ``(N,)`` int64."""
        rows = self.episodes if episodes is None else self.episodes[episodes]
        return np.concatenate([np.arange(r["frame_offset"], r["frame_offset"] + r["length"] + 1)
                               for r in rows]) if len(rows) else np.zeros(0, np.int64)

    def window(self, episode: int, start: int, steps: int) -> dict[str, np.ndarray]:
        """``steps`` consecutive steps of ``episode`` from ``start``, never past its end.

        Returns frames ``(steps + 1, H, W, 3)`` uint8, actions ``(steps, A)`` float32, rewards,
        terminated, truncated ``(steps,)``.
        """
        row = self.episodes[episode]
        length = int(row["length"])
        if start < 0 or start + steps > length:
            raise IndexError(f"window [{start}, {start + steps}) is outside episode {episode} of {length} steps")
        frame0 = int(row["frame_offset"]) + start
        step0 = int(row["step_offset"]) + start
        steps_slice = slice(step0, step0 + steps)
        return {
            "frames": self._read("frames", slice(frame0, frame0 + steps + 1)),
            "actions": self._read("actions", steps_slice),
            "rewards": self._read("rewards", steps_slice),
            "terminated": self._read("terminated", steps_slice).astype(bool),
            "truncated": self._read("truncated", steps_slice).astype(bool),
        }

    def step_data(self, episode: int) -> dict[str, np.ndarray]:
        """Actions ``(T, A)``, rewards, terminated and truncated ``(T,)`` of an episode, without frames."""
        row = self.episodes[episode]
        steps = slice(int(row["step_offset"]), int(row["step_offset"] + row["length"]))
        return {
            "actions": self._read("actions", steps),
            "rewards": self._read("rewards", steps),
            "terminated": self._read("terminated", steps).astype(bool),
            "truncated": self._read("truncated", steps).astype(bool),
        }

    def verify(self) -> list[str]:
        """Problems with the file, one line each (empty: every committed episode is whole and every chunk reads).

        Checks that every chunk under a committed episode exists in the file (one that does not reads as
        zeros: black frames), and reads every chunk of every dataset (:func:`damage_report`): with
        checksums, a chunk whose bytes changed on disk fails its checksum."""
        problems = []
        first = first_unwritten_episode(self.handle)
        if first is not None:
            problems.append(f"{self.path}: episodes {first}..{self.num_episodes - 1} were committed but part of "
                            "their data never reached the disk (a full disk?); `wm collect` drops and collects "
                            "them again")
        return problems + damage_report(self.handle)

    def episode(self, index: int) -> Episode:
        """A whole episode in memory."""
        row = self.episodes[index]
        data = self.window(index, 0, int(row["length"]))
        return Episode(**data, seed=int(row["seed"]), policy_seed=int(row["policy_seed"]),
                       index=int(row["index"]), base_seed=int(row["base_seed"]),
                       source=row["source"].decode())

    def close(self) -> None:
        if self._handle is not None and self._handle.id.valid:
            self._handle.close()
        self._handle, self._datasets = None, {}

    def __enter__(self) -> RolloutReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
