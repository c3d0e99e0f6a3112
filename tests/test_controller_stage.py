import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import copy_trained_m, smoke_config
from worldmodels.config import load_pipeline
from worldmodels.core.checkpoint import load_checkpoint
from worldmodels.core.es import CMAES
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.evaluation.baselines import ZeroPolicy
from worldmodels.evaluation.episodes import CHECK_STREAM, Score, evaluate_policy, evaluation_seeds
from worldmodels.evaluation.rollout import episode_seeds
from worldmodels.stages import controller as controller_stage
from worldmodels.stages import evaluate
from worldmodels.vmc.env_budget import world_model_env_steps


def _config(*overrides):
    return smoke_config(*overrides)


@pytest.fixture
def trained_m(smoke_run):
    """The smoke pipeline's rollouts, V, latents and M (the session's shared run); tests copy them."""
    return smoke_run.through("train-mdnrnn")


@pytest.mark.slow
def test_a_killed_evolution_resumes_at_its_generation(trained_m, tmp_path):
    paths = copy_trained_m(trained_m, tmp_path)
    controller_stage.run(_config("controller.generations=2"), paths, progress=False)
    saved = CMAES.from_state(load_checkpoint(paths.last_checkpoint("controller"), "controller")["strategy"])
    assert saved.generation == 2
    controller_stage.run(_config("controller.generations=3"), paths, progress=False)
    records = MetricsLog(paths.metrics("controller"), step_key="generation").read()
    assert [r["generation"] for r in records] == [1, 2, 3]
    assert all(r["worst"] <= r["mean"] <= r["best"] for r in records)
    assert "eval/real_mean" in records[1] and "eval/dream_mean" in records[2]
    Image.open(paths.figure("cmaes_curve")).verify()


@pytest.mark.slow
def test_restarts_keep_the_search_the_dream_scores_best_and_each_search_resumes(trained_m, tmp_path):
    """Search k of controller.seed=3 is the single search of seed 3 + k; the dream's best is controller.pt;
    each search's real mean is the evaluate stage's score of it; more generations continue each search."""
    paths = copy_trained_m(trained_m, tmp_path / "searches")
    config = _config("controller.generations=2", "controller.seed=3", "controller.restarts=2")
    controller_stage.run(config, paths, progress=False)
    searches = json.loads(paths.score("controller_searches").read_text())
    chosen = searches["restart_chosen"]
    assert chosen == int(np.argmax(searches["restart_dream_means"])) and searches["restart_seeds"] == [3, 4]
    found = [load_checkpoint(paths.root / f"controller_search{k + 1}.pt", "controller")["parameters"] for k in (0, 1)]
    assert not np.allclose(found[0].numpy(), found[1].numpy())
    np.testing.assert_array_equal(load_checkpoint(paths.controller, "controller")["parameters"], found[chosen])
    for k in (0, 1):
        single = copy_trained_m(trained_m, tmp_path / f"single{k}")
        controller_stage.run(_config("controller.generations=2", f"controller.seed={3 + k}"), single, progress=False)
        np.testing.assert_allclose(load_checkpoint(single.controller, "controller")["parameters"], found[k],
                                   rtol=1e-6)
        if k == chosen:
            evaluate.run(_config("controller.generations=2", f"controller.seed={3 + k}"), single, progress=False)
            assert Score.read(single.score("worldmodel")).mean == pytest.approx(searches["restart_real_means"][k])
    chosen_log = MetricsLog(paths.metrics("controller"), step_key="generation").read()
    assert chosen_log == MetricsLog(paths.metrics(f"controller_search{chosen + 1}"), step_key="generation").read()
    for main, searched in (("cmaes_curve.png", f"cmaes_curve_search{chosen + 1}.png"),
                           ("controller_in_dream.gif", f"controller_in_dream_search{chosen + 1}.gif")):
        assert (paths.figures_dir / main).read_bytes() == (paths.figures_dir / searched).read_bytes()
    (paths.figures_dir / f"controller_in_dream_search{chosen + 1}.gif").unlink()  # a search stopped before its GIF
    (paths.figures_dir / "controller_in_dream.gif").unlink()
    controller_stage.run(config, paths, progress=False)
    Image.open(paths.video("controller_in_dream")).verify()  # drawn again from the pick
    controller_stage.run(_config("controller.generations=3", "controller.seed=3", "controller.restarts=2"), paths,
                         progress=False)
    for k in (0, 1):
        records = MetricsLog(paths.metrics(f"controller_search{k + 1}"), step_key="generation").read()
        assert [r["generation"] for r in records] == [1, 2, 3]


@pytest.mark.slow
def test_a_c_with_a_hidden_layer_is_evolved_saved_and_scored(trained_m, tmp_path):
    """controller.layer_size reaches the checkpoint: the saved C has the hidden layer's parameters, acts as
    the population form of its flat vector does, and the evaluate stage plays it."""
    import torch

    from worldmodels.artifacts import load_controller
    from worldmodels.models.controller import population_actions

    paths = copy_trained_m(trained_m, tmp_path)
    config = _config("controller.generations=2", "controller.layer_size=3")
    controller_stage.run(config, paths, progress=False)
    controller, checkpoint = load_controller(paths.controller)
    inputs = controller.z_size + controller.hidden_size  # [z, h]
    assert controller.layer_size == 3 and len(checkpoint["parameters"]) == 3 * inputs + 3 + 3 + 1
    z, h = torch.randn(4, controller.z_size), torch.randn(4, controller.hidden_size)
    flat = checkpoint["parameters"][None].expand(4, -1)
    torch.testing.assert_close(controller(z, h), population_actions(flat, z, h, 1, "zh", layer_size=3))
    evaluate.run(config, paths, progress=False)
    assert len(Score.read(paths.score("worldmodel")).returns) == config.evaluate.episodes


def test_iterate_refuses_restarts(tmp_path):
    from worldmodels.stages import iterate

    with pytest.raises(ValueError, match=r"controller\.restarts=2"):
        iterate.run(_config("controller.restarts=2", "iterate.iterations=1"), PipelinePaths(tmp_path / "x"))


@pytest.mark.slow
def test_an_evolution_stops_where_the_population_reaches_stop_at_and_stays_stopped(trained_m, tmp_path):
    """A mean every population reaches stops the run after its first generation, with C scored and
    saved; asked again (more generations) it stays stopped; without ``stop_at`` it goes on."""
    paths = copy_trained_m(trained_m, tmp_path)
    controller_stage.run(_config("controller.generations=4", "controller.stop_at=-1e9"), paths, progress=False)
    records = MetricsLog(paths.metrics("controller"), step_key="generation").read()
    assert [r["generation"] for r in records] == [1] and "eval/dream_mean" in records[0]
    assert load_checkpoint(paths.controller, "controller")["generation"] == 1
    controller_stage.run(_config("controller.generations=6", "controller.stop_at=-1e9"), paths, progress=False)
    assert len(MetricsLog(paths.metrics("controller"), step_key="generation").read()) == 1
    controller_stage.run(_config("controller.generations=3"), paths, progress=False)
    records = MetricsLog(paths.metrics("controller"), step_key="generation").read()
    assert [r["generation"] for r in records] == [1, 2, 3]


@pytest.mark.slow
def test_a_search_that_leaves_doing_nothing_late_runs_until_its_mean_reaches_stop_at_score(trained_m, tmp_path,
                                                                                         monkeypatch):
    """A dream that pays the CMA mean 600 (doing nothing) at its first two checks and 1,000 from the third.
    A fixed 4 generations end on a 600 C. A cap of 20 with ``stop_at_score`` 990 runs on to the third
    check (generation 6), keeps that mean as C and stops; asked again it stays stopped."""
    def scripted(self, parameters, temperature, rollouts, seed):
        scripted.checks += 1
        return 600.0 if scripted.checks <= 2 else 1000.0

    monkeypatch.setattr(controller_stage.Evolution, "dream_score", scripted)
    checks = ("controller.eval_every=2", "controller.eval_real_episodes=0")
    scripted.checks = 0
    fixed = copy_trained_m(trained_m, tmp_path / "fixed")
    controller_stage.run(_config("controller.generations=4", *checks), fixed, progress=False)
    assert load_checkpoint(fixed.controller, "controller")["metrics"]["eval/dream_mean"] == 600.0

    scripted.checks = 0
    paths = copy_trained_m(trained_m, tmp_path / "adaptive")
    adaptive = _config("controller.generations=20", "controller.stop_at_score=990", *checks)
    controller_stage.run(adaptive, paths, progress=False)
    records = MetricsLog(paths.metrics("controller"), step_key="generation").read()
    assert [r["generation"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["eval/dream_mean"] for r in records if "eval/dream_mean" in r] == [600.0, 600.0, 1000.0]
    saved = load_checkpoint(paths.controller, "controller")
    last = CMAES.from_state(load_checkpoint(paths.last_checkpoint("controller"), "controller")["strategy"])
    assert saved["generation"] == 6 and last.generation == 6
    np.testing.assert_allclose(saved["parameters"].numpy(), last.mean.astype(np.float32))
    controller_stage.run(adaptive, paths, progress=False)
    assert len(MetricsLog(paths.metrics("controller"), step_key="generation").read()) == 6
    assert scripted.checks == 3  # the stopped run scored nothing again


@pytest.mark.slow
def test_checks_in_a_slightly_noisy_dream_pick_and_stop_where_m_s_most_likely_path_cannot(trained_m, tmp_path,
                                                                                          monkeypatch):
    """M's most likely path (temperature 0) pays every check's mean 1,000, the fragile early ones too;
    at the pick temperature the first two pay 600 and the third 950. Picked and stopped at temperature
    0, the search ends on its first check's C; with ``pick_temperature`` it runs on to the third check
    (generation 6), logs both scores and keeps that check's mean as C."""
    def scripted(self, parameters, temperature, rollouts, seed):
        if temperature == 0:
            return 1000.0
        scripted.checks += 1
        return 600.0 if scripted.checks <= 2 else 950.0

    monkeypatch.setattr(controller_stage.Evolution, "dream_score", scripted)
    settings = ("controller.temperature=0", "controller.eval_every=2", "controller.eval_real_episodes=0",
                "controller.generations=20", "controller.stop_at_score=900")
    scripted.checks = 0
    on_the_path = copy_trained_m(trained_m, tmp_path / "path")
    controller_stage.run(_config(*settings), on_the_path, progress=False)
    assert load_checkpoint(on_the_path.controller, "controller")["generation"] == 2

    paths = copy_trained_m(trained_m, tmp_path / "noisy")
    controller_stage.run(_config(*settings, "controller.pick_temperature=0.05"), paths, progress=False)
    checks = [r for r in MetricsLog(paths.metrics("controller"), step_key="generation").read() if "eval/pick_mean" in r]
    assert [(r["generation"], r["eval/dream_mean"], r["eval/pick_mean"]) for r in checks] == [
        (2, 1000.0, 600.0), (4, 1000.0, 600.0), (6, 1000.0, 950.0)]
    saved = load_checkpoint(paths.controller, "controller")
    last = CMAES.from_state(load_checkpoint(paths.last_checkpoint("controller"), "controller")["strategy"])
    assert saved["generation"] == 6 and last.generation == 6
    np.testing.assert_allclose(saved["parameters"].numpy(), last.mean.astype(np.float32))


@pytest.mark.slow
def test_restarts_pick_their_search_at_the_pick_temperature(trained_m, tmp_path, monkeypatch):
    """With ``pick_temperature``, the dreams that pick among ``restarts`` searches are at that temperature,
    as the checks within each search are; without it, at the search's own."""
    dream_score = controller_stage.Evolution.dream_score
    picks = []

    def recorded(self, parameters, temperature, rollouts, seed):
        if seed == self.config.controller.seed + 13:  # the pick among searches (checks use seed + 7)
            picks.append(temperature)
        return dream_score(self, parameters, temperature, rollouts, seed)

    monkeypatch.setattr(controller_stage.Evolution, "dream_score", recorded)
    settings = ("controller.generations=1", "controller.seed=3", "controller.restarts=2", "controller.temperature=0",
                "controller.eval_real_episodes=0", "evaluate.episodes=1")
    for pick in (None, 0.05):
        picks.clear()
        paths = copy_trained_m(trained_m, tmp_path / f"pick{pick}")
        controller_stage.run(_config(*settings, *([f"controller.pick_temperature={pick}"] if pick else [])), paths,
                             progress=False)
        searches = json.loads(paths.score("controller_searches").read_text())
        assert picks == [pick or 0.0] * 2 and searches["temperature"] == (pick or 0.0)
        assert searches["restart_chosen"] == int(np.argmax(searches["restart_dream_means"]))


@pytest.mark.slow
def test_evaluate_scores_the_agent_and_both_baselines_on_the_same_seeds(trained_m, tmp_path):
    paths = copy_trained_m(trained_m, tmp_path)
    config = _config("evaluate.episodes=3")
    controller_stage.run(config, paths, progress=False)
    evaluate.run(config, paths, progress=False)
    agents = ("worldmodel", "random", "uniform_random", "zero")  # smoke collects held_random: uniform is scored too
    scores = {name: json.loads(paths.score(name).read_text()) for name in agents}
    assert len({tuple(s["seeds"]) for s in scores.values()}) == 1
    for name, score in scores.items():
        assert len(score["returns"]) == 3 and score["mean"] == pytest.approx(np.mean(score["returns"]))
        assert Score.read(paths.score(name)).to_dict() == score  # the one score record, round-tripped
    assert scores["worldmodel"]["env_steps_of_data"] == 4 * 20 * 8
    Image.open(paths.figure("score_hist")).verify()


@pytest.mark.slow
def test_evaluation_is_reproducible_and_its_seeds_are_not_training_seeds():
    config = load_pipeline("smoke")
    seeds = evaluation_seeds(0, 3)
    first = evaluate_policy(config.env, ZeroPolicy(1), seeds)
    second = evaluate_policy(config.env, ZeroPolicy(1), seeds)
    np.testing.assert_array_equal(first, second)
    assert len(set(first)) == 3, "different seeds start in different states"
    evaluation = set(evaluation_seeds(0, 1000))
    training = {episode_seeds(0, i)[0] for i in range(10_000)}
    checks = set(evaluation_seeds(0, 1000, CHECK_STREAM))
    assert not evaluation & training and not evaluation & checks


@pytest.mark.slow
def test_temperature_sweep_writes_the_papers_table_with_a_random_row(trained_m, tmp_path):
    paths = copy_trained_m(trained_m, tmp_path)
    config = _config("controller.generations=2", "controller.temperatures=[0.5, 1.0]", "controller.workers=0")
    controller_stage.run(config, paths, progress=False)
    table = json.loads(paths.score("temperature_table").read_text())
    assert [row["temperature"] for row in table["rows"]] == [0.5, 1.0, None]
    assert table["rows"][1]["controller"] == "controller.pt", "the main temperature reuses controller.pt"
    tau05 = load_checkpoint(paths.root / "controller_tau0.5.pt", "controller")
    assert tau05["temperature"] == 0.5
    for row in table["rows"]:
        assert 0 <= row["real_mean"] <= 20 * 8 and row["real_std"] >= 0
    markdown = paths.temperature_table.read_text()
    assert "| 0.5 |" in markdown and "| random policy | - |" in markdown


@pytest.mark.slow
def test_real_fitness_equals_each_candidates_real_return_on_the_same_seeds(trained_m, tmp_path):
    from worldmodels.evaluation.episodes import REAL_FITNESS_STREAM
    from worldmodels.vmc.real_fitness import real_population_fitness

    paths = copy_trained_m(trained_m, tmp_path)
    config = _config("controller.workers=1")
    evolution = controller_stage.Evolution(config, paths)
    population = np.random.default_rng(0).normal(0, 0.5, (3, evolution.agent(np.zeros(
        controller_stage.LinearController(**evolution.model_args).num_parameters)).controller.num_parameters))
    seeds = evaluation_seeds(0, 2, REAL_FITNESS_STREAM)
    fitness, steps = real_population_fitness(config.env, evolution.vae, evolution.model, evolution.model_args,
                                             population, seeds, workers=1)
    one_by_one = [evolution.real_returns(candidate, seeds).mean() for candidate in population]
    np.testing.assert_allclose(fitness, one_by_one, rtol=1e-5)
    assert steps == 3 * 2 * 20
    assert len(set(np.round(fitness, 3))) > 1, "different candidates act differently"


@pytest.mark.slow
def test_evolution_in_the_real_env_logs_its_env_steps(trained_m, tmp_path):
    paths = copy_trained_m(trained_m, tmp_path)
    controller_stage.run(_config("controller.generations=1", "controller.fitness_in=real", "controller.workers=0"),
                         paths, progress=False)
    record = MetricsLog(paths.metrics("controller"), step_key="generation").read()[0]
    assert record["env_steps"] == 4 * 2 * 20 * 8 and "eval/real_mean" in record
    # Every real step counts in the agent's budget: the 4 collected episodes, the candidates' fitness
    # episodes (4 x 2) and the check of the mean (2 episodes), 20 agent steps x action repeat 8 each.
    used = world_model_env_steps(_config("controller.fitness_in=real"), paths)
    assert used == {"data": 4 * 160, "real_checks": 2 * 160, "real_fitness": 8 * 160, "round_scores": 0,
                    "unlogged_checks": 0, "total": (4 + 2 + 8) * 160}


@pytest.mark.slow
def test_every_real_check_of_every_search_counts_in_the_env_steps_used(trained_m, tmp_path):
    """3 generations with a check at 2 and at 3, in each of 2 searches: 4 checks of 2 episodes, counted in
    the evaluated agent's budget beside its data; a pipeline that checks nothing in the real env uses its
    data alone."""
    paths = copy_trained_m(trained_m, tmp_path / "checked")
    config = _config("controller.generations=3", "controller.restarts=2", "evaluate.episodes=1")
    controller_stage.run(config, paths, progress=False)
    evaluate.run(config, paths, progress=False)
    used = json.loads(paths.score("worldmodel").read_text())["env_steps_used"]
    assert used == {"data": 4 * 160, "real_checks": 4 * 2 * 160, "real_fitness": 0, "round_scores": 0,
                    "unlogged_checks": 0, "total": 12 * 160}
    unchecked = copy_trained_m(trained_m, tmp_path / "unchecked")
    config = _config("controller.generations=3", "controller.eval_real_episodes=0")
    controller_stage.run(config, unchecked, progress=False)
    assert world_model_env_steps(config, unchecked)["total"] == 4 * 160
    # A log from before checks were counted: the check is known to have happened, its steps are not.
    log = unchecked.metrics("controller")
    log.write_text(log.read_text().replace('"eval/dream_mean"', '"eval/real_mean": 9.0, "eval/dream_mean"'))
    assert world_model_env_steps(config, unchecked)["unlogged_checks"] == 2


@pytest.mark.slow
def test_evaluation_in_workers_matches_evaluation_in_process_and_a_dead_worker_is_an_error():
    from worldmodels.pools.workers import WorkerError

    config = load_pipeline("smoke")
    seeds = evaluation_seeds(0, 5)
    np.testing.assert_array_equal(evaluate_policy(config.env, ZeroPolicy(1), seeds, batch=2, workers=2),
                                  evaluate_policy(config.env, ZeroPolicy(1), seeds, batch=2, workers=0))
    dying = load_pipeline("smoke", ["env.id=gym:tests.faulty_envs:Dying-v0"])
    with pytest.raises(WorkerError, match="env seeds"):
        evaluate_policy(dying.env, ZeroPolicy(1), seeds[:2], workers=1)


def test_a_takecover_sweep_sits_row_for_row_beside_the_papers_table():
    rows = [{"temperature": 1.15, "dream_mean": 900.4, "dream_std": 10.2, "real_mean": 800.0, "real_std": 20.0},
            {"temperature": 0.1, "dream_mean": 2000.0, "dream_std": 5.0, "real_mean": 190.0, "real_std": 50.0},
            {"temperature": None, "dream_mean": None, "real_mean": 200.0, "real_std": 100.0}]
    markdown = controller_stage.format_temperature_table({"episodes": 100, "dream_rollouts": 256, "rows": rows},
                                                         beside_paper=True)
    lines = markdown.splitlines()
    assert "| 1.15 | 900 +- 10 | 800 +- 20 | 918 +- 546 | 1092 +- 556 |" in lines
    assert "| 0.1 | 2000 +- 5 | 190 +- 50 | 2086 +- 140 | 193 +- 58 |" in lines
    assert "| random policy | - | 200 +- 100 | - | 210 +- 108 |" in lines
    assert "| 1.3 | not run | not run | 732 +- 269 | 753 +- 139 |" in lines  # the paper's rows we did not run


def test_dreams_much_longer_than_m_s_windows_are_warned_about(caplog):
    with caplog.at_level("WARNING", logger="worldmodels"):
        assert controller_stage.warn_if_dreams_outrun_m_windows(2100, 100)
        assert "21x the windows of 100 steps" in caplog.text and "at least 420" in caplog.text
        caplog.clear()
        assert not controller_stage.warn_if_dreams_outrun_m_windows(2100, 500)  # the paper's: 4.2x
        assert not controller_stage.warn_if_dreams_outrun_m_windows(125, 125)   # cartpole: whole episodes
        assert caplog.text == ""
    for silent in ("takecover_paper", "takecover_rounds"):  # both train M on the paper's windows of 500
        pipeline = load_pipeline(silent)
        assert not controller_stage.warn_if_dreams_outrun_m_windows(pipeline.controller.dream_steps,
                                                                    pipeline.mdnrnn.sequence_length)
    one_shot = load_pipeline("takecover")  # windows of 100: its README numbers were measured so
    assert controller_stage.warn_if_dreams_outrun_m_windows(one_shot.controller.dream_steps,
                                                            one_shot.mdnrnn.sequence_length)
