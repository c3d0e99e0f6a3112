"""Stage `train-mdnrnn`: M on V's latents, then M measured as a simulator.

Training: episodes of ``latents.h5`` cut into padded windows (``data/sequences.py``), z drawn
afresh from (mu, logvar) for every batch, the fused ``nn.LSTM``, Adam with elementwise gradient
clipping. Every ``eval_every`` epochs: held-out losses (z = mu) to ``metrics/mdnrnn.jsonl``, the
resume state to ``checkpoints/mdnrnn_last.pt`` and, when held-out loss improves, ``mdnrnn.pt``.

After training: open-loop latent and pixel error against horizon, the dream's replay gap, the
zero-action and held-action dreams against the real env (and the real zero action under small
action noise: how far off the dream of doing nothing is, in the env's own units), and M's action
sensitivity, on the held-out episodes (``simulator.py``), written to
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

from worldmodels.artifacts import MDNRNN_KIND, load_mdnrnn, load_vae
from worldmodels.config import MDNRNNConfig, PipelineConfig
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
from worldmodels.vmc.dream_starts import first_latents
from worldmodels.vmc.m_training import heldout_losses, settings_that_matter, train_epoch
from worldmodels.vmc.simulator import (
    REPORTED_HORIZONS,
    decode,
    describe_zero_action_noise,
    held_action_dream,
    noise_equivalent,
    openloop_episodes,
    openloop_errors,
    openloop_latents,
    replay_returns,
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
    latents = LatentReader(paths.latents, paths.vae, rollouts)
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
    start_epoch, best, untrained = 0, float("inf"), float("inf")
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best = state["epoch"], state["best_heldout"]
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
    if start_epoch >= settings.epochs:
        run.require_best()
        logger.info(f"{paths.mdnrnn}: already trained for {start_epoch} epochs (asked for {settings.epochs})")
        # A run measured before a measure existed (the per-step held-action figure, the zero action's
        # noise curve), or at another dream temperature, is measured again.
        if not _measured_as_asked(paths, settings.temperature):
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
            log.append(metrics)
            improved = metrics["heldout/loss/total"] < best
            best = min(best, metrics["heldout/loss/total"])
            if improved:
                run.save_best({**common, "model": model.state_dict(), "epoch": epoch, "metrics": metrics})
            run.save_last({**common, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                           "best_heldout": best, "untrained_heldout": untrained})
    logger.info(f"M trained to epoch {settings.epochs} in {time.perf_counter() - started:.0f} s; "
                f"held-out z NLL {metrics['heldout/loss/z_nll']:.3f}")
    measure_simulator(config, paths, rollouts, latents, heldout_episodes, log, runtime)
    return paths.mdnrnn


def _measured_as_asked(paths: PipelinePaths, temperature: float) -> bool:
    """Whether M's simulator measures on disk are every measure there is, taken at ``temperature``
    (the dream temperature is not part of what M is, so a trained M is measured again at another)."""
    if not paths.simulator_metrics.is_file() or not paths.figure(HELD_ACTION_FIGURE).is_file():
        return False
    measured = json.loads(paths.simulator_metrics.read_text())  # one measure_simulator call wrote it all
    return "zero_action_noise" in measured.get("held_action", {}) and measured.get("temperature") == temperature


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
    gap = _replay_gap(model, rollouts, latents, heldout_episodes, settings)
    calibration = _zero_action_calibration(model, vae, config, rollouts, latents, heldout_episodes)
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
    log.append(record)
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
                + f"; {describe_zero_action_noise(held)}")
    return summary


def _replay_gap(model: MDNRNN, rollouts: RolloutReader, latents: LatentReader, episodes: np.ndarray,
                settings: MDNRNNConfig) -> dict[str, Any]:
    """Replaying held-out episodes' real actions in the dream (at ``settings.temperature``), each for
    its whole length: where episodes end at different steps (a death in TakeCover), the dream is
    scored up to the step the real episode ended, so a dream that dies too soon or too late shows."""
    lengths = rollouts.lengths[episodes].astype(np.int64)
    horizon = int(lengths.max())
    starts_mu, starts_logvar = first_latents(latents, episodes)
    actions = torch.zeros(len(episodes), horizon, rollouts.action_size)
    real = np.zeros(len(episodes))
    for row, episode in enumerate(episodes):
        steps = rollouts.step_data(int(episode))
        actions[row, :lengths[row]] = torch.from_numpy(steps["actions"])
        real[row] = steps["rewards"].sum()
    dream = replay_returns(model, starts_mu, starts_logvar, actions, settings.temperature, settings.dream_samples,
                           settings.seed, lengths=torch.from_numpy(lengths)).double().numpy()
    correlation = float(np.corrcoef(dream.mean(1), real)[0, 1]) if len(real) > 1 and real.std() > 0 else 0.0
    return {"temperature": settings.temperature, "steps": horizon, "real_return_mean": float(real.mean()),
            "dream_return_mean": float(dream.mean()), "mean_gap": float((dream.mean(1) - real).mean()),
            "mean_abs_gap": float(np.abs(dream.mean(1) - real).mean()), "correlation": correlation,
            "real_returns": real.tolist(), "dream_returns": dream.mean(1).tolist()}


@torch.no_grad()
def _zero_action_calibration(model: MDNRNN, vae, config: PipelineConfig, rollouts: RolloutReader,
                             latents: LatentReader, episodes: np.ndarray) -> dict[str, Any]:
    """A closed-loop probe: a = 0 at every step, in the real env and in the dream, from the
    held-out episodes' start states (the env reset with their seeds; the dream from their first
    latents). Doing nothing scores well on cartpole, so a dream that lets the pole fall shows here.

    Also M's reward head teacher-forced on the real zero-action frames (encoded by V): when that
    matches the real return while the dream does not, the reward head is right and M's open-loop
    dynamics are what fails."""
    from worldmodels.envs import make_env

    horizon = int(rollouts.lengths[episodes].min())
    env = make_env(config.env)
    real, teacher_forced = [], []
    try:
        for episode in episodes:
            frames, rewards = held_action_episode(env, int(rollouts.episodes["seed"][episode]), 0.0, horizon)
            real.append(float(rewards.sum()))
            device = next(model.parameters()).device
            z, _ = vae.encode(frames_to_input(torch.from_numpy(np.stack(frames[:-1])).to(device)))
            prediction = model(z[None], torch.zeros(1, len(z), rollouts.action_size, device=device))[0]
            teacher_forced.append(float(prediction.reward.sum()))
    finally:
        env.close()
    starts_mu, starts_logvar = first_latents(latents, episodes)
    actions = torch.zeros(len(episodes), horizon, rollouts.action_size)
    dream = replay_returns(model, starts_mu, starts_logvar, actions, config.mdnrnn.temperature,
                           config.mdnrnn.dream_samples, config.mdnrnn.seed).double().numpy().mean(1)
    real = np.asarray(real, dtype=np.float64)
    return {"steps": horizon, "real_return_mean": float(real.mean()), "dream_return_mean": float(dream.mean()),
            "mean_gap": float((dream - real).mean()), "mean_abs_gap": float(np.abs(dream - real).mean()),
            "teacher_forced_return_mean": float(np.mean(teacher_forced)),
            "real_returns": real.tolist(), "dream_returns": dream.tolist(), "teacher_forced_returns": teacher_forced}


HELD_ACTIONS = (-1.0, 0.0, 1.0)
ZERO_ACTION_NOISE_STDS = (0.003, 0.01, 0.03, 0.1)
"""Stds of the Gaussian action noise around the zero action at which the real env is also played,
to put M's dream of doing nothing on the env's own sensitivity curve (cartpole-balance: noise of
std 0.01, half a percent of the action's range, already costs 12% of the zero action's return)."""
SENSITIVITY_STEPS = 20


def held_action_episode(env, seed: int, value: float, steps: int, noise_std: float = 0.0,
                        noise_seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Up to ``steps`` steps of ``env`` from ``reset(seed)`` with every action dimension held at ``value``
    (plus, with ``noise_std``, Gaussian noise of that std drawn from ``noise_seed``, clipped to [-1, 1]):
    the frames (the reset frame first) and every step's reward ``(n,)``. Stops where the episode ends
    (doing nothing ends a TakeCover episode), so there may be fewer than ``steps + 1`` frames."""
    frames, rewards = [env.reset(seed)], []
    action = np.full(env.action_size, value)
    noise = np.random.default_rng(noise_seed)
    for _ in range(steps):
        played = action if not noise_std else np.clip(action + noise_std * noise.standard_normal(action.shape), -1, 1)
        result = env.step(played)
        rewards.append(result.reward)
        frames.append(result.frame)
        if result.terminated or result.truncated:
            break
    return frames, np.asarray(rewards, dtype=np.float64)


@torch.no_grad()
def action_sensitivity(model: MDNRNN, vae, config: PipelineConfig, rollouts: RolloutReader,
                       episodes: np.ndarray, steps: int = SENSITIVITY_STEPS) -> dict[str, Any]:
    """Does M's future depend on the action as the real one does? From the held-out episodes' start
    states, every action dimension is held at -1, at 0 and at +1 for ``steps`` steps, in the real env
    (its frames encoded by V: z = mu) and in M's deterministic dream (mixture means from the first
    frame's mu). At each step the spread between the three futures is the mean pairwise distance of
    their ``z``, averaged over episodes.

    Returns the per-step spreads (``real``, ``dream``, lists of ``steps``) and ``ratio``: the dream's
    summed spread over the real one (1: M's futures part by action as reality's do; 0: M ignores the
    action; above 1: M exaggerates it).
    """
    from worldmodels.envs import make_env

    steps = min(steps, int(rollouts.lengths[episodes].min()))
    device = next(model.parameters()).device
    env = make_env(config.env)
    real = np.zeros((len(episodes), len(HELD_ACTIONS), steps + 1, model.z_size))
    try:
        for row, episode in enumerate(episodes):
            for column, value in enumerate(HELD_ACTIONS):
                frames, _ = held_action_episode(env, int(rollouts.episodes["seed"][episode]), value, steps)
                frames += [frames[-1]] * (steps + 1 - len(frames))  # an ended episode stays where it ended
                z, _ = vae.encode(frames_to_input(torch.from_numpy(np.stack(frames)).to(device)))
                real[row, column] = z.cpu().numpy()
    finally:
        env.close()
    first = torch.from_numpy(real[:, :, :1]).float().flatten(0, 1)  # (E * 3, 1, Z)
    held = torch.tensor(HELD_ACTIONS).repeat(len(episodes))[:, None, None].expand(-1, steps, model.action_size)
    dream = openloop_latents(model, first, held.contiguous(), 1, steps).view(len(episodes), len(HELD_ACTIONS),
                                                                             steps, -1).numpy()

    def spread(futures: np.ndarray) -> np.ndarray:  # (E, 3, T, Z) -> (T,)
        pairs = [(0, 1), (0, 2), (1, 2)]
        return np.mean([np.linalg.norm(futures[:, i] - futures[:, j], axis=-1) for i, j in pairs], axis=0).mean(0)

    real_spread, dream_spread = spread(real[:, :, 1:]), spread(dream)
    ratio = float(dream_spread.sum() / real_spread.sum()) if real_spread.sum() > 0 else float("nan")
    return {"steps": steps, "actions": list(HELD_ACTIONS), "real": real_spread.tolist(),
            "dream": dream_spread.tolist(), "ratio": ratio}


HELD_EPISODES = 10


@torch.no_grad()
def held_action_calibration(model: MDNRNN, vae, config: PipelineConfig, rollouts: RolloutReader,
                            latents: LatentReader, episodes: np.ndarray,
                            count: int = HELD_EPISODES) -> dict[str, Any]:
    """Whole episodes with every action dimension held at -1, at 0 and at +1, in the real env (reset
    with the seeds of the first ``count`` held-out episodes) and in M's dream from their first
    latents (at M's temperature, rewarded as C's dream is, ended by M's done head), both up to C's
    dream length. Where the dream pays a held action far more than reality does, a C evolved in
    the dream finds it (TakeCover: holding one direction, which the exploration data never does for
    long, survives in the dream and walks into the wall in the game).

    Returns per held value (lists in the order of ``actions``) the real and dream return and episode
    length means, their mean reward at every step (``real_reward_per_step``, ``dream_reward_per_step``:
    where along the episode the dream parts from reality; 0 after an episode's end), and
    ``largest_overestimate``: the largest dream - real return over the values. ``zero_action_noise``:
    the real zero action's return with Gaussian action noise of each std in ``ZERO_ACTION_NOISE_STDS``
    (the same starts; noise seeded by the start's index), and ``dream_as_noise``, the noise std whose
    real return the dream of doing nothing matches (:func:`~worldmodels.vmc.simulator.noise_equivalent`).
    """
    from worldmodels.envs import make_env

    episodes = np.sort(episodes)[:count]
    steps = config.controller.dream_steps or int(rollouts.lengths.min())
    env = make_env(config.env)
    real_rewards = np.zeros((len(HELD_ACTIONS), len(episodes), steps))  # 0 after an episode's end
    real_lengths = np.zeros((len(HELD_ACTIONS), len(episodes)))
    try:
        for row, value in enumerate(HELD_ACTIONS):
            for column, episode in enumerate(episodes):
                _, rewards = held_action_episode(env, int(rollouts.episodes["seed"][episode]), value, steps)
                real_rewards[row, column, :len(rewards)], real_lengths[row, column] = rewards, len(rewards)
        noisy = np.array([[held_action_episode(env, int(rollouts.episodes["seed"][episode]), 0.0, steps, std,
                                               noise_seed=column)[1].sum()
                           for column, episode in enumerate(episodes)] for std in ZERO_ACTION_NOISE_STDS])
    finally:
        env.close()
    starts_mu, starts_logvar = first_latents(latents, episodes)
    dreams = held_action_dream(model, starts_mu, starts_logvar, HELD_ACTIONS, config.mdnrnn.temperature,
                               config.mdnrnn.dream_samples, steps, config.controller.dream_reward, config.mdnrnn.seed)
    real, dream = real_rewards.sum(2).mean(1), dreams.returns.double().numpy().mean(1)
    zero = HELD_ACTIONS.index(0.0)
    noisy_means = noisy.mean(1).tolist()
    return {"actions": list(HELD_ACTIONS), "episodes": len(episodes), "steps": steps,
            "temperature": config.mdnrnn.temperature,
            "real_return_mean": real.tolist(), "dream_return_mean": dream.tolist(),
            "real_length_mean": real_lengths.mean(1).tolist(),
            "dream_length_mean": dreams.lengths.double().numpy().mean(1).tolist(),
            "largest_overestimate": float((dream - real).max()),
            "real_reward_per_step": real_rewards.mean(1).tolist(),
            "dream_reward_per_step": dreams.step_rewards.double().numpy().mean(1).tolist(),
            "zero_action_noise": {"stds": list(ZERO_ACTION_NOISE_STDS), "real_return_mean": noisy_means,
                                  "dream_as_noise": noise_equivalent(list(ZERO_ACTION_NOISE_STDS), noisy_means,
                                                                     float(real[zero]), float(dream[zero]))}}


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
    latents = LatentReader(paths.latents, paths.vae, rollouts)
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
