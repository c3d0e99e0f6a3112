"""Metrics and figures reach TensorBoard event files when the optional package is installed."""

import json

import numpy as np
import pytest

from worldmodels.core import tensorboard
from worldmodels.core.metrics import MetricsLog
from worldmodels.reporting.figures import score_histogram

pytestmark = pytest.mark.skipif(not tensorboard.available(), reason="the tensorboard extra is not installed")


def _events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_every_number_of_a_metrics_record_becomes_a_scalar_at_its_step(tmp_path):
    log = MetricsLog(tmp_path / "run" / "metrics" / "mdnrnn.jsonl")
    for epoch, loss in ((1, 2.5), (2, 1.25)):
        log.append({"epoch": epoch, "train/loss/total": loss, "simulator": False, "note": "text"})
    events = _events(tmp_path / "run" / "tensorboard" / "mdnrnn")
    assert events.Tags()["scalars"] == ["train/loss/total"]  # not the step, the flag or the text
    assert [(e.step, e.value) for e in events.Scalars("train/loss/total")] == [(1, 2.5), (2, 1.25)]
    # The JSON-lines log is unchanged by it, and stays the source of truth.
    assert [json.loads(line)["epoch"] for line in log.path.read_text().splitlines()] == [1, 2]


def test_a_figure_is_also_an_image_in_tensorboard(tmp_path):
    path = tmp_path / "run" / "figures" / "score_hist.png"
    score_histogram({"zero": np.array([750.0, 760.0]), "random": np.array([200.0, 240.0])}, path)
    events = _events(tmp_path / "run" / "tensorboard" / "figures")
    images = events.Images("score_hist")
    assert len(images) == 1 and images[0].width > 100 and images[0].height > 100


def test_a_figure_drawn_outside_a_pipelines_figures_folder_leaves_no_event_files(tmp_path):
    path = tmp_path / "docs" / "score_hist.png"
    score_histogram({"zero": np.array([750.0, 760.0])}, path)
    assert path.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["docs"]
    assert [p.name for p in (tmp_path / "docs").iterdir()] == ["score_hist.png"]
