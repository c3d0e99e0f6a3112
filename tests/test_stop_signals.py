"""SIGTERM and SIGINT at random moments, to every stage that does long work: the command stops within seconds
with exit code 143 or 130, leaves no process behind, logs its stop in ``runs.jsonl``, and the same command
then resumes to exactly what an uninterrupted run makes.

Each stage gets ``SIGNALS_PER_STAGE`` signals at moments drawn from a seeded generator: the seed is printed
(``WM_STOP_SEED=<seed>`` reproduces a run's moments). A moment is drawn uniformly over the first 90% of the
uninterrupted run's wall clock, at most ``LATEST_MOMENT_S``, imports included: a signal before the command
installs its handler must stop it too, by Python's own default. A command that finishes before its moment
is compared with the uninterrupted run and the chain starts again from the stage's inputs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import assert_same_rollouts, copy_trained_m
from tests.test_faults import WM, session_processes, strict_json_lines
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.run_record import read_runs

SIGNALS_PER_STAGE = 8
STOP_BOUND_S = 20.0
"""A command not gone this long after its signal counts as hung (the watchdog ends it after 10 s)."""
EXIT_CODES = {signal.SIGTERM: (143, -signal.SIGTERM), signal.SIGINT: (130, -signal.SIGINT)}
"""What a stopped command may exit with: 128 + signal from the handler, or death by the signal itself when
it arrives before the handler is installed (the shell shows both as 143 or 130)."""
TIMING_KEYS = ("seconds", "per_s", "wall")
LATEST_MOMENT_S = 5.0
"""The latest moment drawn, so that the test stays short; later phases of a stage are reached all the same,
since each stopped run commits some work and the chain's next run starts from it."""

BASE_SEED = int(os.environ.get("WM_STOP_SEED", random.SystemRandom().randrange(1 << 30)))


@dataclass(frozen=True)
class Case:
    """One stage under signals: its ``wm`` arguments, what its folder needs first, and how two runs compare."""

    args: tuple[str, ...]
    prepare: Callable[[object, Path], None]
    compare: Callable[[PipelinePaths, PipelinePaths], None]


def _rollouts_only(trained, root: Path) -> None:
    paths = PipelinePaths(root / "smoke").ensure()
    shutil.copyfile(trained.rollouts, paths.rollouts)


def _through_m(trained, root: Path) -> None:
    copy_trained_m(trained, root)


def _through_c(trained, root: Path) -> None:
    paths = copy_trained_m(trained, root)
    shutil.copyfile(trained.controller, paths.controller)
    shutil.copytree(trained.checkpoints_dir, paths.checkpoints_dir, dirs_exist_ok=True)


def _nothing(trained, root: Path) -> None:
    PipelinePaths(root / "smoke").ensure()


def _values(record: dict) -> dict:
    return {key: value for key, value in record.items() if not any(word in key for word in TIMING_KEYS)}


def _same_log(name: str) -> Callable[[PipelinePaths, PipelinePaths], None]:
    def compare(a: PipelinePaths, b: PipelinePaths) -> None:
        assert [_values(r) for r in strict_json_lines(a.metrics(name))] == [
            _values(r) for r in strict_json_lines(b.metrics(name))
        ]

    return compare


def _same_rollouts(a: PipelinePaths, b: PipelinePaths) -> None:
    assert_same_rollouts(a.rollouts, b.rollouts)


def _same_scores(a: PipelinePaths, b: PipelinePaths) -> None:
    for agent in ("worldmodel", "random", "zero"):
        assert json.loads(a.score(agent).read_text())["returns"] == json.loads(b.score(agent).read_text())["returns"]


CASES = {
    "collect": Case(
        ("collect", "--set", "collect.episodes=16", "--set", "collect.workers=2"), _nothing, _same_rollouts
    ),
    "train-vae": Case(("train-vae", "--set", "vae.epochs=3"), _rollouts_only, _same_log("vae")),
    "train-mdnrnn": Case(("train-mdnrnn", "--set", "mdnrnn.epochs=8"), _through_m, _same_log("mdnrnn")),
    "train-controller": Case(
        ("train-controller", "--set", "controller.generations=20"), _through_m, _same_log("controller")
    ),
    "train-controller-real": Case(
        ("train-controller", "--in", "real", "--set", "controller.workers=2", "--set", "controller.generations=2"),
        _through_m,
        _same_log("controller"),
    ),
    "dreamer": Case(("dreamer", "--set", "dreamer.updates=12"), _rollouts_only, _same_log("dreamer")),
    "evaluate": Case(
        ("evaluate", "--set", "evaluate.episodes=4", "--set", "evaluate.workers=2"), _through_c, _same_scores
    ),
}


def _start(case: Case, data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*WM, *case.args, "-p", "smoke", "--data-dir", str(data_dir), "--no-progress"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MUJOCO_GL": "egl"},
    )


def _finish(driver: subprocess.Popen, timeout: float) -> tuple[int | None, str]:
    try:
        _, stderr = driver.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-9", "-s", str(driver.pid)], capture_output=True)
        _, stderr = driver.communicate()
        return None, stderr
    return driver.returncode, stderr


def _left_behind(session: int) -> list[str]:
    deadline = time.monotonic() + 5
    while session_processes(session) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = session_processes(session)
    if left:  # never leave them to the next test
        subprocess.run(["pkill", "-9", "-s", str(session)], capture_output=True)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_a_stop_signal_at_a_random_moment_stops_the_stage_and_the_resume_equals_an_uninterrupted_run(
    smoke_run, tmp_path, name
):
    seed = BASE_SEED + list(CASES).index(name)
    print(f"WM_STOP_SEED={BASE_SEED} (this stage's moments: random.Random({seed}))")
    draw = random.Random(seed)
    case, trained = CASES[name], smoke_run.after("train-controller")

    reference_dir = tmp_path / "reference"
    case.prepare(trained, reference_dir)
    started = time.monotonic()
    reference = _start(case, reference_dir)
    code, stderr = _finish(reference, 300)
    reference_seconds = time.monotonic() - started
    assert code == 0, stderr

    counts = {"sent": 0, "hangs": 0, "swallowed": 0, "left": 0, "completed chains": 0}
    slowest_stop, stressed_dir, fresh = 0.0, tmp_path / "stressed", True
    while counts["sent"] < SIGNALS_PER_STAGE:
        if fresh:
            shutil.rmtree(stressed_dir, ignore_errors=True)
            case.prepare(trained, stressed_dir)
            fresh = False
        sig = draw.choice([signal.SIGTERM, signal.SIGINT])
        moment = draw.uniform(0.2, min(0.9 * reference_seconds, LATEST_MOMENT_S))
        driver = _start(case, stressed_dir)
        time.sleep(moment)
        if driver.poll() is None:
            sent = time.monotonic()
            if sig == signal.SIGINT:
                os.killpg(driver.pid, sig)  # Ctrl-C reaches the whole process group
            else:
                driver.send_signal(sig)  # kill <pid>: the driver alone
            counts["sent"] += 1
            code, stderr = _finish(driver, STOP_BOUND_S)
            slowest_stop = max(slowest_stop, time.monotonic() - sent)
            where = f"{name}: {sig.name} {moment:.2f} s after the start (WM_STOP_SEED={BASE_SEED})"
            counts["hangs"] += code is None
            counts["left"] += len(_left_behind(driver.pid))
            assert code is not None, f"{where}: not stopped after {STOP_BOUND_S:.0f} s\n{stderr}"
            assert counts["left"] == 0, f"{where}: processes left behind"
            runs = read_runs(PipelinePaths(stressed_dir / "smoke"))
            mine = [r["run"] for r in runs if r["event"] == "start" and r["pid"] == driver.pid]
            ends = [r["exit_status"] for r in runs if r["event"] == "end" and mine and r["run"] == mine[0]]
            if code == 0 or ends == [0]:
                # The command finished in the instant before the signal, or as it was ending (a signal in the
                # interpreter's exit ends the process at once with 128 + signal). A command that went on
                # after its handler ran would exit 0 having said it was stopping: a swallowed signal.
                counts["swallowed"] += code == 0 and "stopping;" in stderr
                assert not (code == 0 and "stopping;" in stderr), f"{where}: the command went on\n{stderr}"
                assert code in (0, *EXIT_CODES[sig]), f"{where}: exit code {code}\n{stderr}"
                case.compare(PipelinePaths(reference_dir / "smoke"), PipelinePaths(stressed_dir / "smoke"))
                counts["completed chains"] += 1
                fresh = True
                continue
            assert code in EXIT_CODES[sig], f"{where}: exit code {code}\n{stderr}"
            if mine:  # stopped after it logged its start (not before): its end is logged with the exit status
                assert ends == [code], f"{where}: runs.jsonl ends {ends}"
        else:
            code, stderr = _finish(driver, 300)
            assert code == 0, stderr
            case.compare(PipelinePaths(reference_dir / "smoke"), PipelinePaths(stressed_dir / "smoke"))
            counts["completed chains"] += 1
            fresh = True
    if not fresh:  # the last chain, resumed to its end
        code, stderr = _finish(_start(case, stressed_dir), 300)
        assert code == 0, stderr
        case.compare(PipelinePaths(reference_dir / "smoke"), PipelinePaths(stressed_dir / "smoke"))
        counts["completed chains"] += 1
    print(f"{name}: {counts}, slowest stop {slowest_stop:.1f} s, uninterrupted run {reference_seconds:.1f} s")
    assert counts["hangs"] == counts["swallowed"] == counts["left"] == 0


SWALLOWED = """
import os, signal, sys, time
from worldmodels.core import stopping
stopping.REPEAT_AFTER_S = 0.5
stopping.install()
try:
    os.kill(os.getpid(), signal.SIGTERM)  # raised here, and swallowed as a destructor would swallow it
    time.sleep(5)
except SystemExit:
    pass
print("went on", flush=True)
time.sleep(30)
"""

STUCK = """
import os, signal, threading
from worldmodels.core import stopping
stopping.HARD_STOP_AFTER_S = 2.0
stopping.install()
threading.Thread(target=threading.Event().wait).start()  # never ends: the exit waits for it forever
try:
    os.kill(os.getpid(), signal.SIGTERM)
finally:
    stopping.unwound()
"""

AFTER_THE_COMMAND = """
import atexit, os, signal, time
from worldmodels.core import stopping
stopping.install()
atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(5)))  # lands in the exit's hooks
print("the command's result")  # buffered: the pipe is not a terminal
stopping.unwound()
"""


@pytest.mark.parametrize("script", [SWALLOWED, STUCK, AFTER_THE_COMMAND], ids=["swallowed", "stuck", "at-exit"])
def test_a_stop_that_is_swallowed_or_stuck_still_ends_the_process_with_its_exit_code(script):
    import sys

    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == (130 if script is AFTER_THE_COMMAND else 143), result.stderr
    assert time.monotonic() - started < (4 if script is AFTER_THE_COMMAND else 15)
    if script is STUCK:
        assert "not stopped after 2 s" in result.stderr
    if script is AFTER_THE_COMMAND:  # a stop in the interpreter's exit hooks: an exception there is swallowed
        assert result.returncode == 130, result.stderr
        assert "Exception ignored" not in result.stderr
        assert result.stdout == "the command's result\n"
