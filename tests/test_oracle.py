import json

import numpy as np
import pytest

from worldmodels.config import EnvConfig, load_pipeline
from worldmodels.core.paths import PipelinePaths
from worldmodels.envs import make_env
from worldmodels.stages import oracle
from worldmodels.stages.oracle import state_policy_return


def test_the_true_state_path_steps_like_the_pixel_path():
    env = make_env(EnvConfig(id="dmc:cartpole-balance", action_repeat=8, max_episode_steps=5))
    env.reset(3)
    state_rewards = [env.step_state(np.array([0.3]))[1] for _ in range(5)]
    env.reset(3)
    pixel_rewards = [env.step(np.array([0.3])).reward for _ in range(5)]
    assert env.state().shape == (5,)  # cart position, cos, sin, and the two velocities
    env.close()
    np.testing.assert_allclose(state_rewards, pixel_rewards)


def test_a_zero_state_controller_is_the_zero_action():
    env = make_env(EnvConfig(id="dmc:cartpole-balance", action_repeat=8, max_episode_steps=10))
    by_controller, steps = state_policy_return(env, np.zeros(6), seed=4)
    env.reset(4)
    by_hand = sum(env.step(np.zeros(1)).reward for _ in range(10))
    env.close()
    assert steps == 10 and by_controller == pytest.approx(by_hand)


def test_the_oracle_stage_writes_a_score_on_the_evaluation_seeds(tmp_path):
    config = load_pipeline("smoke")
    paths = PipelinePaths(tmp_path / "smoke")
    oracle.run(config, paths, progress=False)
    score = json.loads(paths.score("oracle").read_text())
    assert len(score["returns"]) == config.evaluate.episodes
    assert score["env_steps_of_data"] == 2 * 4 * 20 * 8  # generations x popsize x steps x repeat
    assert len(score["parameters"]) == 6


@pytest.mark.slow
def test_the_oracle_in_worker_processes_finds_what_it_finds_in_one(tmp_path):
    scores = []
    for workers in (0, 2):
        config = load_pipeline("smoke", [f"evaluate.workers={workers}", "evaluate.episodes=3"])
        paths = PipelinePaths(tmp_path / str(workers) / "smoke")
        oracle.run(config, paths, progress=False)
        scores.append(json.loads(paths.score("oracle").read_text()))
    for key in ("returns", "seeds", "parameters", "env_steps_of_data"):
        assert scores[0][key] == scores[1][key], key
