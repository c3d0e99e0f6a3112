"""Stage `train-mdnrnn`: M on V's latents, then M measured as a simulator.

Training: episodes of ``latents.h5`` cut into padded windows (``data/sequences.py``), z drawn
afresh from (mu, logvar) for every batch, the fused ``nn.LSTM``, Adam with elementwise gradient
clipping. Every ``eval_every`` epochs: held-out losses (z = mu) to ``metrics/mdnrnn.jsonl``, the
resume state to ``checkpoints/mdnrnn_last.pt`` and, when held-out loss improves, ``mdnrnn.pt``.

After training: open-loop latent and pixel error against horizon, the dream's replay gap, the
zero-action and held-action dreams against the real env (and the real zero action under small
action noise: how far off the dream of doing nothing is, in the env's own units), and M's action
sensitivity, on the held-out episodes (``vmc/simulator.py``, ``vmc/m_probes.py``), written to
``metrics/mdnrnn_simulator.json`` and the last line of ``metrics/mdnrnn.jsonl``; figures
``openloop_vm.png``, ``held_action_rewards.png`` (the held-action episodes' reward at every step,
real against dream) and ``dream_rollouts.png``, and the video ``dream_vs_real.gif`` (a held-out
episode beside M's dream with its actions).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from worldmodels.artifacts import MDNRNN_KIND, load_mdnrnn, load_vae, vae_identity
from worldmodels.config import PipelineConfig
from worldmodels.core.checkpoint import atomic_write, file_sha256
from worldmodels.core.metrics import MetricsLog, json_text
from worldmodels.core.paths import PipelinePaths
from worldmodels.core.runtime import Runtime, resolve
from worldmodels.core.training import TrainingRun
from worldmodels.data.latents import LatentReader
from worldmodels.data.sequences import build_sequences
from worldmodels.data.split import repeat_played, split_episodes
from worldmodels.data.store import RolloutReader
from worldmodels.errors import UserValueError
from worldmodels.models.mdnrnn import MDNRNN, MDNRNNEnsemble
from worldmodels.models.vae import frames_to_input
from worldmodels.reporting.figures import frame_rows, held_action_rewards, openloop_strip
from worldmodels.vmc.dream import DreamEnv
from worldmodels.vmc.m_probes import (
    HELD_ACTIONS,
    action_sensitivity,
    held_action_calibration,
    replay_gap,
    zero_action_calibration,
)
from worldmodels.vmc.m_training import heldout_losses, settings_that_matter, train_epoch
from worldmodels.vmc.simulator import (
    REPORTED_HORIZONS,
    decode,
    describe_zero_action_noise,
    openloop_episodes,
    openloop_errors,
)
from worldmodels.vmc.videos import dream_with_actions, write_gif

logger = logging.getLogger(__name__)

CHECKPOINT_KIND = MDNRNN_KIND
HELD_ACTION_FIGURE = "held_action_rewards"
DREAM_TEMPERATURES = (0.5, 1.0, 1.5)


def run(config: PipelineConfig, paths: PipelinePaths, progress: bool = True, start_from: Path | None = None) -> Path:
    """Train (or continue training) M, then measure it as a simulator; returns ``mdnrnn.pt``.

    ``start_from``: an ``mdnrnn.pt`` whose weights a fresh run starts from instead of random ones
    (the iterative procedure fine-tunes the previous round's M on the grown data).
    """
    settings = config.mdnrnn
    runtime = resolve(config.runtime).apply()
    rollouts = RolloutReader(paths.rollouts)
    latents = LatentReader(paths.latents, paths.vae, rollouts, vae_identity(config, rollouts))
    train_episodes, heldout_episodes = split_episodes(rollouts.episodes["seed"], config.data.heldout_fraction)
    if len(heldout_episodes) == 0:
        raise UserValueError(f"data.heldout_fraction={config.data.heldout_fraction} leaves no held-out episode")
    # Played episodes listed again are windows built again: a few dozen episodes, a few MB at most.
    train = build_sequences(latents, rollouts, repeat_played(train_episodes, rollouts.episodes["source"],
                                                             settings.played_repeat), settings.sequence_length)
    heldout = build_sequences(latents, rollouts, heldout_episodes, settings.sequence_length).to(runtime.device)
    paths.ensure()
    torch.manual_seed(settings.seed)
    shape = {"z_size": latents.z_size, "action_size": rollouts.action_size, "hidden_size": settings.hidden_size,
             "mixtures": settings.mixtures, "mixture": settings.mixture,
             **({"latents": "mean"} if settings.latents == "mean" else {}),  # older checkpoints stay as they were
             **({"residual": True} if settings.residual else {})}
    model = (MDNRNN(**shape) if settings.ensemble == 1
             else MDNRNNEnsemble(settings.ensemble, **shape)).to(runtime.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    inputs = {"vae_sha256": latents.vae_sha256, "rollouts_fingerprint": latents.rollouts_fingerprint}
    if start_from is not None:
        inputs["start_from_sha256"] = file_sha256(start_from)
    run = TrainingRun(CHECKPOINT_KIND, {"settings": settings_that_matter(config), "inputs": inputs},
                      paths.last_checkpoint(CHECKPOINT_KIND), paths.mdnrnn, MetricsLog(paths.metrics(CHECKPOINT_KIND)),
                      runtime, "M")
    log = run.log
    common = {"model_args": shape | ({"members": settings.ensemble} if settings.ensemble > 1 else {})}
    state = run.resume()
    start_epoch, best, best_epoch, untrained = 0, float("inf"), 0, float("inf")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"], state["best_heldout"]
        best_epoch = state.get("best_epoch", start_epoch)  # a run saved before early stopping: patience from here
        untrained = state.get("untrained_heldout", float("inf"))
    if start_epoch == 0 and start_from is not None:
        previous, checkpoint = load_mdnrnn(start_from)
        if checkpoint["model_args"] != common["model_args"]:
            raise UserValueError(f"{start_from}: an M of another shape ({checkpoint['model_args']}) cannot start "
                             f"this one ({common['model_args']})")
        model.load_state_dict(previous.state_dict())
    if state is None:
        # The starting M's held-out loss: what a diverging run is measured against before its first best.
        untrained = heldout_losses(model, heldout, settings)["heldout/loss/total"]
    if start_epoch >= settings.epochs or _out_of_patience(settings.patience, start_epoch, best_epoch):
        run.require_best()
        logger.info(f"{paths.mdnrnn}: already trained for {start_epoch} epochs (asked for {settings.epochs}"
                    + (f", patience {settings.patience}: its best epoch is {best_epoch})" if settings.patience
                       else ")"))
        # A run measured before a measure existed (the per-step held-action figure), with another zero
        # action noise curve, or at another dream temperature, is measured again.
        if not _measured_as_asked(paths, settings.temperature, settings.zero_action_noise_stds):
            measure_simulator(config, paths, rollouts, latents, heldout_episodes, log, runtime)
        return paths.mdnrnn
    paths.simulator_metrics.unlink(missing_ok=True)
    started = time.perf_counter()
    with tqdm(range(start_epoch + 1, settings.epochs + 1), desc="M", unit="epoch", disable=not progress,
              dynamic_ncols=True) as epochs:
        for epoch in epochs:
            epoch_start = time.perf_counter()
            metrics = train_epoch(model, optimizer, train, epoch, settings, runtime, run)
            metrics["timesteps_per_s"] = metrics.pop("timesteps") / (time.perf_counter() - epoch_start)
            epochs.set_postfix(z_nll=f"{metrics['train/loss/z_nll']:.3f}", steps_s=f"{metrics['timesteps_per_s']:.0f}")
            if epoch % settings.eval_every and epoch != settings.epochs:
                continue
            metrics = {"epoch": epoch, **metrics, **heldout_losses(model, heldout, settings)}
            run.check(epoch, metrics, [model], "heldout/loss/total", min(best, untrained))
            improved = metrics["heldout/loss/total"] < best
            best = min(best, metrics["heldout/loss/total"])
            if improved:
                best_epoch = epoch
                run.save_best({**common, "model": model.state_dict(), "epoch": epoch, "metrics": metrics})
            run.save_last({**common, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                           "best_heldout": best, "best_epoch": best_epoch, "untrained_heldout": untrained},
                          record=metrics)
            if _out_of_patience(settings.patience, epoch, best_epoch):
                logger.info(f"M: no better held-out loss for {epoch - best_epoch} epochs (mdnrnn.patience "
                            f"{settings.patience}); stopped at epoch {epoch}, keeping epoch {best_epoch}")
                break
    logger.info(f"M trained to epoch {epoch} in {time.perf_counter() - started:.0f} s; "
                f"held-out z NLL {metrics['heldout/loss/z_nll']:.3f}")
    measure_simulator(config, paths, rollouts, latents, heldout_episodes, log, runtime)
    return paths.mdnrnn


def _out_of_patience(patience: int, epoch: int, best_epoch: int) -> bool:
    """Whether early stopping ends M's training at ``epoch``, its best held-out epoch ``best_epoch`` (0: none)."""
    return patience > 0 and epoch - best_epoch >= patience


def _measured_as_asked(paths: PipelinePaths, temperature: float, noise_stds: tuple[float, ...]) -> bool:
    """Whether M's simulator measures on disk are every measure asked for, taken at ``temperature`` with
    the zero action's noise curve at ``noise_stds`` (neither is part of what M is, so a trained M is
    measured again when either changes)."""
    if not paths.simulator_metrics.is_file() or not paths.figure(HELD_ACTION_FIGURE).is_file():
        return False
    measured = json.loads(paths.simulator_metrics.read_text())  # one measure_simulator call wrote it all
    noise = measured.get("held_action", {}).get("zero_action_noise", {"stds": []})
    return noise["stds"] == list(noise_stds) and measured.get("temperature") == temperature


def measure_simulator(config: PipelineConfig, paths: PipelinePaths, rollouts: RolloutReader,
                      latents: LatentReader, heldout_episodes: np.ndarray, log: MetricsLog,
                      runtime: Runtime) -> dict[str, Any]:
    """Open-loop error against horizon, replay gap, and the two figures; returns the summary."""
    settings = config.mdnrnn
    model, checkpoint = load_mdnrnn(paths.mdnrnn, runtime.device)
    # The last epoch is not always the one kept: past its best, M overfits and mdnrnn.pt stays put.
    logger.info(f"{paths.mdnrnn.name} keeps epoch {checkpoint['epoch']}, the best held-out loss "
                f"(z NLL {checkpoint['metrics']['heldout/loss/z_nll']:.3f})")
    vae, _ = load_vae(paths.vae, runtime.device)
    context, steps = settings.context_frames, settings.openloop_steps
    usable = [int(e) for e in heldout_episodes if rollouts.lengths[e] >= context + steps]
    if not usable:
        raise UserValueError(f"no held-out episode has {context + steps} steps for the open-loop measurement "
                         "(mdnrnn.context_frames + mdnrnn.openloop_steps)")
    mu = torch.from_numpy(np.stack([latents.episode(e)[0][:context + steps] for e in usable]))
    actions = torch.from_numpy(np.stack([rollouts.step_data(e)["actions"][:context + steps] for e in usable]))
    frames = np.stack([rollouts.frames(e, 0, context + steps) for e in usable])
    heldout_mu = np.concatenate([latents.episode(int(e))[0] for e in heldout_episodes])
    variance = torch.from_numpy(heldout_mu.var(axis=0))
    errors = openloop_errors(model, vae, mu, actions, frames, variance, context, steps)
    gap = replay_gap(model, rollouts, latents, heldout_episodes, settings)
    calibration = zero_action_calibration(model, vae, config, rollouts, latents, heldout_episodes)
    sensitivity = action_sensitivity(model, vae, config, rollouts, heldout_episodes)
    held = held_action_calibration(model, vae, config, rollouts, latents, heldout_episodes)
    summary = {
        "epoch": checkpoint["epoch"], "context_frames": context, "heldout_episodes": usable,
        "openloop_latent_error": errors["latent_error"], "openloop_pixel_mse": errors["pixel_mse"],
        **gap, "zero_action": calibration, "action_sensitivity": sensitivity, "held_action": held,
    }
    atomic_write(paths.simulator_metrics,
                 lambda temporary: temporary.write_text(json_text(summary)))
    record = {"epoch": checkpoint["epoch"], "simulator": True,
              **{f"openloop/latent_error@{h}": errors["latent_error"][h - 1] for h in REPORTED_HORIZONS if h <= steps},
              **{f"openloop/pixel_mse@{h}": errors["pixel_mse"][h - 1] for h in REPORTED_HORIZONS if h <= steps},
              **{f"replay/{k}": v for k, v in gap.items() if not isinstance(v, list)},
              **{f"zero_action/{k}": v for k, v in calibration.items() if not isinstance(v, list)},
              "action_sensitivity/ratio": sensitivity["ratio"],
              **{f"held_action/{name}@{value:+g}": values[i] for name, values in
                 (("real", held["real_return_mean"]), ("dream", held["dream_return_mean"]))
                 for i, value in enumerate(HELD_ACTIONS)},
              "held_action/largest_overestimate": held["largest_overestimate"]}
    log.replace(record, "simulator")  # measured again after a stop before its figures: one line, not two
    shown = [usable.index(e) for e in openloop_episodes(np.array(usable))]
    truth = frames_to_input(torch.from_numpy(frames[shown].reshape(-1, *frames.shape[2:]))).view(
        len(shown), context + steps, 3, *frames.shape[2:4])
    model_frames = torch.cat([truth[:, :context], errors["predicted_frames"][shown]], dim=1)
    openloop_strip(truth.numpy(), model_frames.numpy(), context,
                   f"V+M open loop on held-out episodes: {context} context frames, then {steps} predicted "
                   "from M's mean with the real actions (rows: truth / model / error)", paths.figure("openloop_vm"))
    held_action_rewards(held, paths.figure(HELD_ACTION_FIGURE))
    _dream_figure(model, vae, latents, rollouts, usable[0], steps, paths.figure("dream_rollouts"))
    dream_video(model, vae, latents, rollouts, usable[0], settings.temperature, config.controller.dream_reward,
                paths.video("dream_vs_real"))
    logger.info("open-loop latent error at horizons " + ", ".join(
        f"{h}: {errors['latent_error'][h - 1]:.2f}" for h in REPORTED_HORIZONS if h <= steps)
                + f"; replay gap {gap['mean_abs_gap']:.0f} (dream {gap['dream_return_mean']:.0f} vs real "
            f"{gap['real_return_mean']:.0f}); zero action: dream {calibration['dream_return_mean']:.0f} vs real "
            f"{calibration['real_return_mean']:.0f} (M's reward on the real frames: "
            f"{calibration['teacher_forced_return_mean']:.0f}); action sensitivity (dream / real): "
            f"{sensitivity['ratio']:.2f}; held actions -1 / 0 / +1, dream vs real: "
                + ", ".join(f"{d:.0f} vs {r:.0f}" for d, r in zip(held["dream_return_mean"], held["real_return_mean"],
                                                                 strict=True))
                + (f"; {describe_zero_action_noise(held)}" if "zero_action_noise" in held else ""))
    return summary


@torch.no_grad()
def _dream_frames(model: MDNRNN, vae, latents: LatentReader, rollouts: RolloutReader, episode: int, steps: int,
                  temperature: float, seed: int) -> tuple[np.ndarray, float]:
    """One dream from ``episode``'s first latent with its real actions: decoded frames of every 5th
    step ``(N, 3, 64, 64)`` and the dream's return."""
    mu, logvar = (torch.from_numpy(a[:1]) for a in latents.episode(episode))
    actions = torch.from_numpy(rollouts.step_data(episode)["actions"][:steps])
    dream = DreamEnv(model, mu, logvar, temperature=temperature, max_steps=steps,
                     generator=torch.Generator().manual_seed(seed))
    zs, total = [dream.reset(1, starts=torch.zeros(1, dtype=torch.long))], 0.0
    for t in range(steps):
        result = dream.step(actions[t:t + 1])
        zs.append(result.z)
        total += float(result.reward)
    return decode(vae, torch.cat(zs)[::5]).numpy(), total


def dream_video(model: MDNRNN, vae, latents: LatentReader, rollouts: RolloutReader, episode: int,
                temperature: float, reward: str, path: Path) -> None:
    """A real episode beside M's dream from its first frame, fed its actions, as ``path`` (a GIF)."""
    mu, logvar = (torch.from_numpy(a[0]) for a in latents.episode(episode))
    steps = rollouts.step_data(episode)
    dreamed, dream_returns = dream_with_actions(model, vae, mu, logvar, torch.from_numpy(steps["actions"]),
                                                temperature, seed=episode, reward=reward)
    real = rollouts.frames(episode, 0, len(steps["actions"]) + 1)
    real_returns = np.concatenate([[0.0], np.cumsum(steps["rewards"])])
    write_gif([(f"real, episode {episode}", real, real_returns),
               (f"M's dream, tau {temperature:g}", dreamed, dream_returns)], path)


def _real_frames(rollouts: RolloutReader, episode: int, steps: int) -> np.ndarray:
    return frames_to_input(torch.from_numpy(rollouts.frames(episode, 0, steps + 1)[::5])).numpy()


def _dream_figure(model: MDNRNN, vae, latents: LatentReader, rollouts: RolloutReader, episode: int,
                  steps: int, path: Path) -> None:
    """Decoded dream rollouts from one held-out start, the episode's real actions, at each temperature."""
    rows = [("real", _real_frames(rollouts, episode, steps))]
    for temperature in DREAM_TEMPERATURES:
        rows.append((f"tau {temperature}", _dream_frames(model, vae, latents, rollouts, episode, steps,
                                                         temperature, seed=0)[0]))
    frame_rows(rows, f"dream rollouts from a held-out start with its real actions (every 5th step of {steps})",
               path)


def run_dream(config: PipelineConfig, paths: PipelinePaths, temperature: float, count: int = 4) -> Path:
    """Decode dream rollouts at ``temperature`` from ``count`` held-out starts, with their real
    actions, beside the real episodes; writes ``figures/dream_tau<temperature>.png`` and, for the
    first of them, the video ``figures/dream_vs_real_tau<temperature>.gif``."""
    runtime = resolve(config.runtime).apply()
    rollouts = RolloutReader(paths.rollouts)
    latents = LatentReader(paths.latents, paths.vae, rollouts, vae_identity(config, rollouts))
    model, _ = load_mdnrnn(paths.mdnrnn, runtime.device)
    vae, _ = load_vae(paths.vae, runtime.device)
    _, heldout = split_episodes(rollouts.episodes["seed"], config.data.heldout_fraction)
    rows = []
    for episode in openloop_episodes(heldout, count):
        steps = min(int(rollouts.lengths[episode]), 60)
        dreamed, dream_return = _dream_frames(model, vae, latents, rollouts, int(episode), steps, temperature,
                                              seed=int(episode))
        real_return = rollouts.step_data(int(episode))["rewards"][:steps].sum()
        rows += [(f"real {real_return:.0f}", _real_frames(rollouts, int(episode), steps)),
                 (f"dream {dream_return:.0f}", dreamed)]
    first = int(openloop_episodes(heldout, 1)[0])
    dream_video(model, vae, latents, rollouts, first, temperature, config.controller.dream_reward,
                paths.video(f"dream_vs_real_tau{temperature:g}"))
    path = paths.figure(f"dream_tau{temperature:g}")
    frame_rows(rows, f"episodes of held-out starts, real and replayed in M's dream at tau {temperature:g} "
                     "(every 5th step; returns over the shown steps)", path)
    return path
