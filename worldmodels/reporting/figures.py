"""Figures as PNG files (matplotlib, no display needed), written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from worldmodels.core import tensorboard  # noqa: E402
from worldmodels.core.checkpoint import atomic_write  # noqa: E402
from worldmodels.reporting.page import counted, fixed  # noqa: E402


def _save(figure: plt.Figure, path: Path, dpi: int = 100) -> None:
    atomic_write(Path(path), lambda temporary: figure.savefig(temporary, format="png", dpi=dpi,
                                                              bbox_inches="tight"))
    plt.close(figure)
    tensorboard.log_figure(Path(path))


def reconstruction_grid(real: np.ndarray, reconstructed: np.ndarray, title: str, path: Path) -> None:
    """Real frames (top row) above their reconstructions (bottom row); both uint8 ``(N, H, W, 3)``."""
    count = len(real)
    figure, axes = plt.subplots(2, count, figsize=(1.4 * count, 3.2), squeeze=False)
    for column in range(count):
        for row, images, label in ((0, real, "real"), (1, reconstructed, "V")):
            axis = axes[row, column]
            axis.imshow(images[column], interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(label)
    figure.suptitle(title, fontsize=9)
    _save(figure, path)


def _to_image(frames: np.ndarray) -> np.ndarray:
    """float ``(N, 3, H, W)`` in [0, 1] -> uint8 ``(H, N * W, 3)``, frames side by side."""
    frames = np.clip(np.asarray(frames), 0, 1)
    return (np.concatenate(list(frames.transpose(0, 2, 3, 1)), axis=1) * 255).round().astype(np.uint8)


def openloop_strip(truth: np.ndarray, model: np.ndarray, context: int, title: str, path: Path) -> None:
    """Rows truth / model / error for each sequence; ``truth``, ``model``: ``(S, T, 3, H, W)`` in [0, 1].

    The first ``context`` model frames are the truth (seen by the model); error = (model - truth + 1) / 2.
    """
    sequences = len(truth)
    figure, axes = plt.subplots(3 * sequences, 1, figsize=(truth.shape[1] * 0.45, 3 * sequences * 0.5))
    for index in range(sequences):
        error = (model[index] - truth[index] + 1) / 2
        for row, (images, label) in enumerate(((truth[index], "truth"), (model[index], "model"), (error, "error"))):
            axis = axes[3 * index + row]
            axis.imshow(_to_image(images), interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            width = images.shape[-1]
            axis.axvline(context * width - 0.5, color="white", linewidth=0.8)
    figure.suptitle(title, fontsize=9)
    _save(figure, path, dpi=150)  # ~64 px a frame, the frames' own size


def frame_rows(rows: list[tuple[str, np.ndarray]], title: str, path: Path) -> None:
    """One labelled row of frames each; frames float ``(N, 3, H, W)`` in [0, 1]."""
    figure, axes = plt.subplots(len(rows), 1, figsize=(len(rows[0][1]) * 0.8, len(rows) * 0.9), squeeze=False)
    for axis, (label, frames) in zip(axes[:, 0], rows, strict=True):
        axis.imshow(_to_image(frames), interpolation="nearest")
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    figure.suptitle(title, fontsize=9)
    _save(figure, path)


def cmaes_curve(records: list[dict], path: Path) -> None:
    """Best / mean / worst dream fitness per generation, and the periodic scores of the CMA mean."""
    generations = [r["generation"] for r in records]
    figure, axis = plt.subplots(figsize=(7, 4))
    for key, style in (("best", "-"), ("mean", "-"), ("worst", ":")):
        axis.plot(generations, [r[key] for r in records], style, label=f"population {key} (dream)")
    checks = [r for r in records if "eval/dream_mean" in r]
    axis.plot([r["generation"] for r in checks], [r["eval/dream_mean"] for r in checks], "o-",
              label="CMA mean, many dream rollouts")
    if checks and "eval/pick_mean" in checks[0]:  # controller.pick_temperature: the score that picked C
        axis.plot([r["generation"] for r in checks], [r["eval/pick_mean"] for r in checks], "^-",
                  label="CMA mean, dreams at the pick temperature")
    if checks and "eval/real_mean" in checks[0]:
        axis.errorbar([r["generation"] for r in checks], [r["eval/real_mean"] for r in checks],
                      yerr=[r["eval/real_std"] for r in checks], fmt="s-", label="CMA mean, real episodes")
    axis.set_xlabel("generation")
    axis.set_ylabel("return")
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    _save(figure, path)


def held_action_rewards(held: dict, path: Path) -> None:
    """The mean reward at every step of the held-action episodes, real against M's dream, one panel per
    held value (``held``: ``metrics/mdnrnn_simulator.json``'s ``held_action``): where the two curves
    part, the dream stops simulating what doing that does."""
    values = held["actions"]
    figure, axes = plt.subplots(1, len(values), figsize=(4 * len(values), 3.2), sharey=True, squeeze=False)
    for axis, value, real, dream, real_total, dream_total in zip(
            axes[0], values, held["real_reward_per_step"], held["dream_reward_per_step"],
            held["real_return_mean"], held["dream_return_mean"], strict=True):
        steps = np.arange(1, len(real) + 1)
        axis.plot(steps, real, label=f"real: return {fixed(real_total, 0)}")
        axis.plot(steps, dream, label=f"dream: return {fixed(dream_total, 0)}")
        axis.set_title(f"action held at {value:+g}", fontsize=9)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel(f"mean reward ({counted(held['episodes'], 'start')})")
    _save(figure, path)


def score_histogram(returns: dict[str, np.ndarray], path: Path) -> None:
    """Histograms of real-env returns, one per agent, on shared bins."""
    figure, axis = plt.subplots(figsize=(7, 4))
    everything = np.concatenate(list(returns.values()))
    bins = np.linspace(everything.min(), everything.max() + 1e-9, 30)
    for name, values in returns.items():
        axis.hist(values, bins=bins, alpha=0.6, label=f"{name}: {fixed(values.mean(), 0)} +- {fixed(values.std(), 0)}")
    axis.set_xlabel("real return")
    axis.set_ylabel("episodes")
    axis.legend(fontsize=8)
    _save(figure, path)


def _official_band(axis: plt.Axes, curve, up_to: float) -> None:
    """The published curve's mean +- std over seeds, through the first published point at or past ``up_to``."""
    shown = np.flatnonzero(curve.env_steps < up_to)
    last = min(len(curve.env_steps), (shown[-1] + 2) if len(shown) else 1)
    x, mean, std = curve.env_steps[:last], curve.mean[:last], curve.std[:last]
    axis.fill_between(x, mean - std, mean + std, color="tab:gray", alpha=0.25)
    axis.plot(x, mean, "s--", color="tab:gray",
              label=f"official Dreamer v1 eval, {counted(len(curve.returns), 'seed')}, mean +- std "
                    "(published every 100k)")


def dreamer_returns(records: list[dict], curve, action_repeat: int, path: Path, score=None) -> list[list[str]]:
    """Dreamer's returns in the real env, the article's two panels, and the wall clock.

    Online runs (records with ``train/return``): train returns (each episode Dreamer played, actor
    sample plus noise) and eval returns (the actor's mode; the final 100-episode ``score`` as a star)
    against env steps, both beside ``curve`` (a :class:`worldmodels.reference.Curve` or None); when the
    records carry ``wall_seconds``, a third panel puts the same returns against wall-clock minutes.
    Offline runs: eval returns against updates, and against the env steps of data beside ``curve``.
    Returns each panel's legend labels.
    """
    checks = [r for r in records if "eval/return_mean" in r]
    train = [r for r in records if "train/return" in r]
    timed = bool(train) and all("wall_seconds" in r for r in checks + train)
    figure, axes = plt.subplots(1, 3 if timed else 2, figsize=(16 if timed else 11, 4), sharey=True)
    if train:
        axes[0].plot([r["env_steps"] for r in train], [r["train/return"] for r in train], ".-", alpha=0.7,
                     label="this run: train episodes (actor sample + noise)")
        axes[0].set_title("train returns")
        axes[0].set_xlabel("env steps")
        axes[1].set_title(f"eval returns (actor mode, action repeat {action_repeat})")
        axes[1].set_xlabel("env steps")
    else:
        axes[0].errorbar([r["update"] for r in checks], [r["eval/return_mean"] for r in checks],
                         yerr=[r["eval/return_std"] for r in checks], fmt="o-", label="this run: eval (actor mode)")
        axes[0].set_xlabel("updates (offline, on the collect stage's episodes)")
        axes[0].set_title("eval returns against updates")
        axes[1].set_title("eval returns against env steps of data")
        axes[1].set_xlabel("env steps of data")
    eval_axis = axes[1]
    reached = max([r.get("env_steps", 0) for r in records] + [score.env_steps_of_data if score else 0, 1])
    evaluated = len(checks[-1].get("eval/returns", [])) if checks else 0
    eval_axis.errorbar([r["env_steps"] for r in checks], [r["eval/return_mean"] for r in checks],
                       yerr=[r["eval/return_std"] for r in checks], fmt="o-",
                       label=f"this run: eval, {counted(evaluated, 'episode')}")
    if score is not None:
        eval_axis.errorbar([score.env_steps_of_data], [score.mean], yerr=[score.std], fmt="*", markersize=12,
                           color="tab:red",
                           label=f"this run: final, {counted(score.episodes, 'episode')} ({fixed(score.mean, 0)})")
    for axis in (axes[0], eval_axis) if train else (eval_axis,):
        if curve is not None:
            _official_band(axis, curve, reached)
    if curve is not None:
        figure.text(0.01, -0.04, "The official curve's 5k point is its untrained actor's mode, a saturated push; "
                    "ours evaluates tanh of the actor's mean, near 0 untrained.", fontsize=7, color="tab:gray")
    if timed:
        clock = axes[2]
        clock.plot([r["wall_seconds"] / 60 for r in train], [r["train/return"] for r in train], ".", alpha=0.5,
                   label="train episodes")
        clock.errorbar([r["wall_seconds"] / 60 for r in checks], [r["eval/return_mean"] for r in checks],
                       yerr=[r["eval/return_std"] for r in checks], fmt="o-", label="eval")
        clock.set_xlabel("wall-clock minutes of this run (updates, episodes and evaluations)")
        clock.set_title("returns against wall clock")
    for axis in axes:
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6, loc="lower right")
    axes[0].set_ylabel("return")
    labels = [axis.get_legend_handles_labels()[1] for axis in axes]
    _save(figure, path)
    return labels


def prediction_errors(curves: dict[str, dict[str, list[float]]], threshold: float, path: Path) -> None:
    """Per-step open-loop errors against horizon, one line per model: plain image MSE per pixel, the
    foreground ratio (error on the task's objects over that of drawing the background alone; 1 = the
    objects are not drawn, with ``threshold`` marked), and the reward error.

    ``curves[model]`` has ``pixel_mse``, ``foreground_ratio`` and ``reward_abs_error`` lists (horizon 1 first).
    """
    figure, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for name, curve in curves.items():
        horizons = np.arange(1, len(curve["pixel_mse"]) + 1)
        axes[0].plot(horizons, curve["pixel_mse"], label=name)
        axes[1].plot(horizons, curve["foreground_ratio"], label=name)
        axes[2].plot(horizons, curve["reward_abs_error"], label=name)
    axes[1].axhline(threshold, color="tab:gray", linestyle=":", label=f"threshold {threshold:g}")
    axes[1].axhline(1.0, color="black", linewidth=0.8)
    axes[0].set_ylabel("image MSE per pixel (all pixels)")
    axes[1].set_ylabel("foreground error / background-only error")
    axes[2].set_ylabel("|predicted - real| reward per step")
    axes[0].set_title("plain MSE: not drawing small objects scores well")
    axes[1].set_title("on the task's objects (foreground pixels)")
    for axis in axes:
        axis.set_xlabel("open-loop horizon (steps after the context)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    _save(figure, path)
