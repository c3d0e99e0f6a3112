"""The Ray backend: the same files and scores as the local pool with any number of workers, and a dead
worker retried, then named. A local Ray of 2 CPUs is started once for this module."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from tests.conftest import assert_same_rollouts, smoke_config
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.store import RolloutReader
from worldmodels.envs import make_exploration_policy
from worldmodels.evaluation.baselines import ZeroPolicy
from worldmodels.evaluation.episodes import evaluate_policy, evaluation_seeds, play_in_workers
from worldmodels.pools.backend import open_pool, use_backend
from worldmodels.pools.workers import WorkerError
from worldmodels.stages import collect

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[dev]')")

# Each test starts Ray workers (a local Ray of 2 CPUs for the module).
# Marked ray: `make test` runs these apart from the parallel tests, since two Rays started at
# once on one machine join each other.
pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """A local Ray of 2 CPUs for this module alone (no smoke artifacts)."""
    from worldmodels.pools.ray_cluster import connect

    connect(None, num_cpus=2)
    yield
    use_backend("local")
    ray.shutdown()


def _collect(data_dir, *overrides):
    config = smoke_config("collect.episodes=5", *overrides)
    return collect.run(config, PipelinePaths.for_pipeline(data_dir, config.name), progress=False)


@pytest.fixture(scope="module")
def local_file(tmp_path_factory):
    """Its own, not the shared smoke run's rollouts: 5 episodes, the local pool's file Ray's must equal."""
    return _collect(tmp_path_factory.mktemp("local"), "collect.workers=0", "runtime.backend=local")


@pytest.mark.parametrize("workers", [1, 2])
def test_collect_on_ray_writes_the_same_file_as_the_local_pool(local_file, tmp_path, workers):
    on_ray = _collect(tmp_path, f"collect.workers={workers}", "runtime.backend=ray")
    with RolloutReader(local_file) as a, RolloutReader(on_ray) as b:
        assert a.fingerprint == b.fingerprint
    assert_same_rollouts(local_file, on_ray)


def test_scores_on_ray_are_the_local_scores():
    config = smoke_config()
    seeds = evaluation_seeds(0, 5)
    policy = make_exploration_policy("random", 1)
    use_backend("local")
    local = evaluate_policy(config.env, policy, seeds, batch=2, workers=2)
    use_backend("ray")
    try:
        on_ray = evaluate_policy(config.env, policy, seeds, batch=2, workers=2)
        zero = evaluate_policy(config.env, ZeroPolicy(1), seeds, batch=2, workers=1)
    finally:
        use_backend("local")
    np.testing.assert_array_equal(local, on_ray)
    np.testing.assert_array_equal(zero, evaluate_policy(config.env, ZeroPolicy(1), seeds, batch=2, workers=0))


def test_episodes_played_by_ray_workers_are_those_played_here():
    config = smoke_config()
    seeds = evaluation_seeds(3, 5)
    policy = make_exploration_policy("held_random", 1)
    here = list(play_in_workers(config.env, policy, seeds, seeds, batch=2, workers=0))
    use_backend("ray")
    try:
        there = list(play_in_workers(config.env, policy, seeds, seeds, batch=2, workers=2))
    finally:
        use_backend("local")
    assert len(here) == len(there) == 5
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        np.testing.assert_array_equal(a.actions, b.actions)


def test_real_env_fitness_on_ray_is_the_local_fitness():
    from worldmodels.models.controller import LinearController
    from worldmodels.models.mdnrnn import MDNRNN
    from worldmodels.models.vae import ConvVAE
    from worldmodels.vmc.real_fitness import real_population_fitness

    torch.manual_seed(0)
    vae, model = ConvVAE(8).eval(), MDNRNN(8, 1, 16, 2).eval()
    args = {"z_size": 8, "hidden_size": 16, "action_size": 1}
    population = np.random.default_rng(0).normal(0, 1, (3, LinearController(**args).num_parameters))
    env = smoke_config().env
    use_backend("local")
    local = real_population_fitness(env, vae, model, args, population, [5, 6], workers=2)
    use_backend("ray")
    try:
        on_ray = real_population_fitness(env, vae, model, args, population, [5, 6], workers=2)
    finally:
        use_backend("local")
    np.testing.assert_array_equal(local[0], on_ray[0])
    assert local[1] == on_ray[1]


def _remember_nothing() -> None:
    pass


def _slow_square(item: int) -> int:
    time.sleep(0.3)
    return item * item


def _die_on_three(item: int) -> int:
    if item == 3:
        os._exit(1)  # the worker process dies, as a segfault or the OOM killer would end it
    return item


def test_a_killed_ray_worker_is_replaced_and_its_items_played_again(caplog):
    use_backend("ray")
    try:
        with open_pool(2, _remember_nothing) as pool:
            results = []
            for result in pool.map(_slow_square, range(12)):
                if len(results) == 1:
                    os.kill(pool.worker_pids()[0], signal.SIGKILL)
                results.append(result)
    finally:
        use_backend("local")
    assert results == [i * i for i in range(12)]
    assert "a worker died while running" in caplog.text


def test_an_item_that_kills_every_worker_is_named_after_the_retries():
    use_backend("ray")
    started = time.monotonic()
    try:
        with pytest.raises(WorkerError, match=r"died 4 times while running item 3"):
            with open_pool(2, _remember_nothing) as pool:
                list(pool.map(_die_on_three, range(6), describe=lambda item: f"item {item}"))
    finally:
        use_backend("local")
    assert time.monotonic() - started < 120


def test_an_error_raised_by_the_work_is_raised_as_it_was_not_retried(tmp_path):
    with pytest.raises(WorkerError, match="simulated env failure"):
        _collect(tmp_path, "env.id=gym:tests.faulty_envs:Raising-v0", "collect.workers=2", "runtime.backend=ray")
    use_backend("local")


def test_two_pools_of_one_command_at_once_do_not_wait_for_each_other():
    """C's periodic real-env check opens a pool while the fitness workers live: on a cluster the first pool
    fills, the second must still run (actors hold no CPU while they live)."""
    import threading

    outcome = {}

    def both() -> None:
        with open_pool(2, _remember_nothing) as first, open_pool(2, _remember_nothing) as second:
            outcome["second"] = list(second.map(_slow_square, range(4)))
            outcome["first"] = list(first.map(_slow_square, range(4)))

    use_backend("ray")
    try:
        worker = threading.Thread(target=both, daemon=True)
        worker.start()
        worker.join(timeout=180)
    finally:
        use_backend("local")
    assert outcome == {"second": [0, 1, 4, 9], "first": [0, 1, 4, 9]}, "the second pool waited for the first"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_a_collect_on_ray_with_its_exit_code_and_the_resume_completes_the_file(
        local_file, tmp_path, sig):
    import subprocess
    import sys

    from tests.test_faults import session_processes

    # The driver joins this module's Ray (two Rays started on one machine at once join each other anyway).
    env = {**os.environ, "MUJOCO_GL": "egl", "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    args = [sys.executable, "-m", "worldmodels.cli", "collect", "-p", "smoke", "--set", "collect.episodes=200",
            "--set", "collect.workers=2", "--set", "runtime.backend=ray", "--data-dir", str(tmp_path), "--no-progress"]
    driver = subprocess.Popen(args, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env=env)
    for line in driver.stdout:
        if "committed episode 3/" in line:
            break
    sent = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(driver.pid, sig)
    else:
        driver.send_signal(sig)
    # Ray's own handler would exit 1 with a stack dump; its wait would turn the stop into SystemExit(1).
    assert driver.wait(30) == 128 + sig
    assert time.monotonic() - sent < 15
    deadline = time.monotonic() + 10
    while session_processes(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session_processes(driver.pid) == []
    resumed = _collect(tmp_path, "collect.workers=2", "runtime.backend=ray")  # tops up to 5 if it stopped short
    with RolloutReader(local_file) as local, RolloutReader(resumed) as stopped:
        assert 5 <= stopped.num_episodes < 200
        for index in range(5):  # what was committed before the stop is what the local pool plays
            np.testing.assert_array_equal(local.episode(index).frames, stopped.episode(index).frames)
            np.testing.assert_array_equal(local.episode(index).actions, stopped.episode(index).actions)
