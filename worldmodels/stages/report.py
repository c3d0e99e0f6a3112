"""Stage `report`: the whole run on one HTML page, ``report.html``.

Reads only what the other stages wrote (scores, metrics, figures, checkpoints) and embeds the
figures as base64 PNGs, so the page shows every figure and number on its own. The dream videos
(animated GIFs, megabytes each) are linked instead, by their relative paths in ``figures/`` beside
the page, each shown inline by its first frame: the page stays small, and plays them while it sits
in the run's folder. A stage that has not run shows as a "missing" box naming the file and the
command that makes it; the report never needs a stage.

Sections (``worldmodels/reporting/sections.py``): results beside the published anchors, wall-clock
per stage, the budgets against the papers', the data, V, M, C, Dreamer, V+M against the RSSM on the
same held-out episodes, the diagnostics behind the scores, and the resolved config with package
versions. The paper's recipe is the pipeline ``<name>_paper`` (e.g.
``pipelines/cartpole_balance_paper.yaml``): when it has been run, its scores are a row of the
results table and its settings that differ from this pipeline's are listed.
"""

from __future__ import annotations

from pathlib import Path

from worldmodels.config import PipelineConfig
from worldmodels.core.checkpoint import atomic_write
from worldmodels.core.paths import PipelinePaths
from worldmodels.reporting.page import page
from worldmodels.reporting.sections import SECTION_AGENTS, SECTIONS


def build(config: PipelineConfig, paths: PipelinePaths) -> str:
    """The whole page as one HTML string."""
    return page(config, paths, SECTIONS, SECTION_AGENTS)


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True) -> Path:
    """Write ``report.html``; returns its path."""
    html_page = build(config, paths)
    paths.ensure()
    atomic_write(paths.report, lambda temporary: temporary.write_text(html_page, encoding="utf-8"))
    return paths.report
