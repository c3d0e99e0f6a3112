"""Every trained model, loaded from its checkpoint onto a device: one place for the checkpoint kinds.

A checkpoint saved on any device loads on any other (``load_checkpoint`` maps it to the CPU first);
each loader rebuilds the model from the constructor arguments the checkpoint carries and puts it
on ``device`` in eval mode.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from worldmodels.checkpoint import file_sha256, load_checkpoint
from worldmodels.config import DreamerConfig
from worldmodels.dreamer import Dreamer
from worldmodels.models.controller import LinearController
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.models.vae import ConvVAE

VAE_KIND = "vae"
MDNRNN_KIND = "mdnrnn"
CONTROLLER_KIND = "controller"
DREAMER_KIND = "dreamer"


def load_vae(path: Path, device: torch.device | str = "cpu") -> tuple[ConvVAE, dict[str, Any]]:
    """The model in ``path`` (a ``vae.pt``, saved on any device) on ``device`` in eval mode, and the checkpoint dict."""
    checkpoint = load_checkpoint(path, VAE_KIND)
    model = ConvVAE(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint


def load_mdnrnn(path: Path, device: torch.device | str = "cpu") -> tuple[MDNRNN, dict[str, Any]]:
    """The model in ``path`` (an ``mdnrnn.pt``, saved on any device) on ``device`` in eval mode, and the
    checkpoint dict."""
    checkpoint = load_checkpoint(path, MDNRNN_KIND)
    model = MDNRNN(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint


def load_controller(path: Path, device: torch.device | str = "cpu") -> tuple[LinearController, dict[str, Any]]:
    """C in ``path`` (a ``controller.pt``) on ``device`` in eval mode, and the checkpoint dict (its flat
    ``parameters`` stay on the CPU)."""
    checkpoint = load_checkpoint(path, CONTROLLER_KIND)
    controller = LinearController(**checkpoint["model_args"])
    controller.set_flat(checkpoint["parameters"])
    return controller.to(device).eval(), checkpoint


def load_dreamer(path: Path, device: torch.device | str = "cpu") -> tuple[Dreamer, dict[str, Any]]:
    """Dreamer from ``dreamer.pt`` (or a resume state, saved on any device) on ``device``, in eval mode, and
    the checkpoint dict."""
    checkpoint = load_checkpoint(path, DREAMER_KIND)
    known = {f.name for f in dataclasses.fields(DreamerConfig)}  # settings since moved (bf16, threads) are dropped
    settings = DreamerConfig(**{k: v for k, v in checkpoint["settings"].items() if k in known})
    dreamer = Dreamer.build(checkpoint["action_size"], settings, device)
    for name, module in dreamer.modules().items():
        module.load_state_dict(checkpoint[name])
        module.eval()
    return dreamer, checkpoint


def refuse_m_of_another_v(m_checkpoint: dict[str, Any], mdnrnn_path: Path, vae_path: Path) -> None:
    """Raise ``TrainingOutputError`` when the M in ``mdnrnn_path`` was not trained on ``vae_path``'s latents
    (another pipeline's M, or one trained before V changed)."""
    from worldmodels.training import TrainingOutputError

    if m_checkpoint.get("inputs", {}).get("vae_sha256") != file_sha256(vae_path):
        raise TrainingOutputError(f"{mdnrnn_path} was trained on the latents of another V than {vae_path} (another "
                                  "pipeline's M, or one trained before V changed); run `wm encode` and "
                                  "`wm train-mdnrnn` to make this pipeline's")


def refuse_c_of_another_m(c_checkpoint: dict[str, Any], controller_path: Path, mdnrnn_path: Path) -> None:
    """Raise ``TrainingOutputError`` when the C in ``controller_path`` was not evolved with ``mdnrnn_path``'s M."""
    from worldmodels.training import TrainingOutputError

    if c_checkpoint.get("inputs", {}).get("mdnrnn_sha256") != file_sha256(mdnrnn_path):
        raise TrainingOutputError(f"{controller_path} was evolved with another M than {mdnrnn_path} (another "
                                  "pipeline's C, or one evolved before M changed); run `wm train-controller` to "
                                  "make this pipeline's")
