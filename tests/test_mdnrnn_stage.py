import json

import numpy as np
import pytest
import torch
from PIL import Image

from worldmodels.config import load_pipeline
from worldmodels.core.checkpoint import load_checkpoint
from worldmodels.core.metrics import MetricsLog
from worldmodels.core.paths import PipelinePaths
from worldmodels.stages import mdnrnn as mdnrnn_stage
from worldmodels.vmc import m_probes, m_training
from worldmodels.vmc.simulator import noise_equivalent

SMOKE = ["vae.epochs=1", "mdnrnn.epochs=4"]


def _config(*overrides):
    return load_pipeline("smoke", [*SMOKE, *overrides])


@pytest.fixture
def encoded(smoke_run):
    """Rollouts, V and latents of the smoke pipeline (the session's shared run: ``SMOKE`` changes M only);
    read only, tests copy them (``_copy``)."""
    return smoke_run.through("encode")


def _copy(encoded, tmp_path, name):
    paths = PipelinePaths(tmp_path / name / "smoke").ensure()
    for source in (encoded.rollouts, encoded.vae, encoded.latents):
        (paths.root / source.name).write_bytes(source.read_bytes())
    return paths


@pytest.mark.slow
def test_training_logs_heldout_losses_and_measures_the_simulator(encoded, tmp_path, caplog):
    paths = _copy(encoded, tmp_path, "run")
    with caplog.at_level("INFO", logger=mdnrnn_stage.logger.name):
        mdnrnn_stage.run(_config(), paths, progress=False)
    records = MetricsLog(paths.metrics("mdnrnn")).read()
    assert [r["epoch"] for r in records if not r.get("simulator")] == [2, 4]
    kept = load_checkpoint(paths.mdnrnn, "mdnrnn")
    assert kept["epoch"] in (2, 4)
    assert (f"mdnrnn.pt keeps epoch {kept['epoch']}, the best held-out loss "
            f"(z NLL {kept['metrics']['heldout/loss/z_nll']:.3f})") in caplog.text
    assert all(r["heldout/loss/z_nll"] == r["heldout/loss/z_nll"] for r in records if not r.get("simulator"))
    simulator = json.loads((paths.metrics_dir / "mdnrnn_simulator.json").read_text())
    assert len(simulator["openloop_latent_error"]) == 10 and len(simulator["openloop_pixel_mse"]) == 10
    assert all(value >= 0 for value in simulator["openloop_pixel_mse"])
    assert len(simulator["real_returns"]) == len(simulator["dream_returns"]) >= 1
    assert simulator["mean_abs_gap"] == pytest.approx(
        sum(abs(d - r) for d, r in zip(simulator["dream_returns"], simulator["real_returns"], strict=True))
        / len(simulator["real_returns"]))
    zero = simulator["zero_action"]
    assert len(zero["real_returns"]) == len(zero["dream_returns"]) == len(simulator["real_returns"])
    assert zero["real_return_mean"] > 0, "cartpole pays for an upright pole at every step"
    assert len(zero["teacher_forced_returns"]) == len(zero["real_returns"])
    assert zero["teacher_forced_return_mean"] == pytest.approx(np.mean(zero["teacher_forced_returns"]))
    sensitivity = simulator["action_sensitivity"]
    assert len(sensitivity["real"]) == len(sensitivity["dream"]) == sensitivity["steps"] >= 1
    assert sensitivity["real"][-1] > 0, "held at -1, 0 and +1 the real cart goes three ways"
    assert sensitivity["ratio"] == pytest.approx(sum(sensitivity["dream"]) / sum(sensitivity["real"]))
    held = simulator["held_action"]
    assert held["actions"] == [-1.0, 0.0, 1.0] and held["episodes"] >= 1
    assert held["real_length_mean"] == [held["steps"]] * 3, "a cartpole episode runs to its end whatever the action"
    assert all(1 <= length <= held["steps"] for length in held["dream_length_mean"])
    assert held["real_return_mean"][1] > max(held["real_return_mean"][0], held["real_return_mean"][2]), \
        "doing nothing keeps the pole up longer than pushing one way"
    assert held["largest_overestimate"] == pytest.approx(
        max(d - r for d, r in zip(held["dream_return_mean"], held["real_return_mean"], strict=True)))
    for kind in ("real", "dream"):  # the per-step rewards add up to the returns, measured apart
        assert [len(curve) for curve in held[f"{kind}_reward_per_step"]] == [held["steps"]] * 3
        np.testing.assert_allclose(np.sum(held[f"{kind}_reward_per_step"], axis=1), held[f"{kind}_return_mean"],
                                   rtol=1e-5)
    assert held["real_reward_per_step"][1][0] > 0 and held["real_reward_per_step"][1] != held["real_reward_per_step"][0]
    noise = held["zero_action_noise"]
    assert noise["stds"] == list(_config().mdnrnn.zero_action_noise_stds) == [0.003, 0.01, 0.03, 0.1]
    assert len(noise["real_return_mean"]) == len(noise["stds"])
    assert noise["real_return_mean"][-1] != pytest.approx(held["real_return_mean"][1], abs=1e-6), \
        "the noisy zero action is played, not the zero action"
    assert noise["dream_as_noise"] == noise_equivalent(noise["stds"], noise["real_return_mean"],
                                                       held["real_return_mean"][1], held["dream_return_mean"][1])
    for name in ("openloop_vm", "dream_rollouts", "held_action_rewards"):
        Image.open(paths.figure(name)).verify()
    figure = mdnrnn_stage.run_dream(_config(), paths, 1.0, count=1)
    Image.open(figure).verify()
    for video in ("dream_vs_real", "dream_vs_real_tau1"):
        gif = Image.open(paths.video(video))
        assert gif.format == "GIF" and gif.n_frames >= 2
    # A run measured before the per-step figure existed: asked again, M is measured again, not retrained.
    trained = paths.mdnrnn.stat().st_mtime_ns
    paths.figure("held_action_rewards").unlink()
    old = {key: value for key, value in held.items() if not key.endswith("_per_step")}
    paths.simulator_metrics.write_text(json.dumps(simulator | {"held_action": old}))
    mdnrnn_stage.run(_config(), paths, progress=False)
    assert paths.mdnrnn.stat().st_mtime_ns == trained
    Image.open(paths.figure("held_action_rewards")).verify()
    remeasured = json.loads(paths.simulator_metrics.read_text())["held_action"]
    assert remeasured["dream_reward_per_step"] == held["dream_reward_per_step"]
    # ... and one measured before the zero action's noise curve existed, figure and all.
    without_noise = {key: value for key, value in remeasured.items() if key != "zero_action_noise"}
    paths.simulator_metrics.write_text(json.dumps(simulator | {"held_action": without_noise}))
    mdnrnn_stage.run(_config(), paths, progress=False)
    assert paths.mdnrnn.stat().st_mtime_ns == trained
    remeasured = json.loads(paths.simulator_metrics.read_text())["held_action"]
    assert remeasured["zero_action_noise"] == noise
    # Asked at another dream temperature, the same M is measured at it; asked again, left alone.
    mdnrnn_stage.run(_config("mdnrnn.temperature=0"), paths, progress=False)
    assert paths.mdnrnn.stat().st_mtime_ns == trained
    cold = json.loads(paths.simulator_metrics.read_text())
    assert cold["temperature"] == cold["held_action"]["temperature"] == 0.0
    assert cold["held_action"]["real_return_mean"] == held["real_return_mean"], "reality has no temperature"
    measured = paths.simulator_metrics.stat().st_mtime_ns
    mdnrnn_stage.run(_config("mdnrnn.temperature=0"), paths, progress=False)
    assert paths.simulator_metrics.stat().st_mtime_ns == measured
    # The noise curve is a probe a pipeline opts into: asked without it, the same M is measured without
    # it (an env it means nothing on plays none of its episodes); asked with it again, it is back.
    mdnrnn_stage.run(_config("mdnrnn.temperature=0", "mdnrnn.zero_action_noise_stds=[]"), paths, progress=False)
    assert paths.mdnrnn.stat().st_mtime_ns == trained
    plain = json.loads(paths.simulator_metrics.read_text())["held_action"]
    assert "zero_action_noise" not in plain and plain["real_return_mean"] == held["real_return_mean"]
    mdnrnn_stage.run(_config("mdnrnn.temperature=0", "mdnrnn.zero_action_noise_stds=[0.01]"), paths, progress=False)
    assert json.loads(paths.simulator_metrics.read_text())["held_action"]["zero_action_noise"]["stds"] == [0.01]
    assert paths.mdnrnn.stat().st_mtime_ns == trained


@pytest.mark.slow
def test_a_resumed_run_matches_an_uninterrupted_one(encoded, tmp_path):
    resumed = _copy(encoded, tmp_path, "resumed")
    mdnrnn_stage.run(_config("mdnrnn.epochs=2"), resumed, progress=False)
    first = load_checkpoint(resumed.last_checkpoint("mdnrnn"), "mdnrnn")
    mdnrnn_stage.run(_config("mdnrnn.epochs=4"), resumed, progress=False)
    second = load_checkpoint(resumed.last_checkpoint("mdnrnn"), "mdnrnn")
    assert (first["epoch"], second["epoch"]) == (2, 4)
    steps = int(second["optimizer"]["state"][0]["step"])
    assert steps == 2 * int(first["optimizer"]["state"][0]["step"])
    whole = _copy(encoded, tmp_path, "whole")
    mdnrnn_stage.run(_config("mdnrnn.epochs=4"), whole, progress=False)
    uninterrupted = load_checkpoint(whole.last_checkpoint("mdnrnn"), "mdnrnn")
    for name, value in uninterrupted["model"].items():
        torch.testing.assert_close(second["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_cosine_run_resumes_its_schedule_and_a_longer_one_starts_over(encoded, tmp_path, monkeypatch):
    cosine = "mdnrnn.learning_rate_schedule=cosine"
    whole = _copy(encoded, tmp_path, "whole")
    mdnrnn_stage.run(_config(cosine, "mdnrnn.epochs=4"), whole, progress=False)
    uninterrupted = load_checkpoint(whole.last_checkpoint("mdnrnn"), "mdnrnn")
    # Asked for more epochs, a cosine run is another run: it starts over (its schedule spans the epochs).
    longer = _copy(encoded, tmp_path, "longer")
    mdnrnn_stage.run(_config(cosine, "mdnrnn.epochs=2"), longer, progress=False)
    mdnrnn_stage.run(_config(cosine, "mdnrnn.epochs=4"), longer, progress=False)
    # Stopped after its epoch-2 checkpoint, it continues the same schedule.
    stopped = _copy(encoded, tmp_path, "stopped")
    train_epoch = mdnrnn_stage.train_epoch

    def stop_at_epoch_3(model, optimizer, train, epoch, *args):
        if epoch == 3:
            raise KeyboardInterrupt
        return train_epoch(model, optimizer, train, epoch, *args)

    monkeypatch.setattr(mdnrnn_stage, "train_epoch", stop_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        mdnrnn_stage.run(_config(cosine, "mdnrnn.epochs=4"), stopped, progress=False)
    monkeypatch.setattr(mdnrnn_stage, "train_epoch", train_epoch)
    mdnrnn_stage.run(_config(cosine, "mdnrnn.epochs=4"), stopped, progress=False)
    for paths in (longer, stopped):
        second = load_checkpoint(paths.last_checkpoint("mdnrnn"), "mdnrnn")
        assert second["optimizer"]["param_groups"][0]["lr"] == uninterrupted["optimizer"]["param_groups"][0]["lr"]
        for name, value in uninterrupted["model"].items():
            torch.testing.assert_close(second["model"][name], value, rtol=1e-5, atol=1e-6, msg=name)
    constant = load_checkpoint(_trained(encoded, tmp_path, "constant"), "mdnrnn")
    assert constant["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert 0 < uninterrupted["optimizer"]["param_groups"][0]["lr"] < 1e-3 / 50, "near 0 at the last batch"


def _trained(encoded, tmp_path, name, *overrides):
    paths = _copy(encoded, tmp_path, name)
    mdnrnn_stage.run(_config("mdnrnn.epochs=4", *overrides), paths, progress=False)
    return paths.last_checkpoint("mdnrnn")


@pytest.mark.slow
def test_an_m_blind_to_the_action_has_no_action_sensitivity(encoded, tmp_path):
    """The same M with the action's input weights zeroed: its futures cannot part by action (ratio 0),
    while the real ones do."""
    from worldmodels.artifacts import load_mdnrnn, load_vae
    from worldmodels.data.store import RolloutReader

    paths = _copy(encoded, tmp_path, "blind")
    config = _config()
    mdnrnn_stage.run(config, paths, progress=False)
    model, _ = load_mdnrnn(paths.mdnrnn)
    vae, _ = load_vae(paths.vae)
    rollouts = RolloutReader(paths.rollouts)
    seeing = m_probes.action_sensitivity(model, vae, config, rollouts, np.array([0, 1]), steps=6)
    with torch.no_grad():
        model.lstm.weight_ih_l0[:, model.z_size:] = 0.0
    blind = m_probes.action_sensitivity(model, vae, config, rollouts, np.array([0, 1]), steps=6)
    assert blind["real"] == seeing["real"] and blind["ratio"] == 0.0 < seeing["ratio"]


@pytest.mark.slow
def test_an_m_on_vs_means_ignores_vs_sigma_and_dreams_from_the_mean(encoded, tmp_path):
    """mdnrnn.latents=mean: M trains on mu (two runs whose latents differ only in logvar end with
    the same weights, while the paper's sampled z makes them differ), the checkpoint says so, and its
    dreams start at the start frame's mu exactly."""
    import h5py

    from worldmodels.artifacts import load_mdnrnn
    from worldmodels.vmc.dream import DreamEnv

    def trained(name, latents, logvar_shift):
        paths = _copy(encoded, tmp_path, name)
        with h5py.File(paths.latents, "r+") as handle:
            handle["logvar"][...] = handle["logvar"][...] + logvar_shift
        mdnrnn_stage.run(_config("mdnrnn.epochs=2", f"mdnrnn.latents={latents}"), paths, progress=False)
        return load_checkpoint(paths.last_checkpoint("mdnrnn"), "mdnrnn"), paths

    mean_a, paths = trained("mean_a", "mean", 0.0)
    mean_b, _ = trained("mean_b", "mean", 3.0)
    sampled_a, _ = trained("sampled_a", "sampled", 0.0)
    sampled_b, _ = trained("sampled_b", "sampled", 3.0)
    for name, value in mean_a["model"].items():
        torch.testing.assert_close(mean_b["model"][name], value, msg=name)
    assert not torch.equal(sampled_a["model"]["lstm.weight_ih_l0"], sampled_b["model"]["lstm.weight_ih_l0"])
    assert mean_a["model_args"]["latents"] == "mean" and "latents" not in sampled_a["model_args"]
    model, _ = load_mdnrnn(paths.mdnrnn)
    assert model.latents == "mean"
    mu, logvar = torch.randn(3, model.z_size), torch.zeros(3, model.z_size)
    torch.testing.assert_close(DreamEnv(model, mu, logvar).reset(3, starts=torch.arange(3)), mu)
    model.latents = "sampled"
    assert not torch.allclose(DreamEnv(model, mu, logvar).reset(3, starts=torch.arange(3)), mu)


# Held-out losses by epoch: best at epoch 3, then worse; with mdnrnn.patience=2 (measured every epoch)
# training stops at epoch 5. Without patience it would go on to the planned 8.
_SCRIPTED_HELDOUT = {0: 10.0, 1: 5.0, 2: 4.0, 3: 3.0, 4: 3.5, 5: 3.6, 6: 2.0, 7: 1.0, 8: 0.5}


def _scripted_heldout(monkeypatch, stop_before: int | None = None):
    """M's held-out loss follows ``_SCRIPTED_HELDOUT`` (0: the untrained M's); with ``stop_before``, the run is
    interrupted as epoch ``stop_before`` starts."""
    train_epoch, heldout_losses = m_training.train_epoch, m_training.heldout_losses  # not an earlier script's
    current = {"epoch": 0}

    def scripted_train_epoch(model, optimizer, train, epoch, *args):
        if epoch == stop_before:
            raise KeyboardInterrupt
        current["epoch"] = epoch
        return train_epoch(model, optimizer, train, epoch, *args)

    def scripted_heldout_losses(*args):
        losses = heldout_losses(*args)
        losses["heldout/loss/total"] = losses["heldout/loss/z_nll"] = _SCRIPTED_HELDOUT[current["epoch"]]
        return losses

    monkeypatch.setattr(mdnrnn_stage, "train_epoch", scripted_train_epoch)
    monkeypatch.setattr(mdnrnn_stage, "heldout_losses", scripted_heldout_losses)


@pytest.mark.slow
def test_early_stopping_keeps_the_best_heldout_epoch_and_a_resumed_run_stops_where_an_uninterrupted_one_did(
        encoded, tmp_path, monkeypatch):
    config = _config("mdnrnn.epochs=8", "mdnrnn.eval_every=1", "mdnrnn.patience=2")
    whole = _copy(encoded, tmp_path, "whole")
    _scripted_heldout(monkeypatch)
    mdnrnn_stage.run(config, whole, progress=False)
    epochs = [r["epoch"] for r in MetricsLog(whole.metrics("mdnrnn")).read() if not r.get("simulator")]
    assert epochs == [1, 2, 3, 4, 5]
    assert load_checkpoint(whole.mdnrnn, "mdnrnn")["epoch"] == 3
    assert load_checkpoint(whole.last_checkpoint("mdnrnn"), "mdnrnn")["epoch"] == 5
    # Asked again, a stopped run stays stopped (its held-out loss would have improved at epoch 6).
    mdnrnn_stage.run(config, whole, progress=False)
    assert load_checkpoint(whole.last_checkpoint("mdnrnn"), "mdnrnn")["epoch"] == 5
    # Interrupted at epoch 5, then resumed: it stops at 5 too, with the same epochs logged once each.
    resumed = _copy(encoded, tmp_path, "resumed")
    _scripted_heldout(monkeypatch, stop_before=5)
    with pytest.raises(KeyboardInterrupt):
        mdnrnn_stage.run(config, resumed, progress=False)
    _scripted_heldout(monkeypatch)
    mdnrnn_stage.run(config, resumed, progress=False)
    assert [r["epoch"] for r in MetricsLog(resumed.metrics("mdnrnn")).read() if not r.get("simulator")] == epochs
    assert load_checkpoint(resumed.mdnrnn, "mdnrnn")["epoch"] == 3
    # Without patience the same losses train every planned epoch, and the best is the last.
    planned = _copy(encoded, tmp_path, "planned")
    mdnrnn_stage.run(_config("mdnrnn.epochs=8", "mdnrnn.eval_every=1"), planned, progress=False)
    assert load_checkpoint(planned.mdnrnn, "mdnrnn")["epoch"] == 8
