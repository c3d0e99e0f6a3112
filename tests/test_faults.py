"""Faults a user meets, injected: a full disk, diverging training, missing or foreign outputs, a killed
driver, a refused command. Each test fails on a version that reports the fault as success or loses data."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.conftest import SYNTHETIC_ENV, assert_same_rollouts, copy_trained_m, smoke_config, synthetic_episode
from worldmodels.core.checkpoint import file_sha256, load_checkpoint
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.training import TrainingDiverged, TrainingOutputError
from worldmodels.data.store import RolloutReader, RolloutWriter, StoreError
from worldmodels.stages import controller as controller_stage
from worldmodels.stages import dreamer as dreamer_stage
from worldmodels.stages import encode
from worldmodels.stages import mdnrnn as mdnrnn_stage
from worldmodels.stages import vae as vae_stage

WM = [sys.executable, "-m", "worldmodels.cli"]


def wm(*args: str, data_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``wm <args> --data-dir data_dir`` in a child process (its exit code and output as a user sees them)."""
    return subprocess.run([*WM, *args, "--data-dir", str(data_dir)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "MUJOCO_GL": "egl"})


def dark_frames(path: Path) -> int:
    """Frames of committed episodes that are entirely black (what a chunk never written reads as)."""
    with RolloutReader(path) as reader:
        return sum(int((reader.frames(e).reshape(reader.lengths[e] + 1, -1).max(axis=1) == 0).sum())
                   for e in range(reader.num_episodes))


def strict_json_lines(path: Path) -> list[dict]:
    """Every line of a metrics log, read as strict JSON (NaN and Infinity are not JSON)."""
    def refuse(token: str) -> None:
        raise ValueError(f"{path}: {token} is not JSON")
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def trained(smoke_run):
    """The smoke pipeline's rollouts, V, latents, M and C, as the session's shared run stood after C (no
    later stage's files); read only, tests copy them."""
    return smoke_run.after("train-controller")


def _copy_all(source: PipelinePaths, tmp_path: Path) -> PipelinePaths:
    paths = copy_trained_m(source, tmp_path)
    # A finished run whole: M's stage measures a trained M again when one of its figures is missing.
    for path in [source.controller, *source.root.glob("checkpoints/*"), *source.root.glob("metrics/*"),
                 *source.root.glob("figures/*")]:
        target = paths.root / path.relative_to(source.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    return paths


# ---------------------------------------------------------------------------------------------- full disk

def _mount_small_tmpfs(where: Path, megabytes: int) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(where)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
def test_a_full_disk_stops_collect_at_once_and_a_rerun_completes_the_file(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_small_tmpfs(disk, 3):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights); "
                    "test_a_write_error_commits_nothing_and_the_next_writer_continues injects the error instead")
    try:
        rollouts = disk / "smoke" / "rollouts.h5"
        full = wm("collect", "-p", "smoke", "--set", "collect.episodes=30", "--no-progress", data_dir=disk)
        assert full.returncode == 1, full.stderr  # an error, not a crash (139) nor a success (0)
        assert f"{rollouts}: cannot write episode" in full.stderr and "No space left on device" in full.stderr
        assert "Traceback" not in full.stderr and "Exception ignored" not in full.stderr
        with RolloutReader(rollouts) as reader:
            committed = reader.num_episodes
        assert 0 < committed < 30
        assert dark_frames(rollouts) == 0
        subprocess.run(["mount", "-o", "remount,size=40m", str(disk)], check=True)
        again = wm("collect", "-p", "smoke", "--set", "collect.episodes=30", "--no-progress", data_dir=disk)
        assert again.returncode == 0, again.stderr
        with RolloutReader(rollouts) as reader:
            assert reader.num_episodes == 30
            np.testing.assert_array_equal(reader.episodes["index"], np.arange(30))
        assert dark_frames(rollouts) == 0
        check = subprocess.run([*WM, "info", "--check", str(rollouts)], capture_output=True, text=True)
        assert check.returncode == 0 and "every committed episode's data is on disk" in check.stdout
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_write_error_commits_nothing_and_the_next_writer_continues(tmp_path, monkeypatch):
    path = tmp_path / "rollouts.h5"
    episodes = [synthetic_episode(i, 40, 64) for i in range(4)]
    original = h5py.Dataset.__setitem__
    writes = {"frames": 0}

    def failing(dataset, key, value):
        if dataset.name == "/frames":
            writes["frames"] += 1
            if writes["frames"] == 3:
                raise OSError(28, "Can't write data (file write failed: errno = 28, "
                                  "error message = 'No space left on device')")
        return original(dataset, key, value)

    writer = RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (64, 64, 3), 2)
    monkeypatch.setattr(h5py.Dataset, "__setitem__", failing)
    writer.append(episodes[0])
    writer.append(episodes[1])
    with pytest.raises(StoreError, match=f"{path}: cannot write episode 2 \\(No space left on device\\)"):
        writer.append(episodes[2])
    with pytest.raises(StoreError, match="not written to after an earlier failure"):
        writer.append(episodes[3])
    writer.close()
    monkeypatch.setattr(h5py.Dataset, "__setitem__", original)
    with RolloutReader(path) as reader:
        assert reader.num_episodes == 2
    with RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (64, 64, 3), 2) as writer:
        writer.append(episodes[2])
        writer.append(episodes[3])
    with RolloutReader(path) as reader:
        for index, episode in enumerate(episodes):
            np.testing.assert_array_equal(reader.episode(index).frames, episode.frames)
        assert reader.verify() == []


def test_episodes_committed_without_their_data_are_found_and_collected_again(tmp_path):
    """A file written by a version that committed episodes after a failed write: their frames read as black."""
    path = tmp_path / "rollouts.h5"
    with RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (64, 64, 3), 2) as writer:
        for number in range(3):  # numbered from 1: episode 0's first synthetic frame is black by design
            writer.append(synthetic_episode(number + 1, 20, 64))
    with h5py.File(path, "a") as handle:  # commit a 4th episode whose data never reached the file
        frames, steps = handle["frames"].shape[0], handle["actions"].shape[0]
        handle["frames"].resize(frames + 61, axis=0)
        for name in ("actions", "rewards", "terminated", "truncated"):
            handle[name].resize(steps + 60, axis=0)
        row = handle["episodes"][-1].copy()
        row["frame_offset"], row["step_offset"], row["length"], row["index"] = frames, steps, 60, 3
        handle["episodes"].resize(4, axis=0)
        handle["episodes"][3] = row
    with RolloutReader(path) as reader:
        assert reader.num_episodes == 4
        assert any("episodes 3..3 were committed but part of their data never reached the disk" in problem
                   for problem in reader.verify())
    check = subprocess.run([*WM, "info", "--check", str(path)], capture_output=True, text=True)
    assert check.returncode == 1 and "never reached the disk" in check.stderr
    with RolloutWriter(path, SYNTHETIC_ENV, {"backend": "test"}, (64, 64, 3), 2) as writer:
        assert writer.num_episodes == 3
        writer.append(synthetic_episode(4, 60, 64))
    with RolloutReader(path) as reader:
        assert reader.verify() == [] and dark_frames(path) == 0


# ------------------------------------------------------------------------------------- diverging training

@pytest.mark.slow
def test_a_diverging_v_stops_naming_its_epoch_and_promotes_nothing(trained, tmp_path):
    paths = _copy_all(trained, tmp_path)
    vae_bytes, last_bytes = paths.vae.read_bytes(), paths.last_checkpoint("vae").read_bytes()
    log_before = paths.metrics("vae").read_text()
    with pytest.raises(TrainingDiverged, match=r"V diverged at epoch 1: train/loss/\w+ \(batch \d+\) = (nan|inf)"):
        vae_stage.run(smoke_config("vae.learning_rate=1e6"), paths, progress=False)
    assert paths.vae.read_bytes() == vae_bytes
    assert paths.last_checkpoint("vae").read_bytes() == last_bytes
    assert paths.metrics("vae").read_text() == log_before
    strict_json_lines(paths.metrics("vae"))
    fresh = PipelinePaths(tmp_path / "fresh" / "smoke").ensure()
    fresh.rollouts.write_bytes(trained.rollouts.read_bytes())
    result = wm("train-vae", "-p", "smoke", "--set", "vae.learning_rate=1e6", "--no-progress",
                data_dir=fresh.root.parent)
    assert result.returncode == 1 and "V diverged at epoch 1" in result.stderr
    assert not fresh.vae.exists() and not fresh.last_checkpoint("vae").exists()


def test_a_diverging_m_stops_and_keeps_the_last_good_m(trained, tmp_path):
    paths = _copy_all(trained, tmp_path)
    m_sha = file_sha256(paths.mdnrnn)
    with pytest.raises(TrainingDiverged, match="M diverged at epoch"):
        mdnrnn_stage.run(smoke_config("mdnrnn.learning_rate=1e6", "mdnrnn.grad_clip=1e6"), paths, progress=False)
    assert file_sha256(paths.mdnrnn) == m_sha
    strict_json_lines(paths.metrics("mdnrnn"))


def test_an_exploding_heldout_loss_is_divergence_even_when_finite():
    from worldmodels.core.metrics import MetricsLog
    from worldmodels.core.runtime import resolve
    from worldmodels.core.training import TrainingRun

    run = TrainingRun("m", {}, Path("/nonexistent/last.pt"), Path("/nonexistent/best.pt"),
                      MetricsLog(Path("/nonexistent/log.jsonl")), resolve(smoke_config().runtime), "M")
    run.check(3, {"heldout/loss/total": 50.0}, heldout_key="heldout/loss/total", best=-2.0)  # 52 above: fine
    with pytest.raises(TrainingDiverged, match="heldout/loss/total = 3.2e\\+18"):
        run.check(3, {"heldout/loss/total": 3.2e18}, heldout_key="heldout/loss/total", best=-2.0)
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    with pytest.raises(TrainingDiverged, match="non-finite weights in weight"):
        run.check(3, {}, [model])


def test_a_nan_fitness_stops_c_before_cma_es_ranks_it(trained, tmp_path, monkeypatch):
    paths = _copy_all(trained, tmp_path)
    for path in (paths.controller, paths.last_checkpoint("controller"), paths.metrics("controller")):
        path.unlink()
    real_fitness = controller_stage.Evolution.fitness

    def nan_in_generation_2(self, population, temperature, generation):
        fitness, steps = real_fitness(self, population, temperature, generation)
        if generation == 2:
            fitness[1] = np.nan
        return fitness, steps

    monkeypatch.setattr(controller_stage.Evolution, "fitness", nan_in_generation_2)
    with pytest.raises(TrainingDiverged, match="C diverged at generation 2: fitness = nan"):
        controller_stage.run(smoke_config(), paths, progress=False)
    saved = load_checkpoint(paths.last_checkpoint("controller"), "controller")
    assert controller_stage.CMAES.from_state(saved["strategy"]).generation == 1
    assert [r["generation"] for r in strict_json_lines(paths.metrics("controller"))] == [1]


def test_a_nan_loss_stops_dreamer_with_its_last_good_update_saved(trained, tmp_path, monkeypatch):
    paths = copy_trained_m(trained, tmp_path)
    real_update = dreamer_stage.update
    calls = {"n": 0}

    def nan_at_update_3(*args, **kwargs):
        calls["n"] += 1
        metrics = real_update(*args, **kwargs)
        return {**metrics, "train/loss/image_nll": float("nan")} if calls["n"] == 3 else metrics

    monkeypatch.setattr(dreamer_stage, "update", nan_at_update_3)
    with pytest.raises(TrainingDiverged, match="Dreamer diverged at update 3: train/loss/image_nll = nan"):
        dreamer_stage.run(smoke_config(), paths, progress=False)
    assert load_checkpoint(paths.last_checkpoint("dreamer"), "dreamer")["update"] == 2
    assert load_checkpoint(paths.dreamer, "dreamer")["update"] == 2
    strict_json_lines(paths.metrics("dreamer"))


# ------------------------------------------------------------------------------ missing or foreign outputs

@pytest.mark.parametrize("damage", ["removed", "empty", "garbage"])
@pytest.mark.parametrize("stage, artifact", [(vae_stage, "vae"), (mdnrnn_stage, "mdnrnn"),
                                             (controller_stage, "controller")])
def test_a_finished_stage_whose_output_is_gone_writes_it_again_without_training(trained, tmp_path, stage,
                                                                               artifact, damage):
    paths = _copy_all(trained, tmp_path)
    output = paths.root / f"{artifact}.pt"
    expected = load_checkpoint(output, artifact)
    log_before = paths.metrics(artifact).read_text()
    if damage == "removed":
        output.unlink()
    else:
        output.write_bytes(b"" if damage == "empty" else b"not a checkpoint")
    stage.run(smoke_config(), paths, progress=False)
    rebuilt = load_checkpoint(output, artifact)
    for key in ("model", "parameters"):
        if key in expected:
            got, want = rebuilt[key], expected[key]
            if isinstance(want, dict):
                for name in want:
                    torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
            else:
                torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert paths.metrics(artifact).read_text() == log_before  # written again, not trained again


def test_a_folder_where_the_model_should_be_is_named(trained, tmp_path):
    paths = _copy_all(trained, tmp_path)
    paths.vae.unlink()
    paths.vae.mkdir()
    with pytest.raises(TrainingOutputError, match=f"{paths.vae} is a folder"):
        vae_stage.run(smoke_config(), paths, progress=False)


def test_another_pipelines_v_is_refused_by_encode_and_replaced_by_train_vae(trained, tmp_path):
    paths = _copy_all(trained, tmp_path)
    other = PipelinePaths(tmp_path / "other" / "smoke").ensure()
    other.rollouts.write_bytes(trained.rollouts.read_bytes())
    vae_stage.run(smoke_config("vae.z_size=8"), other, progress=False)
    paths.vae.write_bytes(other.vae.read_bytes())
    with pytest.raises(TrainingOutputError, match=f"{paths.vae} was made by another run \\(settings differ"):
        encode.run(smoke_config(), paths, progress=False)
    vae_stage.run(smoke_config(), paths, progress=False)  # this run's V is written again from its checkpoint
    mine, expected = load_checkpoint(paths.vae, "vae"), load_checkpoint(trained.vae, "vae")
    assert mine["settings"] == expected["settings"]
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(mine["model"][name], tensor, rtol=0, atol=0)
    encode.run(smoke_config(), paths, progress=False)


@pytest.mark.slow
def test_evaluate_refuses_a_c_evolved_in_another_m(trained, tmp_path):
    from worldmodels.stages import evaluate

    paths = _copy_all(trained, tmp_path)
    mdnrnn_stage.run(smoke_config("mdnrnn.hidden_size=16"), paths, progress=False)
    with pytest.raises(TrainingOutputError, match=f"{paths.controller} was evolved with another M"):
        evaluate.run(smoke_config("mdnrnn.hidden_size=16"), paths, progress=False)


# ------------------------------------------------------------------------------------ killed processes

def session_processes(session: int) -> list[str]:
    """Command lines of the live processes of a session (the driver and everything it started)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100]
        except OSError:
            continue
        state, _, _, sid = stat[stat.rindex(")") + 2:].split()[:4]
        if int(sid) == session and state != "Z":
            found.append(command)
    return found


def _start_and_kill(args: list[str], data_dir: Path, sig: signal.Signals, processes: int) -> list[str]:
    """Start ``wm args`` in a session of its own, wait for ``processes`` processes in it, send ``sig`` (to the
    whole group for SIGINT, as Ctrl-C does; to the driver alone otherwise); what is left after 10 s."""
    driver = subprocess.Popen([*WM, *args, "--data-dir", str(data_dir), "--no-progress"], start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "MUJOCO_GL": "egl"})
    deadline = time.monotonic() + 120
    while len(session_processes(driver.pid)) < processes:
        assert time.monotonic() < deadline and driver.poll() is None, "the pool never started"
        time.sleep(0.2)
    time.sleep(1.0)
    if sig == signal.SIGINT:
        os.killpg(driver.pid, sig)
    else:
        driver.send_signal(sig)
    driver.wait(timeout=60)
    deadline = time.monotonic() + 10
    while session_processes(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = session_processes(driver.pid)
    if left:  # never leave them to the next test
        subprocess.run(["pkill", "-9", "-s", str(driver.pid)], capture_output=True)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_collect_leaves_no_worker_behind(tmp_path, sig):
    args = ["collect", "-p", "smoke", "--set", "collect.episodes=400", "--set", "collect.workers=2"]
    # the driver, multiprocessing's resource tracker and 2 workers
    assert _start_and_kill(args, tmp_path, sig, processes=4) == []


@pytest.mark.slow
def test_a_killed_real_env_evolution_leaves_no_worker_behind(trained, tmp_path):
    paths = copy_trained_m(trained, tmp_path)
    args = ["train-controller", "-p", "smoke", "--in", "real", "--set", "controller.workers=2",
            "--set", "controller.generations=200"]
    assert _start_and_kill(args, paths.root.parent, signal.SIGTERM, processes=4) == []


@pytest.mark.slow
def test_collect_killed_at_a_random_moment_resumes_to_the_uninterrupted_file(tmp_path):
    args = ["collect", "-p", "smoke", "--set", "collect.episodes=24", "--no-progress"]
    whole = wm(*args, data_dir=tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    driver = subprocess.Popen([*WM, *args, "--data-dir", str(tmp_path / "killed")], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env={**os.environ, "MUJOCO_GL": "egl"})
    for _ in range(random.Random(os.getpid()).randint(3, 15)):  # some committed episodes, then a random moment
        if not driver.stdout.readline():
            break
    time.sleep(random.Random(os.getpid()).uniform(0, 0.3))
    driver.kill()
    driver.wait()
    resumed = wm(*args, data_dir=tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_rollouts(tmp_path / "whole" / "smoke" / "rollouts.h5", tmp_path / "killed" / "smoke" / "rollouts.h5")


@pytest.mark.slow
def test_train_vae_killed_at_a_random_moment_resumes_to_the_uninterrupted_losses(trained, tmp_path):
    args = ["train-vae", "-p", "smoke", "--set", "vae.epochs=4", "--no-progress"]
    runs = {}
    for name in ("whole", "killed"):
        paths = PipelinePaths(tmp_path / name / "smoke").ensure()
        paths.rollouts.write_bytes(trained.rollouts.read_bytes())
        runs[name] = paths
    assert wm(*args, data_dir=tmp_path / "whole").returncode == 0
    driver = subprocess.Popen([*WM, *args, "--data-dir", str(tmp_path / "killed")], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env={**os.environ, "MUJOCO_GL": "egl"})
    epochs = random.Random(os.getpid()).randint(1, 3)
    while epochs and (line := driver.stdout.readline()):
        epochs -= line.startswith("epoch ")
    time.sleep(random.Random(os.getpid()).uniform(0, 0.5))
    driver.kill()
    driver.wait()
    assert wm(*args, data_dir=tmp_path / "killed").returncode == 0
    whole, killed = (strict_json_lines(runs[n].metrics("vae")) for n in ("whole", "killed"))
    assert [r["epoch"] for r in killed] == [1, 2, 3, 4]
    for a, b in zip(whole, killed, strict=True):
        assert a["heldout/loss/total"] == b["heldout/loss/total"]
        assert a["train/loss/total"] == b["train/loss/total"]


# ---------------------------------------------------------------------------------- refused commands

@pytest.mark.slow
def test_a_refused_command_leaves_the_record_of_the_run_as_it_was(tmp_path):
    assert wm("collect", "-p", "smoke", data_dir=tmp_path).returncode == 0
    record = (tmp_path / "smoke" / "config.yaml").read_text()
    refused = wm("collect", "-p", "smoke", "--set", "env.action_repeat=2", data_dir=tmp_path)
    assert refused.returncode == 1 and "other env settings" in refused.stderr
    assert (tmp_path / "smoke" / "config.yaml").read_text() == record


@pytest.mark.slow
def test_an_os_error_is_one_line_naming_the_path(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where the data dir should be")
    result = wm("collect", "-p", "smoke", data_dir=blocker / "data")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and str(blocker) in lines[0]


def test_a_dead_worker_of_real_env_fitness_is_an_error_naming_its_candidates(trained):
    from worldmodels.artifacts import load_mdnrnn, load_vae
    from worldmodels.models.controller import LinearController
    from worldmodels.pools.workers import WorkerError
    from worldmodels.vmc.real_fitness import real_population_fitness

    dying = smoke_config("env.id=gym:tests.faulty_envs:Dying-v0")
    vae, _ = load_vae(trained.vae)
    model, _ = load_mdnrnn(trained.mdnrnn)
    model_args = {"z_size": model.z_size, "hidden_size": model.hidden_size, "action_size": model.action_size}
    population = np.zeros((3, LinearController(**model_args).num_parameters))
    started = time.monotonic()
    with pytest.raises(WorkerError, match="worker process died"):
        real_population_fitness(dying.env, vae, model, model_args, population, [1, 2], workers=2)
    assert time.monotonic() - started < 60


@pytest.mark.slow
def test_a_finished_dreamer_whose_model_is_gone_writes_it_again_without_training(trained, tmp_path):
    paths = copy_trained_m(trained, tmp_path)
    dreamer_stage.run(smoke_config(), paths, progress=False)
    expected, log_before = load_checkpoint(paths.dreamer, "dreamer"), paths.metrics("dreamer").read_text()
    paths.dreamer.unlink()
    dreamer_stage.run(smoke_config(), paths, progress=False)
    rebuilt = load_checkpoint(paths.dreamer, "dreamer")
    assert rebuilt["update"] == expected["update"]
    for name, tensor in expected["world_model"].items():
        torch.testing.assert_close(rebuilt["world_model"][name], tensor, rtol=0, atol=0)
    assert paths.metrics("dreamer").read_text() == log_before


@pytest.mark.slow
def test_dreamer_does_not_resume_a_run_made_with_another_heldout_split(trained, tmp_path, caplog):
    paths = copy_trained_m(trained, tmp_path)
    dreamer_stage.run(smoke_config("dreamer.updates=2"), paths, progress=False)
    caplog.clear()
    with caplog.at_level("INFO", logger="worldmodels"):
        dreamer_stage.run(smoke_config("dreamer.updates=4", "data.heldout_fraction=0.5"), paths, progress=False)
    assert "identity.heldout_fraction" in caplog.text and "training Dreamer from scratch" in caplog.text
    assert load_checkpoint(paths.last_checkpoint("dreamer"), "dreamer")["identity"]["heldout_fraction"] == 0.5


@pytest.mark.slow
def test_evaluate_with_a_v_of_other_rollouts_advises_training_v_first(trained, tmp_path):
    from worldmodels.stages import collect, evaluate

    paths = _copy_all(trained, tmp_path)
    other = PipelinePaths(tmp_path / "other" / "smoke")
    collect.run(smoke_config("collect.seed=7"), other, progress=False)
    vae_stage.run(smoke_config("collect.seed=7"), other, progress=False)
    paths.vae.write_bytes(other.vae.read_bytes())  # encode would refuse it: the advice starts with train-vae
    with pytest.raises(TrainingOutputError, match=r"trained on the latents of another V.*run `wm train-vae` \("):
        evaluate.run(smoke_config(), paths, progress=False)
