"""A Ray cluster of two nodes on this one machine (`ray start --head`, then `ray start --address` for a
second node), and `wm collect` run through it as a user would: the same file as the local pool, and a
driver killed mid-run resumes to it. The cluster is stopped with `ray stop` at the end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import assert_same_rollouts

pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[dev]')")

# A two-node Ray cluster, started and stopped.
# Marked ray: `make test` runs these apart from the parallel tests, since two Rays started at
# once on one machine join each other.
pytestmark = [pytest.mark.slow, pytest.mark.ray]

RAY = str(Path(sys.executable).parent / "ray")
WM = [sys.executable, "-m", "worldmodels.cli"]
COLLECT = ["collect", "-p", "smoke", "--set", "collect.episodes=8", "--no-progress"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env() -> dict[str, str]:
    # A test cluster on one machine, reachable from it only: without Ray's token authentication (which its
    # second node would need the head's token for).
    return {**os.environ, "MUJOCO_GL": "egl", "RAY_AUTH_MODE": "disabled",
            "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}


@pytest.fixture(scope="module")
def two_nodes():
    """A two-node Ray cluster for this module alone (no smoke artifacts), stopped at its end."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--num-cpus=1", "--disable-usage-stats"]
    try:
        subprocess.run([RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
                       check=True, capture_output=True, env=_env(), timeout=180)
        subprocess.run([RAY, "start", f"--address={address}", *common], check=True, capture_output=True,
                       env=_env(), timeout=180)
        yield address
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)


def test_collect_through_a_two_node_cluster_writes_the_local_file(two_nodes, tmp_path):
    local = subprocess.run([*WM, *COLLECT, "--data-dir", str(tmp_path / "local")], capture_output=True,
                           text=True, env=_env(), timeout=300)
    assert local.returncode == 0, local.stderr
    cluster = subprocess.run([*WM, *COLLECT, "--set", "collect.workers=2", "--set", "runtime.backend=ray",
                              "--set", f"runtime.ray_address={two_nodes}", "--data-dir", str(tmp_path / "ray")],
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert cluster.returncode == 0, cluster.stderr
    assert "ray: 2 CPUs on 2 node(s)" in cluster.stdout
    assert_same_rollouts(tmp_path / "local" / "smoke" / "rollouts.h5", tmp_path / "ray" / "smoke" / "rollouts.h5")


def test_a_driver_killed_mid_collect_on_the_cluster_resumes_to_the_same_file(two_nodes, tmp_path):
    args = [*WM, *COLLECT, "--set", "collect.workers=2", "--set", "runtime.backend=ray",
            "--set", f"runtime.ray_address={two_nodes}"]
    whole = subprocess.run([*args, "--data-dir", str(tmp_path / "whole")], capture_output=True, text=True,
                           env=_env(), timeout=600)
    assert whole.returncode == 0, whole.stderr
    driver = subprocess.Popen([*args, "--data-dir", str(tmp_path / "killed")], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=_env())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it after its third committed episode
        line = driver.stdout.readline()
        if not line or line.startswith("committed episode 3/"):
            break
    driver.kill()
    driver.wait()
    resumed = subprocess.run([*args, "--data-dir", str(tmp_path / "killed")], capture_output=True, text=True,
                             env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_rollouts(tmp_path / "whole" / "smoke" / "rollouts.h5", tmp_path / "killed" / "smoke" / "rollouts.h5")
