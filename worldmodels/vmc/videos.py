"""Dreams as moving pictures: animated GIFs of M's dream beside the real episode, and of C in the dream.

The paper's dream figures are videos; a strip of stills hides what matters (does the fireball keep
coming, does the pole fall the way it did). Two videos, written by the stages that make their models:

- ``figures/dream_vs_real.gif`` (``train-mdnrnn``): a held-out real episode beside M's dream from
  the same first frame, fed the same actions, at M's temperature; the dream stops where M's done
  head ends it.
- ``figures/controller_in_dream.gif`` (``train-controller``): C acting inside M's dream from a real
  first frame, at C's training temperature, for as long as the dream lasts.

Dream frames are V's decodings of M's latents; every panel is labelled with the step and the return
so far. GIFs are written with Pillow; long episodes are subsampled to at most ``MAX_GIF_FRAMES``
frames.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from worldmodels.models.controller import population_actions
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import ConvVAE
from worldmodels.vmc.dream import DreamEnv
from worldmodels.vmc.simulator import decode

MAX_GIF_FRAMES = 150
FRAME_MILLISECONDS = 60
SCALE = 2
LABEL_HEIGHT = 14


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """V's decodings ``(T, 3, H, W)`` in [0, 1] -> uint8 ``(T, H, W, 3)``."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def write_gif(panels: list[tuple[str, np.ndarray, np.ndarray]], path: Path) -> int:
    """Panels side by side, as one looping GIF; returns the number of GIF frames.

    ``panels``: (name, uint8 frames ``(T_i, H, W, 3)``, cumulative return ``(T_i,)``); the name (at
    most ~20 characters fit) is written above each panel, the step and the return so far below it.
    A panel that ends before the others keeps its last frame, darkened, labelled "end". Every
    ``k``-th step is shown, ``k`` the smallest that keeps the GIF within ``MAX_GIF_FRAMES`` frames.
    """
    longest = max(len(frames) for _, frames, _ in panels)
    stride = max(1, -(-longest // MAX_GIF_FRAMES))
    height, width = panels[0][1].shape[1:3]
    images = []
    for t in range(0, longest, stride):
        canvas = Image.new("RGB", (len(panels) * width * SCALE, height * SCALE + 2 * LABEL_HEIGHT), "black")
        draw = ImageDraw.Draw(canvas)
        for index, (name, frames, returns) in enumerate(panels):
            ended = t >= len(frames)
            shown = min(t, len(frames) - 1)
            frame = frames[shown] // 2 if ended else frames[shown]
            left = index * width * SCALE
            canvas.paste(Image.fromarray(frame).resize((width * SCALE, height * SCALE), Image.NEAREST),
                         (left, LABEL_HEIGHT))
            status = f"{'end' if ended else 'step'} {shown}, return {returns[shown]:.0f}"
            draw.text((left + 2, 1), name, fill="white")
            draw.text((left + 2, height * SCALE + LABEL_HEIGHT + 1), status, fill="white")
        images.append(canvas)
    # One palette for the whole GIF, from frames spread over it, and no dithering: per-frame palettes
    # and dither noise defeat GIF's compression (about 1.7x larger files).
    spread = images[::max(1, len(images) // 8)][:8]
    mosaic = Image.new("RGB", (images[0].width, images[0].height * len(spread)))
    for index, image in enumerate(spread):
        mosaic.paste(image, (0, index * image.height))
    palette = mosaic.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    images = [image.quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".gif.tmp")
    images[0].save(temporary, format="GIF", save_all=True, append_images=images[1:], loop=0,
                   duration=FRAME_MILLISECONDS, disposal=1)
    temporary.replace(path)
    return len(images)


@torch.no_grad()
def _decoded_dream(model: MDNRNN, vae: ConvVAE, mu: torch.Tensor, logvar: torch.Tensor,
                   act: Callable[[int, DreamEnv, torch.Tensor], torch.Tensor], steps: int, temperature: float,
                   seed: int, reward: str, start_state: tuple[torch.Tensor, torch.Tensor] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """One dream from a start latent (``mu``, ``logvar`` ``(Z,)``; M's (h, c) ``(H,)`` each on reaching
    it, default an episode's start), ``act(t, dream, z)`` giving each step's action ``(1, A)``, until
    M's done head ends it or ``steps`` steps.

    Returns V's decoded frames uint8 ``(L + 1, H, W, 3)`` (the start, then one per step) and the
    cumulative dream return ``(L + 1,)``."""
    dream = DreamEnv(model, mu[None], logvar[None], temperature=temperature, max_steps=steps,
                     generator=torch.Generator().manual_seed(seed), reward=reward,
                     start_states=None if start_state is None else tuple(s[None] for s in start_state))
    z = dream.reset(1, starts=torch.zeros(1, dtype=torch.long))
    zs, returns = [z], [0.0]
    for t in range(steps):
        result = dream.step(act(t, dream, z))
        z = result.z
        zs.append(z)
        returns.append(returns[-1] + float(result.reward))
        if bool(result.done[0]):
            break
    return to_uint8(decode(vae, torch.cat(zs))), np.array(returns)


def dream_with_actions(model: MDNRNN, vae: ConvVAE, mu: torch.Tensor, logvar: torch.Tensor, actions: torch.Tensor,
                       temperature: float, seed: int, reward: str = "model") -> tuple[np.ndarray, np.ndarray]:
    """M's dream from one start latent fed ``actions`` ``(T, A)`` (a real episode's), as
    :func:`_decoded_dream` returns it."""
    return _decoded_dream(model, vae, mu, logvar, lambda t, dream, z: actions[t:t + 1], len(actions),
                          temperature, seed, reward)


def policy_dream(model: MDNRNN, vae: ConvVAE, policy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 mu: torch.Tensor, logvar: torch.Tensor, temperature: float, steps: int, seed: int,
                 reward: str = "model") -> tuple[np.ndarray, np.ndarray]:
    """``policy(z, h)`` (``(1, Z)``, ``(1, H)`` -> ``(1, A)``) acting in M's dream from one start latent for up
    to ``steps`` steps, as :func:`_decoded_dream` returns it."""
    return _decoded_dream(model, vae, mu, logvar, lambda t, dream, z: policy(z, dream.h), steps, temperature,
                          seed, reward)


def controller_dream(model: MDNRNN, vae: ConvVAE, parameters: torch.Tensor, inputs: str, mu: torch.Tensor,
                     logvar: torch.Tensor, temperature: float, steps: int, seed: int, reward: str = "model",
                     start_state: tuple[torch.Tensor, torch.Tensor] | None = None,
                     layer_size: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """C (flat ``parameters`` ``(D,)``, a hidden layer of ``layer_size`` when above 0) acting in M's dream
    from one start latent for up to ``steps`` steps, as :func:`_decoded_dream` returns it."""
    flat = parameters[None].float()
    previous = {}  # the z C read on the step before (for `zz`); the start's own on the first step

    def act(t: int, dream: DreamEnv, z: torch.Tensor) -> torch.Tensor:
        previous_z = previous.get("z", z)
        previous["z"] = z
        return population_actions(flat.to(z.device), z, dream.h, model.action_size, inputs, dream.c, previous_z,
                                  layer_size)

    return _decoded_dream(model, vae, mu, logvar, act, steps, temperature, seed, reward, start_state)
