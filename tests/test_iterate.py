import json
import shutil

import numpy as np
import pytest

from tests.conftest import smoke_config
from worldmodels.artifacts import load_vae
from worldmodels.core.checkpoint import load_checkpoint
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.data.latents import LatentReader, write_latents
from worldmodels.data.store import PLAYED_SOURCE_PREFIX, RolloutReader
from worldmodels.stages import collect, encode, evaluate, iterate
from worldmodels.stages import controller as controller_stage
from worldmodels.stages import mdnrnn as mdnrnn_stage
from worldmodels.stages import vae as vae_stage


def _config(*overrides):
    return smoke_config(*overrides)


def _rounds(smoke_run, start, folder, *settings):
    """Every stage up to C, then the rounds, of the smoke pipeline with ``settings``, in ``folder``: a copy
    of the session's shared smoke run as it stood after stage ``start``, whose outputs ``settings`` must
    not change (those stages find their work done and do nothing)."""
    paths = smoke_run.copy(start, folder)
    config = _config(*settings)
    for stage in (collect, vae_stage, encode, mdnrnn_stage, controller_stage):
        stage.run(config, paths, progress=False)
    iterate.run(config, paths, progress=False)
    return config, paths


@pytest.fixture(scope="module")
def two_rounds(smoke_run, tmp_path_factory):
    """Two rounds after the shared smoke run's C (its own: the rounds' tests change them)."""
    return _rounds(smoke_run, "train-controller", tmp_path_factory.mktemp("iterate"), "iterate.iterations=2",
                   "iterate.controller_generations=[2,3]")


@pytest.mark.slow
def test_each_round_appends_on_policy_episodes_to_the_previous_data(two_rounds):
    """Round 1 copies the pipeline's file; round 2 takes round 1's file over (no second copy) and
    appends its own episodes."""
    config, paths = two_rounds
    base = RolloutReader(paths.rollouts)
    assert base.num_episodes == 4, "round 0's data is left as the exploration made it"
    assert not paths.round(1).rollouts.exists(), "a finished round's file is handed on, not copied"
    assert json.loads(paths.round(1).round_marker.read_text())["record"]["episodes_of_data"] == 6
    sources = [row.decode() for row in RolloutReader(paths.round(2).rollouts).episodes["source"]]
    rounds = [iterate.round_source(k, config.iterate.noise_std) for k in (1, 2)]
    assert sources == [row.decode() for row in base.episodes["source"]] + [rounds[0]] * 2 + [rounds[1]] * 2
    round2 = RolloutReader(paths.round(2).rollouts)
    np.testing.assert_array_equal(round2.frames(0), base.frames(0))
    seeds = {int(s) for s in round2.episodes["seed"]}
    assert len(seeds) == 8, "on-policy episodes start from seeds of their own"


@pytest.mark.slow
def test_a_round_encodes_only_its_new_episodes_and_gets_the_latents_of_a_full_encode(two_rounds):
    config, paths = two_rounds
    round1, round2 = paths.round(1), paths.round(2)
    reader = RolloutReader(round2.rollouts)
    kept_mu, _ = encode._reusable_rows(round1.latents, round2.vae, reader)
    assert 0 < len(kept_mu) == sum(int(n) + 1 for n in reader.lengths[:6]), "round 1's 6 episodes are kept"
    vae, _ = load_vae(round2.vae)
    mu, logvar, _ = encode.encode_frames(vae, reader, 64, progress=False, channels_last=False)
    latents = LatentReader(round2.latents, round2.vae, reader)
    np.testing.assert_allclose(latents.mu, mu, atol=1e-5)
    np.testing.assert_allclose(latents.logvar, logvar, atol=1e-5)
    own, _ = encode._reusable_rows(paths.latents, round2.vae, RolloutReader(paths.rollouts))
    assert len(own) == 4 * 21, "round 0's latents are the head of round 0's own file"
    shorter, _ = encode._reusable_rows(round2.latents, round2.vae, RolloutReader(paths.rollouts))
    assert len(shorter) == 0, "latents of more episodes than the file holds are not reused"


@pytest.mark.slow
def test_a_round_s_encode_keeps_the_previous_round_s_rows_and_encodes_the_rest(two_rounds, tmp_path):
    """Round 1's latents replaced by marked rows (same V, same episodes): round 2's encode keeps the
    marks for round 1's frames and encodes only the frames after them."""
    config, paths = two_rounds
    previous, current = PipelinePaths(tmp_path / "1"), PipelinePaths(tmp_path / "2")
    previous.ensure(), current.ensure()
    for name in ("rollouts", "vae"):
        shutil.copyfile(getattr(paths.round(2), name), getattr(current, name))
    round1 = LatentReader(paths.round(1).latents)
    marked = np.full_like(round1.mu, 7.0)
    write_latents(previous.latents, round1.episodes, marked, marked, round1.vae_sha256, round1.rollouts_fingerprint)
    iterate.encode_round(config, previous, current, progress=False)
    reader = RolloutReader(current.rollouts)
    latents = LatentReader(current.latents, current.vae, reader)
    assert np.all(latents.mu[:len(marked)] == 7.0), "round 1's rows are kept, not encoded again"
    full = LatentReader(paths.round(2).latents)
    np.testing.assert_allclose(latents.mu[len(marked):], full.mu[len(marked):], atol=1e-5)


@pytest.mark.slow
def test_rounds_continue_from_the_previous_m_and_c_and_are_logged(two_rounds):
    config, paths = two_rounds
    round1 = paths.round(1)
    state = load_checkpoint(round1.last_checkpoint("controller"), "controller")
    previous = load_checkpoint(paths.controller, "controller")["parameters"].numpy()
    np.testing.assert_allclose(state["inputs"]["start"], previous, rtol=1e-6)
    m_state = load_checkpoint(round1.last_checkpoint("mdnrnn"), "mdnrnn")
    assert m_state["epoch"] == config.iterate.mdnrnn_epochs and "start_from_sha256" in m_state["inputs"]
    for round_index, generations in ((1, 2), (2, 3)):  # a count per round
        log = MetricsLog(paths.round(round_index).metrics("controller"), step_key="generation").read()
        assert [r["generation"] for r in log] == list(range(1, generations + 1))
    records = MetricsLog(paths.metrics("iterate"), step_key="iteration").read()
    assert [r["iteration"] for r in records] == [0, 1, 2]
    steps = [r["env_steps_of_data"] for r in records]
    assert steps == [4 * 20 * 8, 6 * 20 * 8, 8 * 20 * 8]
    assert all(np.isfinite(r["real_mean"]) and np.isfinite(r["dream_mean"]) for r in records)
    agent = json.loads(paths.agent.read_text())
    assert agent["root"] == str(paths.round(2).root)


@pytest.mark.slow
def test_a_finished_round_is_not_redone_and_changed_settings_are_refused(two_rounds):
    config, paths = two_rounds
    marker = paths.round(1).round_marker
    before = marker.stat().st_mtime_ns, paths.round(2).controller.stat().st_mtime_ns
    iterate.run(config, paths, progress=False)
    assert (marker.stat().st_mtime_ns, paths.round(2).controller.stat().st_mtime_ns) == before
    with pytest.raises(ValueError, match="other iterate settings"):
        iterate.run(_config("iterate.iterations=2", "iterate.controller_generations=[2,3]", "iterate.noise_std=0.5"),
                    paths, progress=False)
    with pytest.raises(ValueError, match="other iterate settings"):  # round 1 ran 2 generations, not 4
        iterate.run(_config("iterate.iterations=2", "iterate.controller_generations=4"), paths, progress=False)


@pytest.mark.slow
def test_the_last_round_s_search_goes_on_when_more_generations_are_asked(two_rounds, tmp_path):
    """Round 2 (the last) asked for 5 generations instead of 3: its C continues to 5 without
    replaying its episodes or M; fewer than it ran is refused."""
    _, finished = two_rounds
    paths = PipelinePaths(tmp_path / "smoke")
    shutil.copytree(finished.root, paths.root)
    m_before = paths.round(2).mdnrnn.stat().st_mtime_ns
    iterate.run(_config("iterate.iterations=2", "iterate.controller_generations=[2,5]"), paths, progress=False)
    log = MetricsLog(paths.round(2).metrics("controller"), step_key="generation").read()
    assert [r["generation"] for r in log] == [1, 2, 3, 4, 5]
    assert paths.round(2).mdnrnn.stat().st_mtime_ns == m_before
    marker = json.loads(paths.round(2).round_marker.read_text())
    assert marker["identity"]["settings"]["controller_generations"] == 5 and marker["record"]["episodes_played"] == 0
    assert [r["iteration"] for r in MetricsLog(paths.metrics("iterate"), step_key="iteration").read()] == [0, 1, 2]
    with pytest.raises(ValueError, match="other iterate settings"):
        iterate.run(_config("iterate.iterations=2", "iterate.controller_generations=[2,4]"), paths, progress=False)


@pytest.mark.slow
def test_evaluate_scores_the_last_round_and_the_one_shot_controller(two_rounds):
    config, paths = two_rounds
    evaluate.run(config, paths, progress=False)
    final = json.loads(paths.score("worldmodel").read_text())
    one_shot = json.loads(paths.score("worldmodel_round0").read_text())
    assert final["env_steps_of_data"] == 8 * 20 * 8 and one_shot["env_steps_of_data"] == 4 * 20 * 8
    assert final["seeds"] == one_shot["seeds"]
    # Round 1 handed its rollouts on: scored as the final agent, its data size comes from its marker.
    evaluate.run(_config("iterate.iterations=1", "iterate.controller_generations=[2,3]"), paths, progress=False)
    assert json.loads(paths.score("worldmodel").read_text())["env_steps_of_data"] == 6 * 20 * 8


@pytest.mark.slow
def test_the_rounds_episodes_checks_and_scores_all_count_in_the_env_steps_used(two_rounds):
    """The final agent used its data (the collected and the played episodes), every real check of C in every
    round, and every round's score (round 0's too); the one-shot agent of round 0 its own data and checks."""
    config, paths = two_rounds
    evaluate.run(config, paths, progress=False)
    episode = 20 * 8  # the smoke env's episode: 20 agent steps x action repeat 8
    checks = {index: sum("eval/real_mean" in record for record in
                         MetricsLog(paths.round(index).metrics("controller"), step_key="generation").read())
              for index in (0, 1, 2)}
    assert checks[0] >= 1 and checks[1] >= 1 and checks[2] >= 1
    rounds = MetricsLog(paths.metrics("iterate"), step_key="iteration").read()
    assert [r["real_env_steps"] for r in rounds] == [config.iterate.eval_episodes * episode] * 3  # rounds 0, 1, 2
    final = json.loads(paths.score("worldmodel").read_text())["env_steps_used"]
    one_shot = json.loads(paths.score("worldmodel_round0").read_text())["env_steps_used"]
    real_checks = config.controller.eval_real_episodes * episode
    assert final == {"data": 8 * episode, "real_checks": sum(checks.values()) * real_checks, "real_fitness": 0,
                     "round_scores": 3 * config.iterate.eval_episodes * episode, "unlogged_checks": 0,
                     "total": final["data"] + final["real_checks"] + final["round_scores"]}
    assert one_shot == {"data": 4 * episode, "real_checks": checks[0] * real_checks, "real_fitness": 0,
                        "round_scores": 0, "unlogged_checks": 0, "total": 4 * episode + checks[0] * real_checks}


@pytest.mark.slow
def test_m_trains_on_the_played_episodes_as_often_as_asked(two_rounds, tmp_path, monkeypatch):
    """Round 2's data (4 exploration + 4 played episodes) with ``mdnrnn.played_repeat=3``: M's
    training windows list each played training episode 3 times, each exploration episode once."""
    _, paths = two_rounds
    current = PipelinePaths(tmp_path / "m")
    current.ensure()
    for name in ("rollouts", "vae", "latents"):
        shutil.copyfile(getattr(paths.round(2), name), getattr(current, name))
    built = []
    real_build = mdnrnn_stage.build_sequences

    def recording_build(latents, rollouts, episodes, length):
        built.append(np.asarray(episodes))
        return real_build(latents, rollouts, episodes, length)

    monkeypatch.setattr(mdnrnn_stage, "build_sequences", recording_build)
    config = _config("mdnrnn.played_repeat=3", "mdnrnn.epochs=1")
    mdnrnn_stage.run(config, current, progress=False)
    sources = [row.decode() for row in RolloutReader(current.rollouts).episodes["source"]]
    train, heldout = built[0], built[1]
    counts = {int(e): int((train == e).sum()) for e in set(train.tolist())}
    played = [e for e, s in enumerate(sources) if s.startswith(PLAYED_SOURCE_PREFIX) and e not in heldout]
    assert played and all(counts[e] == 3 for e in played)
    assert all(n == 1 for e, n in counts.items() if e not in played)
    assert len(set(heldout.tolist())) == len(heldout), "held-out episodes are never repeated"
    m_state = load_checkpoint(current.last_checkpoint("mdnrnn"), "mdnrnn")
    assert m_state["settings"]["played_repeat"] == 3


@pytest.mark.slow
def test_a_round_whose_successor_was_deleted_says_how_to_redo_the_rounds(two_rounds, tmp_path):
    config, paths = two_rounds
    previous, current = paths.round(1), PipelinePaths(tmp_path / "iterations" / "2")
    with pytest.raises(FileNotFoundError, match="round 1's episodes are gone"):
        iterate.grow_rollouts(config, previous, current, 2, progress=False)


def test_round_seeds_are_disjoint_from_collect_and_evaluation_seeds():
    from worldmodels.evaluation.episodes import evaluation_seeds
    from worldmodels.evaluation.rollout import episode_seeds

    rounds = {iterate.round_episode_seeds(0, k, i)[0] for k in range(1, 6) for i in range(500)}
    assert len(rounds) == 2500
    assert not rounds & {episode_seeds(0, i)[0] for i in range(5000)}
    assert not rounds & set(evaluation_seeds(0, 1000))


@pytest.fixture(scope="module")
def round_from_zero(smoke_run, tmp_path_factory):
    """Two rounds from C = 0 without noise, each C evolved from C = 0, M trained afresh as an ensemble,
    C in a penalised dream (its own M and C: from the shared smoke run's V and latents)."""
    return _rounds(smoke_run, "encode", tmp_path_factory.mktemp("from_zero"), "iterate.iterations=2",
                   "iterate.start_from=zero", "iterate.evolve_from=zero", "iterate.noise_std=0",
                   "iterate.mdnrnn_epochs=0", "mdnrnn.ensemble=2", "controller.disagreement_penalty=1.0")


@pytest.mark.slow
def test_round_one_from_zero_plays_the_zero_action_and_evolves_from_c_equal_zero(round_from_zero):
    config, paths = round_from_zero
    round1 = RolloutReader(paths.round(2).rollouts)  # round 1's file, handed on to round 2
    source = iterate.round_source(1, 0.0)
    new = [i for i, row in enumerate(round1.episodes["source"]) if row.decode() == source]
    assert len(new) == config.iterate.episodes
    for episode in new:
        assert np.all(round1.step_data(episode)["actions"] == 0.0), "C = 0 without noise is the zero action"
    state = load_checkpoint(paths.round(1).last_checkpoint("controller"), "controller")
    trained = load_checkpoint(paths.controller, "controller")["parameters"].numpy()
    assert np.abs(trained).max() > 0, "round 0's C is not zero, so the start below is C = 0 by choice"
    assert np.all(np.asarray(state["inputs"]["start"]) == 0.0)
    m_state = load_checkpoint(paths.round(1).last_checkpoint("mdnrnn"), "mdnrnn")
    assert m_state["epoch"] == config.mdnrnn.epochs and "start_from_sha256" not in m_state["inputs"]
    assert m_state["model_args"]["members"] == 2


@pytest.mark.slow
def test_rounds_evolving_from_zero_start_every_search_at_zero_and_play_the_previous_c(round_from_zero):
    config, paths = round_from_zero
    round1_c = load_checkpoint(paths.round(1).controller, "controller")["parameters"].numpy()
    assert np.abs(round1_c).max() > 0
    state = load_checkpoint(paths.round(2).last_checkpoint("controller"), "controller")
    assert np.all(np.asarray(state["inputs"]["start"]) == 0.0), "round 2's search starts at C = 0, not at round 1's C"
    round2 = RolloutReader(paths.round(2).rollouts)
    new = [i for i, row in enumerate(round2.episodes["source"]) if row.decode() == iterate.round_source(2, 0.0)]
    assert len(new) == config.iterate.episodes
    assert all(np.abs(round2.step_data(i)["actions"]).max() > 0 for i in new), "round 2 plays round 1's C"


@pytest.mark.slow
def test_rounds_from_zero_are_other_rounds_than_the_papers(round_from_zero):
    config, paths = round_from_zero
    with pytest.raises(ValueError, match="other iterate settings"):
        iterate.run(_config("iterate.iterations=2", "iterate.noise_std=0", "iterate.mdnrnn_epochs=0",
                            "iterate.evolve_from=zero", "mdnrnn.ensemble=2", "controller.disagreement_penalty=1.0"),
                    paths, progress=False)
    with pytest.raises(ValueError, match="other iterate settings"):
        iterate.run(_config("iterate.iterations=2", "iterate.noise_std=0", "iterate.mdnrnn_epochs=0",
                            "iterate.start_from=zero", "mdnrnn.ensemble=2", "controller.disagreement_penalty=1.0"),
                    paths, progress=False)
