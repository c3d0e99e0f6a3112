"""Per-epoch metrics as JSON lines (``metrics/<stage>.jsonl``), consistent with checkpoints.

A run killed after logging an epoch but before checkpointing it re-trains that epoch; the log
is first cut back to the checkpoint's epoch so that no epoch appears twice. Every line is strict
JSON: a NaN or an infinity is written as ``null`` (the training runs stop before logging one; other
measures, such as a score of no episodes, may still be undefined).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from worldmodels.core import tensorboard
from worldmodels.core.checkpoint import atomic_write


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, so that ``json.dumps`` writes strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def json_line(record: dict[str, Any]) -> str:
    """One strict-JSON line (no NaN tokens) with its newline."""
    return json.dumps(strict_json(record), allow_nan=False) + "\n"


def json_text(value: Any) -> str:
    """``value`` as indented strict JSON (a summary or score file; non-finite numbers as null)."""
    return json.dumps(strict_json(value), indent=1, allow_nan=False)


class MetricsLog:
    """Append-only JSON-lines log keyed by a step field (``epoch`` by default)."""

    def __init__(self, path: Path, step_key: str = "epoch") -> None:
        self.path = Path(path)
        self.step_key = step_key
        self._cut_at: int | None = None

    def read(self) -> list[dict[str, Any]]:
        """The records, as they will be once a pending :meth:`keep_up_to_when_appending` is done."""
        records = self._read_file()
        return records if self._cut_at is None else [r for r in records if r[self.step_key] <= self._cut_at]

    def _read_file(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        records = []
        for number, line in enumerate(lines):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if number < len(lines) - 1:
                    raise
                # The last line of a log being appended to right now may be half written.
        return records

    def keep_up_to(self, step: int) -> None:
        """Drop records whose step is past ``step`` (0 drops everything); no write when none is."""
        existing = self._read_file()
        records = [r for r in existing if r[self.step_key] <= step]
        if self.path.is_file() and len(records) == len(existing):
            return  # nothing to drop: leave the file (and its time stamp) alone
        text = "".join(json_line(r) for r in records)
        atomic_write(self.path, lambda temporary: temporary.write_text(text))

    def keep_up_to_when_appending(self, step: int) -> None:
        """:meth:`keep_up_to` ``step``, done at the next :meth:`append`: a run that starts over, or goes on,
        leaves the log of the previous one as it is until it has a step of its own to log (a run that fails
        before its first step leaves it intact)."""
        self._cut_at = step

    def apply_pending_cut(self) -> None:
        """Do a pending :meth:`keep_up_to_when_appending` now (before a checkpoint of a new step is saved, so
        that the log never holds a step of an older run beside that checkpoint)."""
        if self._cut_at is not None:
            self.keep_up_to(self._cut_at)
            self._cut_at = None

    def replace(self, record: dict[str, Any], key: str) -> None:
        """Append ``record`` in place of every earlier record that has ``key`` set (a measurement taken again,
        such as M's simulator measures after a resume: one line, never two)."""
        self.apply_pending_cut()
        existing = self._read_file()
        kept = [r for r in existing if not r.get(key)]
        if len(kept) == len(existing):
            self.append(record)
            return
        # One atomic rewrite, old lines out and the new one in: a stop leaves one line or the other.
        text = "".join(json_line(r) for r in [*kept, record])
        atomic_write(self.path, lambda temporary: temporary.write_text(text))
        self._log_scalars(record)

    def _log_scalars(self, record: dict[str, Any]) -> None:
        tensorboard.log_scalars(self.path.parent.parent / "tensorboard" / self.path.stem, record, self.step_key)

    def append(self, record: dict[str, Any]) -> None:
        """Add ``record`` to the log (and, with the tensorboard extra, its numbers to ``tensorboard/<stage>/``)."""
        self.apply_pending_cut()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json_line(record))
        self._log_scalars(record)
