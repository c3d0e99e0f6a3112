"""Where a pipeline's artifacts live: ``<data_dir>/<pipeline>/``, with fixed names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PipelinePaths:
    """The fixed file names of one pipeline run, so that Make and people can find them."""

    root: Path

    @classmethod
    def for_pipeline(cls, data_dir: str | Path, pipeline_name: str) -> PipelinePaths:
        return cls(Path(data_dir) / pipeline_name)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def rollouts(self) -> Path:
        return self.root / "rollouts.h5"

    @property
    def vae(self) -> Path:
        """The VAE checkpoint with the best held-out loss."""
        return self.root / "vae.pt"

    @property
    def latents(self) -> Path:
        return self.root / "latents.h5"

    @property
    def mdnrnn(self) -> Path:
        return self.root / "mdnrnn.pt"

    @property
    def controller(self) -> Path:
        return self.root / "controller.pt"

    @property
    def state_model_m(self) -> Path:
        """``wm state-model``'s M on the true state, after all its epochs."""
        return self.checkpoints_dir / "state_model_m.pt"

    @property
    def dreamer(self) -> Path:
        """Dreamer's world model, actor and value (the last evaluated ones)."""
        return self.root / "dreamer.pt"

    @property
    def dreamer_rollouts(self) -> Path:
        """The rollouts plus Dreamer's own online episodes (only with ``dreamer.online_steps``)."""
        return self.root / "dreamer_rollouts.h5"

    @property
    def report(self) -> Path:
        """The HTML page of the whole run (figures embedded; the dream videos linked from ``figures/``)."""
        return self.root / "report.html"

    @property
    def stage_times(self) -> Path:
        """Wall-clock seconds of each stage's work (see ``worldmodels.core.stage_times``)."""
        return self.metrics_dir / "stage_times.json"

    def score(self, agent: str) -> Path:
        return self.scores_dir / f"{agent}.json"

    @property
    def temperature_table(self) -> Path:
        """The temperature sweep's table in the paper's form (its numbers: ``score("temperature_table")``)."""
        return self.scores_dir / "temperature_table.md"

    @property
    def dreamer_prediction(self) -> Path:
        """Open-loop error curves of the RSSM and V+M on the same held-out episodes."""
        return self.metrics_dir / "dreamer_prediction.json"

    @property
    def agent(self) -> Path:
        """Names the pipeline's final agent (the last round's); rewritten only when it changes."""
        return self.root / "agent.json"

    @property
    def round_marker(self) -> Path:
        """In a round's folder: written when the round is finished, with what it was made from."""
        return self.root / "round.json"

    @property
    def iterations_dir(self) -> Path:
        """The iterative procedure's rounds, one folder each (``iterations/<k>``)."""
        return self.root / "iterations"

    def round(self, index: int) -> PipelinePaths:
        """Where round ``index`` keeps its artifacts (round 0: the pipeline's own folder)."""
        return self if index == 0 else PipelinePaths(self.iterations_dir / str(index))

    @property
    def simulator_metrics(self) -> Path:
        """M measured as a simulator: open-loop errors by horizon, replay gap, calibration."""
        return self.metrics_dir / "mdnrnn_simulator.json"

    @property
    def checkpoints_dir(self) -> Path:
        """Resume states (model, optimizer, RNG) of the last finished epoch of each stage."""
        return self.root / "checkpoints"

    def last_checkpoint(self, stage: str) -> Path:
        return self.checkpoints_dir / f"{stage}_last.pt"

    def metrics(self, stage: str) -> Path:
        return self.metrics_dir / f"{stage}.jsonl"

    def figure(self, name: str) -> Path:
        return self.figures_dir / f"{name}.png"

    def video(self, name: str) -> Path:
        """An animated GIF beside the figures (``worldmodels.vmc.videos``)."""
        return self.figures_dir / f"{name}.gif"

    @property
    def metrics_dir(self) -> Path:
        return self.root / "metrics"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def scores_dir(self) -> Path:
        return self.root / "scores"

    def ensure(self) -> PipelinePaths:
        """Create the run's folders; returns self."""
        for directory in (self.root, self.metrics_dir, self.figures_dir, self.scores_dir, self.checkpoints_dir):
            directory.mkdir(parents=True, exist_ok=True)
        return self
