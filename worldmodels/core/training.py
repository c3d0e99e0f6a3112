"""The resume-and-checkpoint skeleton every trained model shares (V, M, C and Dreamer).

A training run is known by its *identity*: the checkpoint fields that must be equal for a saved
run to be the same run (its settings, the fingerprints of its inputs). It keeps two checkpoints,
both written atomically:

- the *last* one (``checkpoints/<name>_last.pt``), every step: the identity, the step, the
  models' and optimizers' state, torch's RNG states (CPU, and CUDA where the models run), and a
  copy of the best one;
- the *best* one (``<name>.pt``), when the run's own measure improves: what the later stages load.

:meth:`TrainingRun.resume` restores the last checkpoint when it continues this very run, cuts the
metrics log back to its step when the next step is saved (a run that fails before that leaves the
log as it was). A step's metrics line is written after its checkpoint (and kept in it), so every
logged step is one a resume can start from, and a step checkpointed but not logged (a kill in
between) is logged by the resume: no step is logged twice or skipped. A run that cannot be
resumed says why it starts over. It also checks the best file: missing, unreadable or of another
run, it is written again from the copy in the last checkpoint, so a stage never counts itself done
while its output is gone. Every checkpoint records the resolved runtime (device, precision,
threads) it was written under; checkpoints load on any device.

Nothing non-finite is saved: :meth:`TrainingRun.check` stops a run whose losses or weights are NaN
or infinite, or whose held-out loss has exploded, before it is logged or checkpointed, so the last
good checkpoint, the best model and the metrics log stay as they were.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from worldmodels.core.checkpoint import load_checkpoint, save_checkpoint
from worldmodels.core.metrics import MetricsLog, json_line
from worldmodels.core.runtime import Runtime, restore_rng_state, rng_state
from worldmodels.errors import UserError

logger = logging.getLogger(__name__)

EXPLOSION_FACTOR = 100.0
"""A held-out loss above ``best + EXPLOSION_FACTOR * max(|best|, 1)`` counts as diverged."""
BEST_COPY = "best_checkpoint"
"""The key of the last checkpoint that holds a copy of the best one."""
STEP_RECORD = "metrics_record"
"""The key of the last checkpoint that holds its step's metrics line, logged again by a resume that finds
it missing (the process was stopped between the checkpoint and the line)."""


class TrainingDiverged(UserError, RuntimeError):
    """A loss, a weight or a fitness became NaN or infinite, or a held-out loss exploded; the
    message names the model, the step and the value."""


def non_finite(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries of ``values`` that are numbers but not finite (lists are looked into)."""
    bad = {}
    for key, value in values.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if isinstance(item, (int, float)) and not isinstance(item, bool) and not math.isfinite(item):
                bad[key] = float(item)
                break
    return bad


def non_finite_parameters(modules: Iterable[torch.nn.Module]) -> list[str]:
    """Names of the parameters of ``modules`` holding a NaN or an infinity."""
    return [name for module in modules for name, parameter in module.named_parameters()
            if not bool(torch.isfinite(parameter.detach()).all())]


def differing_fields(checkpoint: Mapping[str, Any], identity: Mapping[str, Any]) -> list[str]:
    """The keys of ``identity`` whose value ``checkpoint`` does not hold, sorted."""
    return sorted(key for key in identity if checkpoint.get(key) != identity[key])


class TrainingRun:
    """One resumable run of one model.

    ``kind``: the checkpoint kind (``vae``, ``mdnrnn``, ...); ``identity``: the fields a resumable
    checkpoint must hold with equal values; ``step_key``: what a step is called in the log and the
    checkpoint (``epoch``, ``generation``, ``update``); ``label``: how the log names the model;
    ``step_name``: what messages call a step where the log's key is a generic one (default: the key).
    """

    def __init__(self, kind: str, identity: dict[str, Any], last: Path, best: Path, log: MetricsLog,
                 runtime: Runtime, label: str, step_name: str | None = None) -> None:
        self.kind, self.identity, self.last, self.best = kind, identity, Path(last), Path(best)
        self.log, self.runtime, self.label = log, runtime, label
        self.step_name = step_name or log.step_key
        self._best_copy: dict[str, Any] | None = None

    @property
    def step_key(self) -> str:
        return self.log.step_key

    def common(self) -> dict[str, Any]:
        """The fields every checkpoint of this run carries: kind, identity, runtime."""
        return {"kind": self.kind, **self.identity, "runtime": self.runtime.record()}

    def resume(self, step_of=None) -> dict[str, Any] | None:
        """The last checkpoint if it continues this run (torch's RNG restored, the log cut back to its
        step), else None (the log emptied, the reason logged). ``step_of(state)`` reads the step of
        a checkpoint that does not store it under ``step_key``."""
        state = self._continuing()
        if state is None:
            self.log.keep_up_to_when_appending(0)
            return None
        step = state[self.step_key] if step_of is None else step_of(state)
        self._best_copy = state.get(BEST_COPY)
        self._check_best_file()
        if "torch_rng" in state:
            restore_rng_state(state, self.runtime)
        self.log.keep_up_to_when_appending(step)
        record = state.get(STEP_RECORD)
        if record is not None and json.loads(json_line(record)) not in self.log.read():
            self.log.append(record)  # stopped between its checkpoint and its line: the line now
        logger.info(f"resuming {self.label} after {self.step_name} {step}")
        return state

    def _continuing(self) -> dict[str, Any] | None:
        if not self.last.is_file():
            return None
        state = load_checkpoint(self.last, self.kind)
        changed = differing_fields(state, self.identity)
        if not changed:
            return state
        details = []
        for key in changed:
            old, new = state.get(key), self.identity[key]
            if isinstance(old, dict) and isinstance(new, dict):
                details += [f"{key}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            else:
                details.append(key)
        logger.info(f"{self.last}: made from other inputs or settings ({', '.join(details)}); "
                    f"training {self.label} from scratch")
        return None

    def _check_best_file(self) -> None:
        """Write the best file again from the last checkpoint's copy when it is missing, unreadable, or
        not this run's (another pipeline's, other settings', a folder in its place)."""
        if self._best_copy is None:
            return
        problem = self.best_file_problem()
        if problem is None:
            return
        if self.best.is_dir():
            raise TrainingOutputError(f"{self.best} is a folder where {self.label}'s model should be; "
                                      "remove it and run the command again")
        logger.warning(f"{problem}: writing it again from {self.last}")
        save_checkpoint(self._best_copy, self.best)

    def best_file_problem(self) -> str | None:
        """What is wrong with the best file as this run's output (None: it is this run's)."""
        if not self.best.exists():
            return f"{self.best} is missing"
        try:
            state = load_checkpoint(self.best, self.kind)
        except (ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as error:
            return str(error)
        changed = differing_fields(state, self.identity)
        if changed:
            return f"{self.best} was made by another run ({', '.join(changed)} differ)"
        return None

    def check(self, step: int, metrics: Mapping[str, Any], modules: Iterable[torch.nn.Module] = (),
              heldout_key: str | None = None, best: float | None = None, batch: int | None = None) -> None:
        """Raise :class:`TrainingDiverged` when a metric of ``step`` (of its ``batch``, when given) or a weight of
        ``modules`` is not finite, or when ``metrics[heldout_key]`` exploded past ``best`` (see
        ``EXPLOSION_FACTOR``). Called before the step is logged or saved; cheap when all is well (it runs
        after every batch)."""
        bad = non_finite(metrics)
        if bad:
            shown = ", ".join(f"{key}{'' if batch is None else f' (batch {batch})'} = {value}"
                              for key, value in sorted(bad.items())[:4])
            self._diverged(step, shown, "Lower the learning rate or check the data.")
        broken = non_finite_parameters(modules)
        if broken:
            self._diverged(step, f"non-finite weights in {', '.join(broken[:4])}",
                           "Lower the learning rate or check the data.")
        if heldout_key is not None and best is not None and math.isfinite(best):
            value = float(metrics[heldout_key])
            if value > best + EXPLOSION_FACTOR * max(abs(best), 1.0):
                self._diverged(step, f"{heldout_key} = {value:.4g}, more than {EXPLOSION_FACTOR:g} x max(|best|, 1) "
                               f"above its best {best:.4g}", "Lower the learning rate.")

    def _diverged(self, step: int, what: str, advice: str) -> None:
        kept = (f"{self.last.name} and {self.best.name} still hold the last good {self.step_name}"
                if self.last.is_file() else "nothing was saved")
        raise TrainingDiverged(f"{self.label} diverged at {self.step_name} {step}: {what}; {kept}. {advice}")

    def save_last(self, state: dict[str, Any], with_rng: bool = True, record: dict[str, Any] | None = None) -> None:
        """The resume state: ``state`` (step, models, optimizers...) plus the run's fields, RNG and a copy
        of the best checkpoint; then ``record``, the step's metrics line, is logged (it is kept in the
        checkpoint too, for a resume to log should the process stop in between)."""
        extra = {BEST_COPY: self._best_copy} if self._best_copy is not None else {}
        if record is not None:
            extra[STEP_RECORD] = record
        self.log.apply_pending_cut()
        save_checkpoint({**self.common(), **state, **(rng_state(self.runtime) if with_rng else {}), **extra},
                        self.last)
        if record is not None:
            self.log.append(record)

    def save_best(self, state: dict[str, Any]) -> None:
        """The model the later stages load: ``state`` plus the run's fields (kept for the last checkpoint too)."""
        # A copy, not the live tensors: a state_dict shares its tensors with the model, which trains on.
        self._best_copy = copy.deepcopy({**self.common(), **state})
        self.log.apply_pending_cut()  # a new run's best file never stands beside an older run's log
        save_checkpoint(self._best_copy, self.best)

    def require_best(self) -> None:
        """For a run that is complete: raise :class:`TrainingOutputError` naming what to remove when the
        best file is not this run's and the last checkpoint holds no copy to write it again from."""
        problem = self.best_file_problem()
        if problem is not None:
            raise TrainingOutputError(f"{problem}, and {self.last} holds no copy of it: remove {self.last} "
                                      f"to train {self.label} again")


def refuse_if_made_by_another_run(checkpoint: Mapping[str, Any], path: Path, identity: Mapping[str, Any],
                                  command: str) -> None:
    """Raise :class:`TrainingOutputError` naming ``path`` and the fields that differ when ``checkpoint`` (read
    from ``path``) was not made with ``identity`` (another pipeline's model, or one made before the inputs or
    settings changed); ``command`` makes this run's."""
    changed = differing_fields(checkpoint, identity)
    if changed:
        raise TrainingOutputError(f"{path} was made by another run ({', '.join(changed)} differ: another "
                                  f"pipeline's, or made before its inputs or settings changed); run `{command}` "
                                  "to make this pipeline's")


class TrainingOutputError(UserError, RuntimeError):
    """A stage's output cannot be used or written again; the message names the file and what to do."""
