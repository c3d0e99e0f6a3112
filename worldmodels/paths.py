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
        for directory in (self.root, self.metrics_dir, self.figures_dir, self.scores_dir):
            directory.mkdir(parents=True, exist_ok=True)
        return self
