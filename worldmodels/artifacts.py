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

from worldmodels.config import DreamerConfig, PipelineConfig
from worldmodels.core.checkpoint import file_sha256, load_checkpoint
from worldmodels.core.training import TrainingOutputError
from worldmodels.data.store import RolloutReader
from worldmodels.dreamer.learner import Dreamer
from worldmodels.models.controller import LinearController
from worldmodels.models.mdnrnn import MDNRNN, MDNRNNEnsemble
from worldmodels.models.vae import ConvVAE

VAE_KIND = "vae"
MDNRNN_KIND = "mdnrnn"
CONTROLLER_KIND = "controller"
DREAMER_KIND = "dreamer"


def vae_identity(config: PipelineConfig, reader: RolloutReader) -> dict[str, Any]:
    """What makes a V this pipeline's (the training run's identity, checked again by whoever loads it): every
    setting that shapes the model but the epochs (which may grow), the held-out split, and the rollouts."""
    settings = dataclasses.asdict(config.vae)
    for key in ("epochs", "eval_frames", "encode_batch_size"):
        settings.pop(key)
    settings["heldout_fraction"] = config.data.heldout_fraction
    return {"settings": settings, "rollouts_fingerprint": reader.fingerprint}


def load_vae(path: Path, device: torch.device | str = "cpu") -> tuple[ConvVAE, dict[str, Any]]:
    """The model in ``path`` (a ``vae.pt``, saved on any device) on ``device`` in eval mode, and the checkpoint dict."""
    checkpoint = load_checkpoint(path, VAE_KIND)
    model = ConvVAE(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint


def load_mdnrnn(path: Path, device: torch.device | str = "cpu") -> tuple[MDNRNN | MDNRNNEnsemble, dict[str, Any]]:
    """The model in ``path`` (an ``mdnrnn.pt``, saved on any device) on ``device`` in eval mode, and the
    checkpoint dict. An ensemble (``model_args`` with ``members``) loads as :class:`MDNRNNEnsemble`,
    which acts as its first member wherever one M is used."""
    checkpoint = load_checkpoint(path, MDNRNN_KIND)
    args = dict(checkpoint["model_args"])
    members = args.pop("members", 1)
    model = MDNRNN(**args) if members == 1 else MDNRNNEnsemble(members, **args)
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


def refuse_made_from_another(checkpoint: dict[str, Any], path: Path, source_key: str, source: Path, made: str,
                             command: str) -> None:
    """Raise ``TrainingOutputError`` when the model in ``path`` was not made from the file ``source`` (its
    checkpoint's ``inputs[source_key]`` is not ``source``'s SHA-256): another pipeline's model, or one made
    before ``source`` changed. ``made`` says how it came from its source (``"evolved with another M"``)."""
    if checkpoint.get("inputs", {}).get(source_key) != file_sha256(source):
        raise TrainingOutputError(f"{path} was {made} than {source} (another pipeline's, or made before "
                                  f"{source.name} changed); run {command} to make this pipeline's")


def refuse_parts_of_other_runs(vae: Path, mdnrnn: Path, m_checkpoint: dict[str, Any], controller: Path | None = None,
                               c_checkpoint: dict[str, Any] | None = None,
                               v_checkpoint: dict[str, Any] | None = None, rollouts: Path | None = None) -> None:
    """One pipeline folder's V, M (and C) must be one chain: M trained on this V's latents, C evolved in this M.
    With V's checkpoint and the folder's ``rollouts``, a V not trained on them is named as the first thing to
    make again (`wm encode` refuses such a V)."""
    command = "`wm encode` and `wm train-mdnrnn`"
    if v_checkpoint is not None and rollouts is not None and rollouts.is_file():
        with RolloutReader(rollouts) as reader:
            if v_checkpoint.get("rollouts_fingerprint") != reader.fingerprint:
                command = f"`wm train-vae` ({vae} was trained on other rollouts), `wm encode` and `wm train-mdnrnn`"
    refuse_made_from_another(m_checkpoint, mdnrnn, "vae_sha256", vae, "trained on the latents of another V", command)
    if controller is not None and c_checkpoint is not None:
        refuse_made_from_another(c_checkpoint, controller, "mdnrnn_sha256", mdnrnn, "evolved with another M",
                                 "`wm train-controller`")
