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

from worldmodels.checkpoint import load_checkpoint
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
