"""`wm state-model`: M and C on the true state instead of V's z."""

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import smoke_config
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.store import RolloutReader
from worldmodels.envs import make_env
from worldmodels.evaluation.episodes import Score, evaluation_seeds, searches_beside_reality
from worldmodels.models.controller import population_actions
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.stages import state_model


@pytest.fixture
def collected(smoke_run):
    """The smoke pipeline's rollouts (the session's shared run); read only: ``_own_copy`` to write."""
    return smoke_config(), smoke_run.through("collect")


def _own_copy(collected_paths: PipelinePaths, tmp_path) -> PipelinePaths:
    """A folder of its own holding the shared rollouts alone (as the collect stage left them)."""
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    paths.rollouts.write_bytes(collected_paths.rollouts.read_bytes())
    return paths


def test_a_stored_episode_replays_to_its_states_and_rewards(collected):
    config, paths = collected
    rollouts = RolloutReader(paths.rollouts)
    env = make_env(config.env)
    try:
        states = state_model.recover_states(env, rollouts, 1)
        assert states.shape == (rollouts.lengths[1] + 1, 5)
        # Replayed by hand: the same seed and actions reach the same last state.
        env.reset(int(rollouts.episodes[1]["seed"]))
        for action in rollouts.step_data(1)["actions"]:
            last = env.step_state(action)[0]
        np.testing.assert_allclose(states[-1], last, rtol=1e-6)
        assert not np.allclose(states[0], states[-1])
    finally:
        env.close()


def test_an_episode_that_does_not_replay_is_named(collected, tmp_path):
    config, paths = collected
    tampered = tmp_path / "rollouts.h5"
    tampered.write_bytes(paths.rollouts.read_bytes())
    with h5py.File(tampered, "r+") as handle:
        handle["actions"][:] = -handle["actions"][:]  # other actions: other rewards
    env = make_env(config.env)
    try:
        with pytest.raises(ValueError, match=r"episode 0 \(env seed \d+\) does not replay"):
            state_model.recover_states(env, RolloutReader(tampered), 0)
    finally:
        env.close()


def test_states_are_standardised_by_the_training_episodes_and_served_as_exact_latents():
    states = {0: np.array([[0.0, 10.0], [2.0, 30.0]]), 1: np.array([[4.0, 50.0]]), 2: np.array([[100.0, 100.0]])}
    latents = state_model.StateLatents.standardised(states, np.array([0, 1]))
    np.testing.assert_allclose(latents.mean, [2.0, 30.0])
    mu, logvar = latents.episode(1)
    np.testing.assert_allclose(mu, [[(4.0 - 2.0) / np.sqrt(8 / 3), (50.0 - 30.0) / np.sqrt(800 / 3)]], rtol=1e-5)
    assert latents.z_size == 2 and (np.exp(0.5 * logvar) < 1e-6).all()


def test_the_zero_controller_in_the_real_env_plays_the_zero_action():
    config = smoke_config()
    env = make_env(config.env)
    try:
        states = {0: np.zeros((3, 5), np.float32), 1: np.ones((3, 5), np.float32)}
        latents = state_model.StateLatents.standardised(states, np.array([0, 1]))
        policy = state_model.StateWorldModelPolicy(MDNRNN(5, 1, 8, 2), latents, np.zeros(5 + 8 + 1), 1)
        seed = evaluation_seeds(0, 1)[0]
        played = policy.episode_return(env, seed)
        env.reset(seed)
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated = env.step_state(np.zeros(1, np.float32))
            total, done = total + reward, terminated or truncated
        assert played == pytest.approx(total)
    finally:
        env.close()


def test_the_stage_scores_c_on_the_evaluation_episodes_and_measures_m(collected, tmp_path):
    paths = _own_copy(collected[1], tmp_path)
    config = smoke_config("evaluate.episodes=3", "mdnrnn.epochs=4")
    output = state_model.run(config, paths, progress=False)
    score = Score.read(output)
    assert score.seeds == evaluation_seeds(config.evaluate.seed, 3) and score.episodes == 3
    about = score.about
    assert len(about["parameters"]) == 5 + config.mdnrnn.hidden_size + 1  # C on [state, h] with a bias
    assert about["dream_steps"] == int(RolloutReader(paths.rollouts).lengths.min()) == 20  # as V+M+C's dreams
    assert -1.0 <= about["replay_correlation"] <= 1.0 or np.isnan(about["replay_correlation"])
    # The zero controller's real return is the zero action's, which the smoke episodes earn.
    assert 0 < about["zero_action_real"] <= config.env.max_episode_steps * config.env.action_repeat
    held_out = [line for line in paths.metrics("state_model").read_text().splitlines() if '"M"' in line]
    assert len(held_out) == 2  # eval_every 2 of 4 epochs
    assert score.env_steps_of_data == int(RolloutReader(paths.rollouts).lengths.sum()) * config.env.action_repeat
    torch.testing.assert_close(torch.tensor(score.mean), torch.tensor(float(np.mean(score.returns))))


@pytest.mark.parametrize("inputs", ["z", "zh", "zch"])
def test_the_oracle_re_expressed_on_the_standardised_state_acts_as_on_the_raw_one(inputs):
    rng = np.random.default_rng(4)
    states = {0: rng.normal(3.0, 5.0, (6, 4)).astype(np.float32), 1: rng.normal(-1.0, 0.5, (6, 4)).astype(np.float32)}
    latents = state_model.StateLatents.standardised(states, np.array([0, 1]))
    oracle = rng.normal(size=2 * 4 + 2)  # two actions: W (2, 4) row by row, then b (2,)
    form = {"z_size": 4, "hidden_size": 3, "action_size": 2, "inputs": inputs, "bias": True}
    flat = state_model.oracle_as_state_controller(oracle, latents, form)
    raw = rng.normal(size=(5, 4))
    expected = np.tanh(raw @ oracle[:8].reshape(2, 4).T + oracle[8:])
    standardised = torch.tensor(np.stack([latents.standardise(s) for s in raw.astype(np.float32)]))
    memory = torch.tensor(rng.normal(size=(5, 3)), dtype=torch.float32)  # weighted 0: any h, c
    acted = population_actions(torch.tensor(flat, dtype=torch.float32).expand(5, -1), standardised, memory, 2,
                               inputs, memory)
    np.testing.assert_allclose(acted.numpy(), expected, atol=1e-5)
    assert state_model.oracle_as_state_controller(oracle[:8], latents, form | {"bias": False}) is None


def test_c_on_the_state_alone_and_the_oracle_in_the_dream(collected, tmp_path):
    paths = _own_copy(collected[1], tmp_path)
    config = smoke_config("evaluate.episodes=2", "mdnrnn.epochs=2", "controller.inputs=z",
                          "controller.memory_step_scale=0.01")
    oracle = [0.5, 1.0, 2.0, 0.3, 0.4, -1.0]  # any C of the oracle's form on the 5 numbers of cartpole's state
    Score.of("oracle", np.array([900.0, 1000.0]), [1, 2], 10, parameters=oracle).write(paths.score("oracle"))
    try:
        about = Score.read(state_model.run(config, paths, progress=False)).about
    finally:
        paths.score("oracle").unlink()
    assert len(about["parameters"]) == 5 + 1 and about["inputs"] == "z"  # C reads the state alone
    assert about["oracle_real"] == 950.0
    assert np.isfinite(about["oracle_dream"]) and about["oracle_dream"] != about["zero_action_dream"]


def test_linear_r2_is_one_for_an_affine_map_and_near_zero_for_noise():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 3))
    exact = x @ np.array([[1.0], [-2.0], [0.5]]) + 4.0
    noise = rng.normal(size=(400, 1))
    r2 = state_model.linear_r2(x[:300], np.c_[exact, noise][:300], x[300:], np.c_[exact, noise][300:])
    assert r2[0] == pytest.approx(1.0, abs=1e-9)
    assert -0.1 < r2[1] < 0.05  # no linear map of x says anything about independent noise
    # By hand: y = x on two training points, tested on one point off the line.
    hand = state_model.linear_r2(np.array([[0.0], [2.0]]), np.array([[0.0], [2.0]]), np.array([[1.0]]),
                                 np.array([[3.0]]))
    # predicted 1, true 3: error 4; the training mean 1 is off by 2 squared = 4: R^2 = 1 - 4 / 4 = 0
    assert hand[0] == pytest.approx(0.0)


def test_an_env_without_a_true_state_is_skipped(tmp_path):
    config = smoke_config("env.id=gym:CarRacing-v3")
    assert state_model.run(config, PipelinePaths(tmp_path / "x"), progress=False) is None


def _m_weights(paths: PipelinePaths) -> dict[str, torch.Tensor]:
    return torch.load(paths.state_model_m, weights_only=False)["model"]


@pytest.mark.slow
def test_m_resumes_where_it_stopped_and_is_reused_by_other_c_settings(collected, monkeypatch, tmp_path, caplog):
    config, collected_paths = collected
    paths = PipelinePaths(tmp_path / "smoke")
    paths.ensure()
    paths.rollouts.write_bytes(collected_paths.rollouts.read_bytes())
    straight = PipelinePaths(tmp_path / "straight")
    straight.ensure()
    straight.rollouts.write_bytes(collected_paths.rollouts.read_bytes())
    state_model.run(smoke_config("evaluate.episodes=1", "mdnrnn.epochs=4"), straight, progress=False)

    trained = []
    original = state_model.train_epoch

    def counted(model, optimizer, sequences, epoch, *rest):
        trained.append(epoch)
        return original(model, optimizer, sequences, epoch, *rest)

    monkeypatch.setattr(state_model, "train_epoch", counted)
    state_model.run(smoke_config("evaluate.episodes=1", "mdnrnn.epochs=2"), paths, progress=False)
    with caplog.at_level("INFO", logger="worldmodels.core.training"):
        state_model.run(smoke_config("evaluate.episodes=1", "mdnrnn.epochs=4"), paths, progress=False)
    assert trained == [1, 2, 3, 4]  # the second run went on from epoch 2
    assert "resuming state-model M after epoch 2" in caplog.text  # its epochs, though the log's key is "step"
    for name, weight in _m_weights(straight).items():  # as if trained 4 epochs in one go
        torch.testing.assert_close(_m_weights(paths)[name], weight, atol=1e-5, rtol=1e-4)
    # Other C settings: M is read back, not trained again; its held-out losses stay in the log once each.
    state_model.run(smoke_config("evaluate.episodes=1", "mdnrnn.epochs=4", "controller.seed=3"), paths,
                    progress=False)
    assert trained == [1, 2, 3, 4]
    m_lines = [line for line in paths.metrics("state_model").read_text().splitlines() if '"M"' in line]
    assert len(m_lines) == 2  # epochs 2 and 4
    # Fewer epochs than M has: the M asked for is trained again, from scratch.
    state_model.run(smoke_config("evaluate.episodes=1", "mdnrnn.epochs=2"), paths, progress=False)
    assert trained == [1, 2, 3, 4, 1, 2]


def test_restarts_keep_the_search_the_dream_scores_best(collected, tmp_path):
    config, collected_paths = collected
    paths = PipelinePaths(tmp_path / "smoke")
    paths.ensure()
    paths.rollouts.write_bytes(collected_paths.rollouts.read_bytes())
    common = ("evaluate.episodes=2", "mdnrnn.epochs=2", "controller.inputs=z", "controller.generations=2")
    single = [Score.read(state_model.run(smoke_config(*common, f"controller.seed={seed}"), paths, progress=False))
              for seed in (5, 6)]
    about = Score.read(state_model.run(smoke_config(*common, "controller.seed=5", "controller.restarts=2"), paths,
                                       progress=False)).about
    chosen = about["restart_chosen"]
    assert chosen == int(np.argmax(about["restart_dream_means"]))
    assert about["dream_mean"] == max(about["restart_dream_means"])
    # Search k of controller.seed=5 is the single search of controller.seed=5 + k.
    np.testing.assert_allclose(about["parameters"], single[chosen].about["parameters"], rtol=1e-6)
    assert about["restart_real_means"] == pytest.approx([s.mean for s in single])


def test_the_searches_beside_reality_correlate_as_computed_by_hand():
    shown = searches_beside_reality([970.0, 435.0, 756.0], 0, [999.6, 477.2, 783.9])
    dreams, reals = np.array([970.0, 435.0, 756.0]), np.array([999.6, 477.2, 783.9])
    by_hand = ((dreams - dreams.mean()) * (reals - reals.mean())).sum() / np.sqrt(
        ((dreams - dreams.mean()) ** 2).sum() * ((reals - reals.mean()) ** 2).sum())
    assert shown["restart_dream_real_correlation"] == pytest.approx(by_hand) and 0.99 < by_hand < 1.0
    assert np.isnan(searches_beside_reality([1.0, 1.0], 0, [3.0, 4.0])["restart_dream_real_correlation"])
