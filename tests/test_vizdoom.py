"""The ViZDoom adapter: the action's thirds, the paper's frames, the cap, and its settings' errors."""

import numpy as np
import pytest

from worldmodels.config import ConfigError, EnvConfig, load_pipeline
from worldmodels.envs import make_env
from worldmodels.envs.base import crop_and_resize
from worldmodels.envs.vizdoom_env import NEGATIVE_BUTTON, NO_BUTTON, POSITIVE_BUTTON, action_third

pytest.importorskip("vizdoom")

TAKE_COVER = EnvConfig(id="vizdoom:take_cover", crop=(0, 200), max_episode_steps=2100)


@pytest.mark.parametrize("action, button", [(-1.0, NEGATIVE_BUTTON), (-0.34, NEGATIVE_BUTTON), (-0.33, NO_BUTTON),
                                            (0.0, NO_BUTTON), (0.33, NO_BUTTON), (0.34, POSITIVE_BUTTON),
                                            (1.0, POSITIVE_BUTTON)])
def test_each_third_of_the_action_presses_its_button(action, button):
    assert action_third(action) == button


@pytest.fixture(scope="module")
def take_cover():
    """One ViZDoom game for the module's tests (an env, not a smoke run's artifacts)."""
    env = make_env(TAKE_COVER)
    yield env
    env.close()


def test_the_game_receives_left_right_or_nothing_from_the_thirds(take_cover):
    take_cover.reset(0)
    pressed = {}
    for action in (-0.9, 0.0, 0.9):
        take_cover.step(np.array([action]))
        buttons = take_cover._game.get_available_buttons()
        pressed[action] = [b.name for b, down in zip(buttons, take_cover._game.get_last_action(), strict=True) if down]
    assert pressed == {-0.9: ["MOVE_LEFT"], 0.0: [], 0.9: ["MOVE_RIGHT"]}


def test_frames_are_the_top_five_sixths_resized_to_64(take_cover):
    frame = take_cover.reset(0)
    screen = take_cover._game.get_state().screen_buffer
    assert screen.shape == (240, 320, 3) and frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, crop_and_resize(screen[:200], None, 64))
    assert not np.array_equal(frame, crop_and_resize(screen, None, 64)), "the bottom sixth must be cut"


def test_an_episode_is_reproducible_from_its_seed_and_the_reward_is_frames_survived(take_cover):
    def play(seed):
        frames, rewards = [take_cover.reset(seed)], []
        rng = np.random.default_rng(1)
        while True:
            result = take_cover.step(rng.uniform(-1, 1, 1))
            frames.append(result.frame)
            rewards.append(result.reward)
            if result.terminated or result.truncated:
                return np.stack(frames), np.array(rewards), result

    frames, rewards, last = play(3)
    again, _, _ = play(3)
    np.testing.assert_array_equal(frames, again)
    np.testing.assert_array_equal(rewards, 1.0)  # the scenario's living reward: one per tic survived
    assert last.terminated and not last.truncated and len(rewards) < 2100
    with pytest.raises(RuntimeError, match="after the episode ended"):  # ViZDoom itself would pay on
        take_cover.step(np.zeros(1))


def test_the_cap_truncates_rather_than_terminates():
    env = make_env(EnvConfig(id="vizdoom:take_cover", crop=(0, 200), max_episode_steps=5))
    try:
        env.reset(0)
        results = [env.step(np.zeros(1)) for _ in range(5)]
    finally:
        env.close()
    assert [r.truncated for r in results] == [False] * 4 + [True]
    assert not any(r.terminated for r in results)


def test_crop_and_resize_keeps_the_rows_asked_for():
    image = np.zeros((240, 320, 3), np.uint8)
    image[:200] = 255
    np.testing.assert_array_equal(crop_and_resize(image, (0, 200), 64), 255)
    with pytest.raises(ValueError, match="env.crop: rows 0:300 exceed the frame height 240"):
        crop_and_resize(image, (0, 300), 64)


def test_bad_vizdoom_settings_are_named():
    with pytest.raises(ValueError, match="unknown ViZDoom scenario 'nope'.*take_cover"):
        make_env(EnvConfig(id="vizdoom:nope"))
    with pytest.raises(ValueError, match="buttons .* only scenarios with one opposed pair"):
        make_env(EnvConfig(id="vizdoom:defend_the_center"))
    with pytest.raises(ConfigError, match="env.difficulty: is a ViZDoom setting"):
        EnvConfig(id="dmc:cartpole-balance", difficulty=3)
    with pytest.raises(ConfigError, match="env.difficulty: must be in 1..5"):
        EnvConfig(id="vizdoom:take_cover", difficulty=7)


@pytest.mark.parametrize("name", ["takecover_rounds", "takecover_paper"])
def test_the_takecover_pipelines_controller_has_the_papers_1088_parameters(name):
    """The paper's Doom C is tanh(W [z, c, h]) with no bias: 1,088 parameters (z 64, M's LSTM 512)."""
    from worldmodels.models.controller import LinearController

    config = load_pipeline(name)
    controller = LinearController(config.vae.z_size, config.mdnrnn.hidden_size, action_size=1,
                                  inputs=config.controller.inputs, bias=config.controller.bias)
    assert controller.num_parameters == 1088


SMOKE_TAKECOVER = ("env.id=vizdoom:take_cover", "env.crop=[0, 200]", "env.action_repeat=1",
                   "env.max_episode_steps=40", "controller.inputs=zch", "controller.bias=false",
                   "controller.dream_reward=survival", "controller.dream_steps=40", "evaluate.episodes=3",
                   "mdnrnn.openloop_steps=10", "dreamer.eval_episodes=1")


@pytest.mark.slow
def test_takecover_runs_through_collect_v_m_c_evaluate_and_dreamer(tmp_path):
    import json

    from tests.conftest import smoke_config
    from worldmodels.artifacts import load_controller
    from worldmodels.core.paths import PipelinePaths
    from worldmodels.stages import collect, dreamer, encode, evaluate, mdnrnn, oracle, report, vae
    from worldmodels.stages import controller as controller_stage

    config = smoke_config(*SMOKE_TAKECOVER)
    paths = PipelinePaths(tmp_path / "smoke")
    for stage in (collect, vae, encode, mdnrnn, controller_stage, evaluate, dreamer):
        stage.run(config, paths, progress=False)
    assert oracle.run(config, paths, progress=False) is None  # no true state: no oracle, and no error
    controller, _ = load_controller(paths.controller)
    assert (controller.inputs, controller.bias, controller.num_parameters) == ("zch", False, 32 + 2 * 32)
    scores = {agent: json.loads(paths.score(agent).read_text())
              for agent in ("worldmodel", "random", "uniform_random", "zero", "dreamer")}
    for agent, score in scores.items():
        # Survival: one point per tic, at least a tic, at most the cap.
        assert all(1 <= r <= 40 and r == int(r) for r in score["returns"]), agent
    for video in ("dream_vs_real", "controller_in_dream"):
        assert paths.video(video).stat().st_size > 0
    page = report.run(config, paths, progress=False).read_text()
    assert "true-state linear oracle" not in page and "uniform random policy" in page
    assert "1092 +- 556" in page  # the paper's TakeCover table, row for row with ours


def test_the_engine_leaves_nothing_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = make_env(TAKE_COVER)
    env.reset(0)
    env.close()
    assert list(tmp_path.iterdir()) == []


def test_the_doom_engine_does_not_inherit_an_open_hdf5_files_lock(tmp_path):
    import h5py

    path = tmp_path / "open.h5"
    handle = h5py.File(path, "w")
    env = make_env(TAKE_COVER)  # starts the engine's process while the file is open
    try:
        handle.close()
        with h5py.File(path, "r"):  # fails with "unable to lock file" if the engine holds it
            pass
    finally:
        env.close()
