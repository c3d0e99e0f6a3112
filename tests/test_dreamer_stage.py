import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import copy_trained_m, smoke_config
from worldmodels.core.checkpoint import load_checkpoint
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.store import RolloutReader
from worldmodels.dreamer.learner import updates_due
from worldmodels.reference import dreamer_v1_curve
from worldmodels.reporting.figures import dreamer_returns
from worldmodels.stages import collect
from worldmodels.stages import dreamer as dreamer_stage


def _config(*overrides):
    return smoke_config(*overrides)


@pytest.fixture
def trained_m(smoke_run):
    """The smoke pipeline's rollouts, V, latents and M (the session's shared run); tests copy them."""
    return smoke_run.through("train-mdnrnn")


@pytest.mark.slow
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


@pytest.mark.slow
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


# Dreamer v1's schedule at test size: prefill 3 episodes of 20 env steps (60), 3 pretraining updates,
# then 2 updates due per 20 env steps played, to 120 env steps; action repeat 2 (10 agent steps).
SLIDER = ("env.id=gym:tests.tiny_envs:Slider-v0", "env.action_repeat=2", "collect.episodes=3",
          "collect.policy=random", "mdnrnn.openloop_steps=5", "dreamer.updates=3", "dreamer.train_every=20",
          "dreamer.updates_per_train=2", "dreamer.env_steps=120", "dreamer.eval_every_env_steps=40")


def _slider_paths(tmp_path, name="slider"):
    paths = PipelinePaths(tmp_path / name)
    collect.run(_config(*SLIDER), paths, progress=False)
    return paths


def test_updates_due_follow_dreamer_v1s_schedule_in_env_steps():
    settings = _config("dreamer.updates=100", "dreamer.train_every=1000", "dreamer.updates_per_train=100",
                       "dreamer.env_steps=100000").dreamer
    assert updates_due(settings, 5000, 5000) == 100           # the pretraining, on the prefill
    assert updates_due(settings, 5999, 5000) == 100           # counted in whole train_every env steps
    assert updates_due(settings, 6000, 5000) == 200
    assert updates_due(settings, 100000, 5000) == 9600        # the article's ~9,600 updates at 100k
    assert updates_due(_config("dreamer.updates=7").dreamer, 10**6, 0) == 7  # offline: the updates alone


@pytest.mark.slow
def test_the_online_loop_prefills_pretrains_then_trains_between_episodes(tmp_path):
    paths = _slider_paths(tmp_path)
    dreamer_stage.run(_config(*SLIDER), paths, progress=False)
    replay = RolloutReader(paths.dreamer_rollouts)
    assert replay.num_episodes == 3 + 3 and RolloutReader(paths.rollouts).num_episodes == 3
    assert replay.num_steps * 2 == 120
    assert all(s.decode().startswith(dreamer_stage.ONLINE_SOURCE) for s in replay.episodes["source"][3:])
    assert load_checkpoint(paths.last_checkpoint("dreamer"), "dreamer")["update"] == 3 + 2 * 3
    records = MetricsLog(paths.metrics("dreamer"), step_key="update").read()
    blocks = [(r["update"], r["env_steps"]) for r in records if "seconds_per_update" in r]
    assert blocks == [(3, 60), (5, 80), (7, 100), (9, 120)]
    played = [r for r in records if "train/return" in r]
    assert [r["env_steps"] for r in played] == [80, 100, 120]
    assert [r["train/return"] for r in played] == pytest.approx(replay.returns[3:].tolist())
    evals = [(r["update"], r["env_steps"]) for r in records if "eval/return_mean" in r]
    assert evals == [(0, 60), (5, 100)]  # the untrained actor on the prefill, then before the updates due
    score = json.loads(paths.score("dreamer").read_text())
    assert score["updates"] == 9 and score["env_steps_of_data"] == 120
    Image.open(paths.figure("dreamer_returns")).verify()


@pytest.mark.slow
def test_a_prefill_of_the_first_episodes_starts_the_replay_and_the_schedule_counts_from_it(tmp_path):
    # 2 of the 3 collected episodes (40 env steps) start the replay: 3 pretraining updates, then 2 per
    # 20 env steps played to 120: 3 + 2 * 4 = 11 updates, over 4 online episodes.
    paths = _slider_paths(tmp_path)
    dreamer_stage.run(_config(*SLIDER, "dreamer.prefill_episodes=2"), paths, progress=False)
    replay, rollouts = RolloutReader(paths.dreamer_rollouts), RolloutReader(paths.rollouts)
    assert replay.num_episodes == 2 + 4 and replay.num_steps * 2 == 120
    np.testing.assert_array_equal(replay.step_data(1)["actions"], rollouts.step_data(1)["actions"])
    records = MetricsLog(paths.metrics("dreamer"), step_key="update").read()
    assert [(r["update"], r["env_steps"]) for r in records if "seconds_per_update" in r] == [
        (3, 40), (5, 60), (7, 80), (9, 100), (11, 120)]
    # Every record carries the run's wall clock so far; the score carries the whole of it.
    clock = [r["wall_seconds"] for r in records]
    assert clock == sorted(clock) and clock[0] >= 0
    score = json.loads(paths.score("dreamer").read_text())
    assert score["updates"] == 11 and score["online"] and score["training_seconds"] >= clock[-1] - 0.05
    with pytest.raises(ValueError, match="dreamer.prefill_episodes=4 is more than the 3 episodes"):
        dreamer_stage.run(_config(*SLIDER, "dreamer.prefill_episodes=4", "dreamer.seed=3"), paths, progress=False)


@pytest.mark.slow
def test_online_episodes_cut_at_episode_steps_while_the_prefill_stays_whole(tmp_path):
    paths = _slider_paths(tmp_path)
    dreamer_stage.run(_config(*SLIDER, "dreamer.episode_steps=4", "dreamer.env_steps=100"), paths, progress=False)
    replay = RolloutReader(paths.dreamer_rollouts)
    assert replay.lengths.tolist() == [10, 10, 10, 4, 4, 4, 4, 4]  # 60 env steps of prefill, then 5 x 8
    records = MetricsLog(paths.metrics("dreamer"), step_key="update").read()
    assert [r["env_steps"] for r in records if "train/return" in r] == [68, 76, 84, 92, 100]


def test_a_dreamer_only_pipeline_evaluates_the_baselines_without_v_m_or_c(tmp_path):
    from worldmodels.stages import evaluate

    paths = _slider_paths(tmp_path)
    written = evaluate.run(_config(*SLIDER, "report.agents=[dreamer]", "evaluate.episodes=3"), paths, progress=False)
    assert written == paths.score("zero")
    assert paths.score("random").is_file() and not paths.score("worldmodel").exists()
    assert len(json.loads(paths.score("zero").read_text())["returns"]) == 3
    with pytest.raises(FileNotFoundError, match="no final controller"):  # with V+M+C asked for, C must exist
        evaluate.run(_config(*SLIDER, "evaluate.episodes=3"), paths, progress=False)


@pytest.mark.slow
def test_a_killed_online_run_resumes_to_the_same_replay_and_model(tmp_path, monkeypatch):
    whole = _slider_paths(tmp_path, "whole")
    dreamer_stage.run(_config(*SLIDER), whole, progress=False)
    killed = _slider_paths(tmp_path, "killed")
    play = dreamer_stage._collect_online_episode
    calls = []

    def dies_at_the_second_episode(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return play(*args)
    monkeypatch.setattr(dreamer_stage, "_collect_online_episode", dies_at_the_second_episode)
    with pytest.raises(KeyboardInterrupt):
        dreamer_stage.run(_config(*SLIDER), killed, progress=False)
    assert RolloutReader(killed.dreamer_rollouts).num_episodes == 4
    monkeypatch.setattr(dreamer_stage, "_collect_online_episode", play)
    dreamer_stage.run(_config(*SLIDER), killed, progress=False)
    a, b = RolloutReader(whole.dreamer_rollouts), RolloutReader(killed.dreamer_rollouts)
    assert a.num_episodes == b.num_episodes == 6
    for episode in range(6):
        np.testing.assert_array_equal(a.step_data(episode)["actions"], b.step_data(episode)["actions"])
    first, second = load_checkpoint(whole.dreamer, "dreamer"), load_checkpoint(killed.dreamer, "dreamer")
    assert first["update"] == second["update"] == 9
    for name, tensor in first["actor"].items():
        torch.testing.assert_close(tensor, second["actor"][name])
    records = MetricsLog(killed.metrics("dreamer"), step_key="update").read()
    assert [r["env_steps"] for r in records if "train/return" in r] == [80, 100, 120]


@pytest.mark.slow
def test_a_fresh_online_run_starts_its_replay_again_from_the_prefill(tmp_path):
    paths = _slider_paths(tmp_path)
    dreamer_stage.run(_config(*SLIDER), paths, progress=False)
    dreamer_stage.run(_config(*SLIDER, "dreamer.seed=1"), paths, progress=False)  # other settings: from scratch
    replay = RolloutReader(paths.dreamer_rollouts)
    assert replay.num_episodes == 6 and replay.num_steps * 2 == 120
    assert replay.episodes["base_seed"][3:].tolist() == [1, 1, 1]  # the first run's episodes are gone


def test_the_official_curve_is_read_and_drawn_beside_the_run(tmp_path):
    curve = dreamer_v1_curve("dmc:cartpole-balance")
    assert curve.returns.shape == (5, 11) and curve.env_steps[1] == 105000
    mean, std = curve.at(100000)
    assert mean == pytest.approx(472.3, abs=0.1) and std == pytest.approx(38.2, abs=0.1)  # REFERENCE.md: 472 +- 38
    assert dreamer_v1_curve("dmc:walker-walk") is None
    records = [{"update": 0, "env_steps": 5000, "eval/return_mean": 130.0, "eval/return_std": 5.0,
                "eval/returns": [125.0, 135.0]},
               {"update": 100, "env_steps": 6000, "train/return": 200.0}]
    labels = dreamer_returns(records, curve, 2, tmp_path / "returns.png")
    assert len(labels) == 2 and all(any(label.startswith("official Dreamer v1") for label in panel)
                                    for panel in labels)
    # With the run's wall clock in its records, a third panel draws the returns against minutes.
    timed = [{**record, "wall_seconds": 60.0 * (index + 1)} for index, record in enumerate(records)]
    labels = dreamer_returns(timed, curve, 2, tmp_path / "returns.png")
    assert len(labels) == 3 and labels[2] == ["train episodes", "eval"]
    Image.open(tmp_path / "returns.png").verify()


