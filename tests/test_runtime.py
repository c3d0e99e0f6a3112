"""The runtime: device and precision resolution, and checkpoints that move between devices."""

import os

import pytest
import torch

from tests.conftest import DEVICES, tolerance
from worldmodels.artifacts import load_mdnrnn
from worldmodels.config import ConfigError, RuntimeConfig, load_pipeline
from worldmodels.core.checkpoint import load_checkpoint, save_checkpoint
from worldmodels.core.runtime import resolve, resolve_device, resolve_precision
from worldmodels.models.mdnrnn import MDNRNN

CPU = torch.device("cpu")


def _cpu_with(native: bool):
    return lambda device: native


def test_auto_precision_is_fp32_on_a_cpu_without_native_bf16_and_bf16_on_one_with_it():
    assert resolve_precision("auto", CPU, _cpu_with(False))[0] == "fp32"
    assert resolve_precision("auto", CPU, _cpu_with(True))[0] == "bf16"


def test_auto_precision_is_fp32_on_a_gpu_even_one_with_native_bf16():
    precision, why = resolve_precision("auto", torch.device("cuda"), lambda device: True)
    assert precision == "fp32" and "GPU" in why
    assert resolve_precision("bf16", torch.device("cuda"), lambda device: True) == ("bf16", "asked for")


def test_an_explicit_precision_wins_and_says_when_it_will_be_slow():
    assert resolve_precision("fp32", CPU, _cpu_with(True)) == ("fp32", "asked for")
    precision, why = resolve_precision("bf16", CPU, _cpu_with(False))
    assert precision == "bf16" and "emulates" in why


def test_the_resolved_runtime_autocasts_only_in_bf16():
    fp32 = resolve(RuntimeConfig(device="cpu", precision="auto"), native_bf16=_cpu_with(False))
    bf16 = resolve(RuntimeConfig(device="cpu", precision="auto"), native_bf16=_cpu_with(True))
    layer = torch.nn.Linear(4, 4)
    with fp32.autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.float32
    with bf16.autocast():
        assert layer(torch.ones(1, 4)).dtype == torch.bfloat16
    assert bf16.record()["precision"] == "bf16" and fp32.record()["device"] == "cpu"


def test_auto_device_is_cuda_only_when_torch_sees_one():
    assert resolve_device("auto", cuda_available=False) == CPU
    assert resolve_device("auto", cuda_available=True) == torch.device("cuda")
    assert resolve_device("cuda:1", cuda_available=True, cuda_count=2) == torch.device("cuda", 1)


@pytest.mark.parametrize("spec, count, message", [("cuda", 0, "sees no CUDA device"),
                                                  ("cuda:2", 2, "sees 2 CUDA device")])
def test_a_device_this_machine_lacks_is_a_clear_error(spec, count, message):
    with pytest.raises(ConfigError, match=f"runtime.device: .*{message}"):
        resolve_device(spec, cuda_available=count > 0, cuda_count=count)


def test_threads_zero_means_one_per_core_and_apply_sets_torch():
    before = torch.get_num_threads()
    try:
        runtime = resolve(RuntimeConfig(device="cpu", threads=1)).apply()
        assert runtime.threads == 1 and torch.get_num_threads() == 1
        assert resolve(RuntimeConfig(device="cpu")).threads == (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("override, message", [
    ("runtime.device=gpu", "runtime.device: expected auto, cpu, cuda or cuda:N"),
    ("runtime.threads=-1", "runtime.threads: must be >= 0"),
    ("runtime.precision=fp16", "runtime.precision: must be one of"),
    ("dreamer.bf16=true", "dreamer.bf16: moved to runtime.precision"),
    ("vae.threads=1", "vae.threads: moved to runtime.threads"),
])
def test_bad_or_moved_runtime_settings_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load_pipeline("smoke", [override])


@pytest.mark.parametrize("saved_on", DEVICES)
@pytest.mark.parametrize("loaded_on", DEVICES)
def test_a_checkpoint_saved_on_one_device_loads_on_another(saved_on, loaded_on, tmp_path):
    torch.manual_seed(0)
    model = MDNRNN(z_size=3, action_size=1, hidden_size=8, mixtures=2).to(saved_on)
    path = tmp_path / "mdnrnn.pt"
    save_checkpoint({"kind": "mdnrnn", "model": model.state_dict(), "epoch": 1,
                     "model_args": {"z_size": 3, "action_size": 1, "hidden_size": 8, "mixtures": 2,
                                    "mixture": "per_dimension"}}, path)
    assert load_checkpoint(path, "mdnrnn")["model"]["lstm.weight_ih_l0"].device == CPU
    loaded, _ = load_mdnrnn(path, loaded_on)
    assert next(loaded.parameters()).device.type == loaded_on
    z, actions = torch.randn(2, 5, 3), torch.rand(2, 5, 1)
    with torch.no_grad():
        expected = model.eval()(z.to(saved_on), actions.to(saved_on))[0].means.cpu()
        got = loaded(z.to(loaded_on), actions.to(loaded_on))[0].means.cpu()
    torch.testing.assert_close(got, expected, **tolerance(saved_on, loaded_on))
