"""One writer per stage, and a true record of what ran: the lock, ``runs.jsonl`` and ``config.yaml``.

- **The lock.** A stage holds an exclusive ``fcntl`` lock on ``<run>/locks/<group>.lock`` while it runs,
  so a second instance of it on the same run is refused at once, with the holder's pid, command and
  start time. The kernel drops the lock when its process ends, however it ends: a lock file left by a
  killed process does not block. Stages that write the same artifacts share a group (``train-vae`` and
  ``encode``; ``train-controller`` and ``iterate``); different groups may run side by side
  (``make -j2`` runs Dreamer beside V-M-C).
- **runs.jsonl.** Append-only: a ``start`` line for each command (its argv, resolved settings, git
  commit) and an ``end`` line with the same ``run`` id (exit status, seconds). A command killed with
  ``kill -9`` leaves a start line without an end.
- **config.yaml.** Each section is written by the stage that ran with it (``SECTION_OWNERS``), so the
  file says what made each artifact: after ``wm collect --set collect.episodes=60``, a plain
  ``wm train-vae`` does not turn ``collect.episodes`` back into the pipeline file's value.
  ``made_by`` names the command and time that wrote each section.

Writes to the files every stage shares (``config.yaml``, ``runs.jsonl``, ``stage_times.json``) are made
under a short-held lock of their own, so stages running side by side do not lose each other's updates.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from worldmodels.core import stopping
from worldmodels.core.checkpoint import atomic_write
from worldmodels.core.metrics import json_line
from worldmodels.core.paths import PipelinePaths
from worldmodels.errors import UserError

logger = logging.getLogger(__name__)

UNLOCKABLE = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS})
"""What ``flock`` says on a file system that cannot lock (some network and FUSE mounts)."""

LOCKS_DIR = "locks"
RUNS_LOG = "runs.jsonl"

LOCK_GROUPS = {"encode": "train-vae", "iterate": "train-controller"}
"""Commands that write another command's artifacts share its lock (the rest: a lock of their own)."""

SECTION_OWNERS: dict[str, tuple[str, ...]] = {
    "collect": ("env", "collect"),
    "train-vae": ("data", "vae"),
    "encode": ("vae",),
    "train-mdnrnn": ("data", "mdnrnn"),
    "train-controller": ("controller",),
    "iterate": ("iterate",),
    "evaluate": ("evaluate",),
    "oracle": ("oracle",),
    "readout": ("readout",),
    "dreamer": ("data", "dreamer"),
    "report": ("report",),
}
"""The ``config.yaml`` sections each command writes: those its artifacts are made with (``data``, the
held-out split, by each stage that trains on it: the last one's is the file's). Every command also writes
``runtime`` (and what it resolved to, also kept per section in ``made_by``); one not listed
(``state-model``) makes no artifact that another stage reads, and writes nothing else."""


class RunLocked(UserError):
    """Another process runs this stage on this run; the message names it."""


def _iso_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def stage_lock(paths: PipelinePaths, command: str) -> Iterator[None]:
    """Hold ``command``'s lock on the run at ``paths`` (see the module's docstring); raise :class:`RunLocked`
    naming the holder when another process holds it."""
    group = LOCK_GROUPS.get(command, command)
    path = paths.root / LOCKS_DIR / f"{group}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 - held open for as long as the lock
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(f"{paths.root} is in use: {_holder(path)} runs `{group}` on it. Wait for it to "
                            f"finish, or stop it (kill <pid>); the lock is {path}") from None
        except OSError as error:
            if error.errno not in UNLOCKABLE:
                raise
            # Some network and FUSE file systems cannot lock: run, but say that nothing keeps a second one off.
            logger.warning(f"{path}: this file system cannot lock files ({error.strerror}); nothing stops a "
                           f"second `{group}` on {paths.root} while this one runs")
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": " ".join(sys.argv), "since": _iso_now()}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file drops the lock


def _holder(path: Path) -> str:
    """Who holds the lock at ``path``, as its file says (written just after the lock is taken)."""
    try:
        holder = json.loads(path.read_text())
        return f"process {holder['pid']} (`{holder['command']}`, since {holder['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (starting)"


@contextlib.contextmanager
def _shared_files_lock(paths: PipelinePaths) -> Iterator[None]:
    """A blocking lock, held for a moment, around a read-modify-write of a file every stage shares."""
    path = paths.root / LOCKS_DIR / "shared-files.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as error:
            if error.errno not in UNLOCKABLE:
                raise
        yield


def update_shared_file(paths: PipelinePaths, path: Path, update: Any) -> None:
    """Under the shared-files lock: ``update(path)``, which reads ``path`` and writes it again atomically."""
    with _shared_files_lock(paths):
        update(path)


def record_sections(paths: PipelinePaths, command: str, settings: dict[str, Any]) -> None:
    """Write ``command``'s sections of ``settings`` (and ``runtime``, ``resolved_runtime``) into ``config.yaml``,
    keeping the sections that other commands wrote; ``made_by`` says which command wrote each, when."""
    owned = ("runtime", *SECTION_OWNERS.get(command, ()))

    def update(path: Path) -> None:
        record = _read_record(path)
        made_by = dict(record.pop("made_by", None) or {})
        if "name" in settings:
            record["name"] = settings["name"]
        for section in owned:
            if section in settings:
                record[section] = settings[section]
                made_by[section] = {"command": command, "at": _iso_now(),
                                    "runtime": settings.get("resolved_runtime")}
        if "resolved_runtime" in settings:
            record["resolved_runtime"] = settings["resolved_runtime"]
        # Sections in the order of the pipeline's settings, then what the record adds.
        ordered = {key: record[key] for key in settings if key in record}
        ordered |= {key: value for key, value in record.items() if key not in ordered}
        ordered["made_by"] = made_by
        atomic_write(path, lambda temporary: temporary.write_text(yaml.safe_dump(ordered, sort_keys=False)))

    paths.ensure()
    update_shared_file(paths, paths.config, update)


def _read_record(path: Path) -> dict[str, Any]:
    """``config.yaml`` as a dict; empty when missing or unreadable (it is a record, written again here)."""
    try:
        record = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return record if isinstance(record, dict) else {}


@functools.cache
def git_commit() -> str | None:
    """The commit of the worldmodels source this process runs (``+dirty`` when it has uncommitted changes),
    or None outside a git checkout."""
    source = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def _append_line(paths: PipelinePaths, record: dict[str, Any]) -> None:
    def append(path: Path) -> None:
        with open(path, "a") as handle:
            handle.write(json_line(record))
            handle.flush()
            os.fsync(handle.fileno())

    update_shared_file(paths, paths.root / RUNS_LOG, append)


def exit_status(error: BaseException | None) -> int:
    """The exit status a command ends with after ``error`` (None: it succeeded)."""
    if error is None:
        return 0
    if stopping.requested() is not None:  # whatever the stop was turned into on its way up
        return 128 + int(stopping.requested())
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else 0 if error.code is None else 1
    return int(getattr(error, "exit_code", 1))


@contextlib.contextmanager
def logged_command(paths: PipelinePaths, command: str, settings: dict[str, Any]) -> Iterator[None]:
    """Log the command to ``runs.jsonl``: a start line now, an end line with its exit status when it ends."""
    run_id, started, clock = uuid.uuid4().hex[:12], _iso_now(), time.perf_counter()
    paths.ensure()
    _append_line(paths, {"run": run_id, "event": "start", "command": command, "argv": sys.argv, "pid": os.getpid(),
                         "start": started, "git_commit": git_commit(), "settings": settings})
    error: BaseException | None = None
    try:
        yield
    except BaseException as caught:
        error = caught
        raise
    finally:
        end = {"run": run_id, "event": "end", "command": command, "start": started, "end": _iso_now(),
               "seconds": round(time.perf_counter() - clock, 3), "exit_status": exit_status(error)}
        if error is not None and not isinstance(error, SystemExit):
            end["error"] = f"{type(error).__name__}: {error}"[:500]
        try:
            _append_line(paths, end)
        except OSError:
            if error is None:
                raise
            # The command's own error says more (the same full disk, most often): keep it, not this one.


def read_runs(paths: PipelinePaths) -> list[dict[str, Any]]:
    """The lines of ``runs.jsonl`` (a half-written last line is skipped)."""
    path = paths.root / RUNS_LOG
    if not path.is_file():
        return []
    lines: list[dict[str, Any]] = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines

