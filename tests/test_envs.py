import numpy as np
import pytest

from worldmodels.config import EnvConfig
from worldmodels.envs import make_env, make_exploration_policy


def _play(env, seed, actions):
    frames, rewards = [env.reset(seed)], []
    for action in actions:
        result = env.step(action)
        frames.append(result.frame)
        rewards.append(result.reward)
    return np.stack(frames), np.array(rewards)


@pytest.fixture(scope="module")
def cartpole():
    """One env of 6 steps for the module's tests (an env, not a smoke run's artifacts)."""
    env = make_env(EnvConfig(id="dmc:cartpole-balance", action_repeat=8, max_episode_steps=6))
    yield env
    env.close()


def test_dmc_frames_are_uint8_64x64x3_and_deterministic_under_a_seed(cartpole):
    actions = np.random.default_rng(0).uniform(-1, 1, (5, cartpole.action_size))
    frames_a, rewards_a = _play(cartpole, 11, actions)
    frames_b, rewards_b = _play(cartpole, 11, actions)
    frames_c, _ = _play(cartpole, 12, actions)
    assert frames_a.shape == (6, 64, 64, 3) and frames_a.dtype == np.uint8
    assert cartpole.action_size == 1
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)
    assert not np.array_equal(frames_a[0], frames_c[0]), "another seed must start elsewhere"
    assert not np.array_equal(frames_a[0], frames_a[-1]), "the pole and cart must move"


def test_dmc_action_repeat_sums_the_same_rewards_as_dm_control_itself(cartpole):
    """The fast stepping path must give exactly what dm_control's Environment.step gives."""
    from dm_control import suite

    reference = suite.load("cartpole", "balance")
    actions = np.random.default_rng(1).uniform(-1, 1, (4, 1))
    _, rewards = _play(cartpole, 5, actions)
    reference.task.random.seed(5)
    reference.reset()
    expected = []
    for action in actions:
        expected.append(sum(reference.step(action).reward for _ in range(8)))
    np.testing.assert_allclose(rewards, expected, rtol=1e-12)
    assert np.all((rewards > 0) & (rewards <= 8))


def test_dmc_episode_is_truncated_at_its_step_limit(cartpole):
    cartpole.reset(0)
    flags = [cartpole.step(np.zeros(1)).truncated for _ in range(6)]
    assert flags == [False] * 5 + [True]


def test_dmc_full_episode_has_the_suite_length_divided_by_the_repeat():
    env = make_env(EnvConfig(id="dmc:cartpole-balance", action_repeat=8))
    assert env.max_episode_steps == 125
    env.close()


def test_carracing_is_cropped_and_resized_and_deterministic():
    config = EnvConfig(id="gym:CarRacing-v3", crop=(0, 84), max_episode_steps=60)
    env = make_env(config)
    assert env.action_size == 3
    actions = np.tile([0.0, 0.5, -1.0], (3, 1))
    frames_a, rewards_a = _play(env, 3, actions)
    frames_b, rewards_b = _play(env, 3, actions)
    env.close()
    assert frames_a.shape == (4, 64, 64, 3) and frames_a.dtype == np.uint8
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(rewards_a, rewards_b)


def test_any_gym_env_that_renders_rgb_arrays_gives_frames():
    env = make_env(EnvConfig(id="gym:Pendulum-v1", action_repeat=2))
    frame = env.reset(0)
    result = env.step(np.array([1.0]))
    env.close()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    assert result.frame.shape == (64, 64, 3)
    assert result.reward < 0


def test_discrete_gym_envs_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="Discrete action space"):
        make_env(EnvConfig(id="gym:CartPole-v1"))


def test_a_crop_past_the_frame_is_refused():
    env = make_env(EnvConfig(id="gym:CarRacing-v3", crop=(0, 200)))
    with pytest.raises(ValueError, match="env.crop"):
        env.reset(0)
    env.close()


@pytest.mark.parametrize("name", ["random", "held_random", "brownian"])
def test_exploration_policies_stay_in_bounds_and_repeat_under_a_seed(name):
    policy = make_exploration_policy(name, action_size=2)
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    policy.reset([1, 2, 3])
    first = np.stack([policy.act(frames) for _ in range(50)])
    policy.reset([1, 2, 3])
    second = np.stack([policy.act(frames) for _ in range(50)])
    assert first.shape == (50, 3, 2) and first.dtype == np.float32
    assert np.all(np.abs(first) <= 1)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[:, 0], first[:, 1]), "each env follows its own seed"


def test_held_random_holds_each_action_between_hold_min_and_hold_max_steps():
    policy = make_exploration_policy("held_random", 1, hold_min=3, hold_max=5)
    policy.reset([0])
    actions = np.array([policy.act(np.zeros((1, 8, 8, 3)))[0, 0] for _ in range(400)])
    changes = np.flatnonzero(np.diff(actions) != 0) + 1
    runs = np.diff(np.concatenate([[0], changes]))
    assert runs.min() >= 3 and runs.max() <= 5


def test_brownian_moves_in_small_steps():
    policy = make_exploration_policy("brownian", 1, brownian_std=0.05)
    policy.reset([0])
    actions = np.array([policy.act(np.zeros((1, 8, 8, 3)))[0, 0] for _ in range(200)])
    assert np.abs(np.diff(actions)).max() < 0.3
    assert np.abs(np.diff(actions)).mean() > 0.01


def test_action_scale_gives_each_episode_its_own_strength():
    frames = np.zeros((64, 8, 8, 3), np.uint8)
    policy = make_exploration_policy("random", 1, scale_min=0.0)
    policy.reset(list(range(64)))
    peaks = np.abs(np.stack([policy.act(frames)[:, 0] for _ in range(200)])).max(axis=0)
    # Full-strength uniform actions peak near 1 over 200 steps; scaled episodes peak at their scale.
    assert peaks.min() < 0.2 and peaks.max() > 0.9
    assert np.quantile(peaks, 0.5) < 0.7


def test_no_action_scale_leaves_the_random_stream_unchanged():
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    plain, unscaled = make_exploration_policy("held_random", 1), make_exploration_policy("held_random", 1, scale_min=1)
    plain.reset([5, 6])
    unscaled.reset([5, 6])
    first_plain = np.stack([plain.act(frames) for _ in range(50)])
    first_unscaled = np.stack([unscaled.act(frames) for _ in range(50)])
    np.testing.assert_array_equal(first_plain, first_unscaled)
    # The first action is the seed's first uniform draw: no scale was drawn before it.
    assert first_plain[0, 0, 0] == np.float32(np.random.default_rng(5).uniform(-1, 1, 1)[0])
