"""The resume-and-checkpoint skeleton every trained model shares (V, M, C and Dreamer).

A training run is known by its *identity*: the checkpoint fields that must be equal for a saved
run to be the same run (its settings, the fingerprints of its inputs). It keeps two checkpoints,
both written atomically:

- the *last* one (``checkpoints/<name>_last.pt``), every step: the identity, the step, the
  models' and optimizers' state, torch's RNG states (CPU, and CUDA where the models run);
- the *best* one (``<name>.pt``), when the run's own measure improves: what the later stages load.

:meth:`TrainingRun.resume` restores the last checkpoint when it continues this very run, cuts the
metrics log back to its step (a step logged but not checkpointed is redone, never logged twice),
and says why when it starts over. Every checkpoint records the resolved runtime (device,
precision, threads) it was written under; checkpoints load on any device.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from worldmodels.checkpoint import load_checkpoint, save_checkpoint
from worldmodels.metrics import MetricsLog
from worldmodels.runtime import Runtime, restore_rng_state, rng_state

logger = logging.getLogger(__name__)


class TrainingRun:
    """One resumable run of one model.

    ``kind``: the checkpoint kind (``vae``, ``mdnrnn``, ...); ``identity``: the fields a resumable
    checkpoint must hold with equal values; ``step_key``: what a step is called in the log and the
    checkpoint (``epoch``, ``generation``, ``update``); ``label``: how the log names the model.
    """

    def __init__(self, kind: str, identity: dict[str, Any], last: Path, best: Path, log: MetricsLog,
                 runtime: Runtime, label: str) -> None:
        self.kind, self.identity, self.last, self.best = kind, identity, Path(last), Path(best)
        self.log, self.runtime, self.label = log, runtime, label

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
            self.log.keep_up_to(0)
            return None
        step = state[self.step_key] if step_of is None else step_of(state)
        if "torch_rng" in state:
            restore_rng_state(state, self.runtime)
        self.log.keep_up_to(step)
        logger.info(f"resuming {self.label} after {self.step_key} {step}")
        return state

    def _continuing(self) -> dict[str, Any] | None:
        if not self.last.is_file():
            return None
        state = load_checkpoint(self.last, self.kind)
        changed = sorted(key for key in self.identity if state.get(key) != self.identity[key])
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

    def save_last(self, state: dict[str, Any], with_rng: bool = True) -> None:
        """The resume state: ``state`` (step, models, optimizers...) plus the run's fields and RNG."""
        save_checkpoint({**self.common(), **state, **(rng_state(self.runtime) if with_rng else {})}, self.last)

    def save_best(self, state: dict[str, Any]) -> None:
        """The model the later stages load: ``state`` plus the run's fields."""
        save_checkpoint({**self.common(), **state}, self.best)
