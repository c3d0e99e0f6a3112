"""One writer per stage (the lock), the record of each command (runs.jsonl), config.yaml written section by
section by the stage that ran with it, metrics lines only after their checkpoints, and save errors that name
their file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.conftest import smoke_config
from tests.test_faults import WM, strict_json_lines
from worldmodels.cli import main
from worldmodels.core import training
from worldmodels.core.checkpoint import atomic_write
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.run_record import RunLocked, read_runs, stage_lock
from worldmodels.stages import vae as vae_stage

HOLD_LOCK = """
import sys, time
from pathlib import Path
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.run_record import stage_lock
with stage_lock(PipelinePaths(Path(sys.argv[1])), sys.argv[2]):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold(paths: PipelinePaths, command: str) -> subprocess.Popen:
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(paths.root), command], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_of_a_stage_is_refused_naming_the_first_and_a_killed_holder_blocks_nothing(tmp_path):
    paths = PipelinePaths(tmp_path / "smoke")
    holder = _hold(paths, "train-vae")
    try:
        with pytest.raises(RunLocked, match=rf"process {holder.pid} \(`.*`, since 20\d\d-.*\) runs `train-vae`"):
            with stage_lock(paths, "train-vae"):
                pass
        with pytest.raises(RunLocked):  # encode writes what train-vae writes: the same lock
            with stage_lock(paths, "encode"):
                pass
        with stage_lock(paths, "dreamer"):  # another stage's outputs: free to run beside it
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with stage_lock(paths, "train-vae"):  # the kernel dropped the dead holder's lock; its file stays
        assert (paths.root / "locks" / "train-vae.lock").is_file()


@pytest.mark.slow
def test_two_trainings_of_one_run_the_second_refused_at_once(smoke_run, tmp_path):
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    paths.rollouts.write_bytes(smoke_run.through("collect").rollouts.read_bytes())
    args = ["train-vae", "-p", "smoke", "--set", "vae.epochs=50", "--data-dir", str(tmp_path), "--no-progress"]
    first = subprocess.Popen([*WM, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "MUJOCO_GL": "egl"})
    try:
        lock = paths.root / "locks" / "train-vae.lock"
        deadline = time.monotonic() + 60
        while not (lock.is_file() and str(first.pid) in lock.read_text()):
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.1)
        started = time.monotonic()
        second = subprocess.run([*WM, *args], capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl"})
        assert second.returncode == 1
        assert f"process {first.pid}" in second.stderr and "runs `train-vae`" in second.stderr
        assert time.monotonic() - started < 30  # refused, not queued behind the first
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(60) == 143
    epochs = [r["epoch"] for r in strict_json_lines(paths.metrics("vae"))] if paths.metrics("vae").is_file() else []
    assert epochs == sorted(set(epochs))  # one writer: no epoch twice


def test_each_command_is_logged_with_its_settings_commit_and_exit_status(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["collect", "-p", "smoke", "--data-dir", str(tmp_path), "--no-progress"])
    assert ok.exit_code == 0, ok.output
    refused = runner.invoke(main, ["train-vae", "-p", "smoke", "--set", "data.heldout_fraction=0.99",
                                   "--data-dir", str(tmp_path), "--no-progress"])
    assert refused.exit_code == 1
    runs = read_runs(PipelinePaths(tmp_path / "smoke"))
    assert [(r["command"], r["event"]) for r in runs] == [("collect", "start"), ("collect", "end"),
                                                          ("train-vae", "start"), ("train-vae", "end")]
    start, end = runs[0], runs[1]
    assert start["run"] == end["run"] != runs[2]["run"]
    assert start["settings"]["collect"]["episodes"] == 4 and "resolved_runtime" in start["settings"]
    assert start["git_commit"] is None or len(start["git_commit"].split("+")[0]) == 40
    assert end["exit_status"] == 0 and end["seconds"] > 0 and end["end"] >= start["start"]
    assert runs[3]["exit_status"] == 1 and "no frames to train on" in runs[3]["error"]


def test_config_yaml_keeps_each_section_as_the_stage_that_ran_with_it_wrote_it(tmp_path):
    runner = CliRunner()
    for args in (["collect", "--set", "collect.episodes=6"], ["train-vae"]):
        result = runner.invoke(main, [*args, "-p", "smoke", "--data-dir", str(tmp_path), "--no-progress"])
        assert result.exit_code == 0, result.output
    record = yaml.safe_load((tmp_path / "smoke" / "config.yaml").read_text())
    assert record["collect"]["episodes"] == 6  # what rollouts.h5 holds, not the pipeline file's 4
    assert record["vae"] == smoke_config().to_dict()["vae"]
    assert record["made_by"]["collect"]["command"] == "collect"
    assert record["made_by"]["vae"]["command"] == "train-vae"
    assert record["made_by"]["runtime"]["command"] == "train-vae"
    assert "mdnrnn" not in record  # no stage has run with it


def test_a_metrics_line_is_written_only_after_its_checkpoint(smoke_run, tmp_path, monkeypatch):
    paths = PipelinePaths(tmp_path / "smoke").ensure()
    paths.rollouts.write_bytes(smoke_run.through("collect").rollouts.read_bytes())
    saved = []

    def full_disk_at_epoch_two(state, path):
        if path == paths.last_checkpoint("vae") and state["epoch"] == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(path)
        return save_checkpoint(state, path)

    save_checkpoint = training.save_checkpoint
    monkeypatch.setattr(training, "save_checkpoint", full_disk_at_epoch_two)
    with pytest.raises(OSError, match="No space left"):
        vae_stage.run(smoke_config("vae.epochs=3"), paths, progress=False)
    assert [r["epoch"] for r in strict_json_lines(paths.metrics("vae"))] == [1]  # epoch 2 never reached disk
    monkeypatch.setattr(training, "save_checkpoint", save_checkpoint)
    vae_stage.run(smoke_config("vae.epochs=3"), paths, progress=False)
    assert [r["epoch"] for r in strict_json_lines(paths.metrics("vae"))] == [1, 2, 3]


def test_a_write_error_that_names_no_file_is_raised_naming_the_file(tmp_path):
    def full_disk(temporary: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")  # as torch and h5py raise it: no file name

    target = tmp_path / "checkpoints" / "vae_last.pt"
    with pytest.raises(OSError) as raised:
        atomic_write(target, full_disk)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)
    assert list(target.parent.iterdir()) == []  # no temporary left behind


def test_a_stop_signal_is_logged_with_its_exit_status(tmp_path):
    driver = subprocess.Popen([*WM, "collect", "-p", "smoke", "--set", "collect.episodes=400", "--data-dir",
                               str(tmp_path), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True, env={**os.environ, "MUJOCO_GL": "egl"})
    for line in driver.stdout:
        if "committed episode" in line:
            break
    driver.send_signal(signal.SIGINT)
    assert driver.wait(30) == 130
    end = read_runs(PipelinePaths(tmp_path / "smoke"))[-1]
    assert end["event"] == "end" and end["exit_status"] == 130
    times = json.loads((tmp_path / "smoke" / "metrics" / "stage_times.json").read_text())
    assert times["collect"]["pending_seconds"] > 0


def test_a_file_system_that_cannot_lock_runs_the_stage_with_a_warning(tmp_path, monkeypatch, caplog):
    import fcntl

    def cannot_lock(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", cannot_lock)
    with stage_lock(PipelinePaths(tmp_path / "smoke"), "collect"):
        pass
    assert "cannot lock files" in caplog.text


def test_a_step_checkpointed_but_not_logged_is_logged_by_the_resume(smoke_run, tmp_path, monkeypatch):
    from worldmodels.core.metrics import MetricsLog

    paths = PipelinePaths(tmp_path / "smoke").ensure()
    paths.rollouts.write_bytes(smoke_run.through("collect").rollouts.read_bytes())
    append = MetricsLog.append

    def stopped_before_the_line_of_epoch_two(log, record):
        if record.get("epoch") == 2:
            raise SystemExit(143)  # the checkpoint of epoch 2 is on disk, its line is not
        append(log, record)

    monkeypatch.setattr(MetricsLog, "append", stopped_before_the_line_of_epoch_two)
    with pytest.raises(SystemExit):
        vae_stage.run(smoke_config("vae.epochs=3"), paths, progress=False)
    assert [r["epoch"] for r in strict_json_lines(paths.metrics("vae"))] == [1]
    monkeypatch.setattr(MetricsLog, "append", append)
    vae_stage.run(smoke_config("vae.epochs=3"), paths, progress=False)
    assert [r["epoch"] for r in strict_json_lines(paths.metrics("vae"))] == [1, 2, 3]
