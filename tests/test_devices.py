"""The smoke pipeline end to end through the CLI on every device this machine has (``--device``)."""

import json

import pytest
import torch
import yaml
from click.testing import CliRunner

from tests.conftest import DEVICES
from worldmodels.cli import main
from worldmodels.core.checkpoint import load_checkpoint
from worldmodels.core.paths import PipelinePaths

STAGES = ["collect", "train-vae", "encode", "train-mdnrnn", "train-controller", "evaluate", "dreamer"]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_the_smoke_pipeline_runs_end_to_end_on_the_device(device, tmp_path):
    runner = CliRunner()
    options = ["--pipeline", "smoke", "--data-dir", str(tmp_path), "--device", device, "--no-progress"]
    for stage in STAGES:
        result = runner.invoke(main, [stage, *options])
        assert result.exit_code == 0, f"wm {stage} --device {device}: {result.output}"
    assert f"runtime: {device}" in result.output  # the resolved choice is printed
    paths = PipelinePaths(tmp_path / "smoke")
    resolved = yaml.safe_load(paths.config.read_text())["resolved_runtime"]
    assert resolved["device"].startswith(device) and resolved["precision"] in ("fp32", "bf16")
    for path, kind in ((paths.vae, "vae"), (paths.mdnrnn, "mdnrnn"), (paths.dreamer, "dreamer")):
        assert load_checkpoint(path, kind)["runtime"]["device"].startswith(device), path
    for name in ("worldmodel", "zero", "dreamer"):
        score = json.loads(paths.score(name).read_text())
        assert len(score["returns"]) == 2 and all(r >= 0 for r in score["returns"])
    mdnrnn_metrics = [json.loads(line) for line in paths.metrics("mdnrnn").read_text().splitlines()]
    assert all(torch.isfinite(torch.tensor(record["heldout/loss/total"])) for record in mdnrnn_metrics
               if "heldout/loss/total" in record)


def test_asking_for_cuda_where_there_is_none_is_a_clear_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    result = CliRunner().invoke(main, ["collect", "--pipeline", "smoke", "--data-dir", str(tmp_path),
                                       "--device", "cuda"])
    assert result.exit_code != 0
    assert "runtime.device: 'cuda' asked for, but torch sees no CUDA device" in result.output
