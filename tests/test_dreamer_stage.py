import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import copy_trained_m, smoke_config
from worldmodels.checkpoint import load_checkpoint
from worldmodels.data.store import RolloutReader
from worldmodels.metrics import MetricsLog
from worldmodels.paths import PipelinePaths
from worldmodels.stages import collect, encode
from worldmodels.stages import dreamer as dreamer_stage
from worldmodels.stages import mdnrnn as mdnrnn_stage
from worldmodels.stages import vae as vae_stage


def _config(*overrides):
    return smoke_config(*overrides)


@pytest.fixture(scope="module")
def trained_m(tmp_path_factory):
    paths = PipelinePaths(tmp_path_factory.mktemp("d") / "smoke")
    for stage in (collect, vae_stage, encode, mdnrnn_stage):
        stage.run(_config(), paths, progress=False)
    return paths


def test_dreamer_trains_scores_and_draws_its_figures_beside_v_and_m(trained_m, tmp_path):
    paths = copy_trained_m(trained_m, tmp_path)
    dreamer_stage.run(_config(), paths, progress=False)
    records = MetricsLog(paths.metrics("dreamer"), step_key="update").read()
    assert [r["update"] for r in records] == [2, 4]
    assert all(np.isfinite(r["train/loss/total"]) and "eval/return_mean" in r for r in records)
    score = json.loads(paths.score("dreamer").read_text())
    assert score["updates"] == 4 and len(score["returns"]) == 2 and score["env_steps_of_data"] == 4 * 20 * 8
    prediction = json.loads(paths.dreamer_prediction.read_text())
    assert set(prediction["curves"]) == {"Dreamer RSSM", "V+M (MDN-RNN)"}
    for curve in prediction["curves"].values():
        assert len(curve["pixel_mse"]) == 10 and all(0 <= v <= 1 for v in curve["pixel_mse"])
    assert prediction["rssm_foreground_ratio"] > 0
    for name in ("dreamer_returns", "openloop_dreamer", "prediction_error"):
        Image.open(paths.figure(name)).verify()


def test_a_resumed_dreamer_continues_at_its_saved_update(trained_m, tmp_path):
    paths = copy_trained_m(trained_m, tmp_path)
    dreamer_stage.run(_config("dreamer.updates=2"), paths, progress=False)
    assert load_checkpoint(paths.last_checkpoint("dreamer"), "dreamer")["update"] == 2
    dreamer_stage.run(_config("dreamer.updates=4"), paths, progress=False)
    records = MetricsLog(paths.metrics("dreamer"), step_key="update").read()
    assert [r["update"] for r in records] == [2, 4]
    before = paths.score("dreamer").stat().st_mtime_ns
    dreamer_stage.run(_config("dreamer.updates=4"), paths, progress=False)
    assert paths.score("dreamer").stat().st_mtime_ns == before, "a finished run is not redone"


def test_the_online_phase_appends_its_episodes_and_updates_after_each(trained_m, tmp_path):
    paths = copy_trained_m(trained_m, tmp_path)
    dreamer_stage.run(_config("dreamer.updates=2", "dreamer.online_steps=160", "dreamer.updates_per_episode=2"),
                      paths, progress=False)
    online = RolloutReader(paths.dreamer_rollouts)
    assert online.num_episodes == 5 and RolloutReader(paths.rollouts).num_episodes == 4
    assert online.episodes["source"][-1].decode().startswith(dreamer_stage.ONLINE_SOURCE)
    assert load_checkpoint(paths.last_checkpoint("dreamer"), "dreamer")["update"] == 4
    records = MetricsLog(paths.metrics("dreamer"), step_key="update").read()
    logged = [value for record in records for value in record.get("train/episode_returns", [])]
    assert logged == pytest.approx([float(online.returns[-1])])  # the online episode's return, logged once
