"""Wall-clock seconds each stage's work took: ``metrics/stage_times.json``, for the report.

A `wm` command is timed only when it wrote something into the pipeline folder: a command that
finds its output complete (Make calls every stage on every ``make all``) leaves the record alone.
A run interrupted after doing some work (killed, Ctrl-C, an error) keeps its seconds as
``pending_seconds``; the run that finishes the stage adds them, so a resumed stage reports the
total time its work took.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from worldmodels.core.checkpoint import atomic_write
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.run_record import update_shared_file

logger = logging.getLogger(__name__)

# Written by every command, whether or not it had work to do (the lock files in locks/ too).
_ALWAYS_WRITTEN = ("config.yaml", "stage_times.json", "runs.jsonl")


def read_stage_times(paths: PipelinePaths) -> dict[str, dict[str, Any]]:
    """``{stage: {"seconds", "finished", "pending_seconds"}}``; empty when nothing was timed."""
    if not paths.stage_times.is_file():
        return {}
    return json.loads(paths.stage_times.read_text())


def _wrote_since(root: Path, since: float) -> bool:
    """Whether any file under ``root`` (but the always-written ones) changed after ``since``."""
    if not root.is_dir():
        return False
    for path in root.rglob("*"):
        if path.name in _ALWAYS_WRITTEN or path.name.endswith((".tmp", ".lock")):
            continue
        with contextlib.suppress(FileNotFoundError):  # a temporary file renamed meanwhile
            if path.is_file() and path.stat().st_mtime >= since:
                return True
    return False


@contextlib.contextmanager
def timed_stage(paths: PipelinePaths, stage: str) -> Iterator[None]:
    """Time the body as ``stage``'s work (see the module's docstring for what counts)."""
    started_at, started = time.time(), time.perf_counter()
    completed = False
    try:
        yield
        completed = True
    finally:
        seconds = time.perf_counter() - started
        try:
            _record(paths, stage, started_at, seconds, completed)
        except OSError as error:
            if completed:
                raise
            # The stage's own error says more (the same full disk, most often): keep it, not this one.
            logger.warning(f"{paths.stage_times}: the stage's time was not recorded ({error.strerror or error})")


def _record(paths: PipelinePaths, stage: str, started_at: float, seconds: float, completed: bool) -> None:
    # 50 ms of slack: file times come from a coarser clock than time.time().
    if not _wrote_since(paths.root, started_at - 0.05):
        return

    def update(path: Path) -> None:
        times = read_stage_times(paths)
        entry = times.get(stage, {})
        pending = float(entry.get("pending_seconds", 0.0))
        if completed:
            entry = {"seconds": pending + seconds, "pending_seconds": 0.0,
                     "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        else:
            entry = {**entry, "pending_seconds": pending + seconds}
        times[stage] = entry
        atomic_write(path, lambda temporary: temporary.write_text(json.dumps(times, indent=1)))

    paths.ensure()
    # Stages that run side by side (make -j2) both update this file: under the shared-files lock.
    update_shared_file(paths, paths.stage_times, update)
