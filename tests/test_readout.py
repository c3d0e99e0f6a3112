"""`wm readout`: the true-state oracle imitated from what C reads."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import smoke_config
from worldmodels.config import ConfigError
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.envs import make_env
from worldmodels.evaluation.baselines import StateLinearPolicy
from worldmodels.stages import oracle, readout


def test_cartpoles_state_splits_into_positions_and_velocities():
    env = make_env(smoke_config().env)
    try:
        env.reset(0)
        parts = env.state_parts()
        assert parts["position"].tolist() == [0, 1, 2] and parts["velocity"].tolist() == [3, 4]
        assert len(env.state()) == 5
    finally:
        env.close()


def test_each_input_set_reads_its_pieces():
    z, h, state = np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0]), np.array([6.0, 7.0, 8.0, 9.0])
    parts = {"position": np.array([0, 1]), "velocity": np.array([2, 3])}
    expected = {"state": [6, 7, 8, 9], "zh": [1, 2, 3, 4, 5], "z+velocity": [1, 2, 8, 9], "position+h": [6, 7, 3, 4, 5]}
    for name, values in expected.items():
        np.testing.assert_array_equal(readout.input_features(name, z, h, state, parts), values)


def test_the_linear_readout_recovers_a_saturated_linear_tanh_policy_exactly():
    generator = np.random.default_rng(0)
    inputs = generator.normal(size=(500, 3)).astype(np.float32) * np.array([1.0, 10.0, 0.1], dtype=np.float32)
    weights, bias = np.array([[15.0, -2.0, 40.0]]), np.array([3.0])  # mostly at +-1, as the oracle is
    preactivations = inputs @ weights.T + bias
    fitted, error = readout.fit_linear_readout(inputs, preactivations)
    assert error < 1e-6
    with torch.no_grad():
        np.testing.assert_allclose(fitted(torch.from_numpy(inputs)).numpy(), np.tanh(preactivations), atol=1e-4)


def test_the_hidden_layer_readout_learns_a_smooth_policy():
    generator = np.random.default_rng(1)
    inputs = generator.uniform(-2, 2, size=(2000, 2)).astype(np.float32)
    actions = np.tanh(inputs[:, :1] * inputs[:, 1:])  # not linear in the inputs
    settings = smoke_config("readout.fit_epochs=60", "readout.learning_rate=0.01").readout
    fitted, error = readout.fit_readout(inputs, actions, 32, settings, seed=0)
    linear_error = readout.fit_linear_readout(inputs, np.arctanh(np.clip(actions, -0.999, 0.999)))[1]
    assert error < 0.01 < linear_error


def test_the_oracle_is_refused_with_the_wrong_number_of_parameters():
    with pytest.raises(ValueError, match="the oracle has 4 parameters"):
        StateLinearPolicy([0.0] * 4, 5, 1)
    with pytest.raises(ConfigError, match=r"readout.inputs\[0\]"):
        smoke_config("readout.inputs=[pixels]")


@pytest.fixture
def imitated(smoke_run):
    """The shared smoke run through its readout (conftest.SHARED_SMOKE: the oracle of 2 generations; 2 oracle
    episodes, 1 DAgger round of 1 episode, 5 fitting epochs, 2 evaluation episodes, the input sets state and
    zh); read only."""
    return smoke_run.config, smoke_run.through("readout")


def test_the_oracles_episodes_are_the_oracle_stages_own(imitated):
    """Played through V and M, the oracle acting on the true state scores what the oracle stage's
    own loop does on the same seed."""
    config, paths = imitated
    parameters = json.loads(paths.score("oracle").read_text())["parameters"]
    imitation = readout.Imitation(config, paths, parameters)
    try:
        inputs, targets, total = imitation.play("zh", 123, 0.0)
        expected, steps = oracle.state_policy_return(imitation.env, np.asarray(parameters), 123)
    finally:
        imitation.close()
    assert total == pytest.approx(expected) and len(inputs) == len(targets) == steps
    assert inputs.shape[1] == 32 + config.mdnrnn.hidden_size  # z and h


def test_readout_scores_every_input_set_with_both_readouts(imitated):
    config, paths = imitated
    result = json.loads(paths.score("readout").read_text())
    assert [(r["inputs"], r["readout"]) for r in result["rows"]] == [
        ("state", "linear"), ("state", "mlp"), ("zh", "linear"), ("zh", "mlp")]
    for row in result["rows"]:
        assert len(row["real_returns"]) == 2 and row["real_mean"] == pytest.approx(np.mean(row["real_returns"]))
        assert row["steps_of_data"] == 3 * 20, "2 oracle episodes and 1 DAgger episode of 20 steps"
        # Only what C reads can be played in M's dream: it holds no true state.
        assert ("dream_mean" in row) == (row["inputs"] == "zh")
        if row["inputs"] == "zh":
            assert np.isfinite(row["dream_mean"]) and row["dream_std"] >= 0
    assert result["identity"]["dream"]["eval_dream_rollouts"] == config.controller.eval_dream_rollouts
    gif = Image.open(paths.video("readout_real_vs_dream"))
    assert gif.format == "GIF" and gif.n_frames == 21, "the reset frame and 20 steps, real beside dream"
    rounds = MetricsLog(paths.metrics("readout"), step_key="step").read()
    assert [(r["inputs"], r["round"]) for r in rounds] == [("state", 0), ("state", 1), ("zh", 0), ("zh", 1)]


def test_readout_needs_the_oracle(tmp_path):
    paths = PipelinePaths(tmp_path / "smoke")
    with pytest.raises(FileNotFoundError, match="wm oracle"):
        readout.run(smoke_config(), paths, progress=False)


def test_the_linear_readout_of_the_true_state_is_the_oracle_itself(imitated):
    """The oracle is linear in the state, so C's form fitted on it plays the oracle's episodes: the
    procedure's own check."""
    config, paths = imitated
    oracle_returns = json.loads(paths.score("oracle").read_text())["returns"]
    row = json.loads(paths.score("readout").read_text())["rows"][0]
    assert (row["inputs"], row["readout"]) == ("state", "linear") and row["fit_mse"] < 1e-6
    np.testing.assert_allclose(row["real_returns"], oracle_returns[:config.readout.eval_episodes], rtol=1e-3)


def test_a_stopped_readout_goes_on_with_the_input_sets_it_had_not_done(imitated, smoke_run, tmp_path):
    config, _ = imitated
    paths = smoke_run.copy("readout", tmp_path)  # this test stops and continues the readout: its own copy
    complete = json.loads(paths.score("readout").read_text())
    partial = complete | {"rows": [row for row in complete["rows"] if row["inputs"] == "state"]}
    paths.score("readout").write_text(json.dumps(partial))
    lines = len(MetricsLog(paths.metrics("readout"), step_key="step").read())
    readout.run(config, paths, progress=False)
    again = json.loads(paths.score("readout").read_text())
    assert [r for r in again["rows"] if r["inputs"] == "state"] == partial["rows"]
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in again["rows"]]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in complete["rows"]]
    new = MetricsLog(paths.metrics("readout"), step_key="step").read()[lines:]
    assert [(r["inputs"], r["round"]) for r in new] == [("zh", 0), ("zh", 1)]
