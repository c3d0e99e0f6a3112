"""Metrics and figures also as TensorBoard event files, when the optional ``tensorboard`` package is
installed (``pip install 'worldmodels[tensorboard]'``): ``<pipeline>/tensorboard/<stage>/``.

The JSON-lines logs in ``metrics/`` stay the source of truth (the report and the resume logic read
them); these files are for looking at curves and images live, as Dreamer and CleanRL users do:
``tensorboard --logdir data/<pipeline>/tensorboard``. A resumed stage may write a step twice;
TensorBoard then shows both points.
"""

from __future__ import annotations

import importlib.util
import numbers
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np


def available() -> bool:
    """True when the ``tensorboard`` package (which torch's writer needs) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


@cache
def writer(directory: Path):
    """One open ``SummaryWriter`` per folder for the life of the process (None without tensorboard)."""
    if not available():
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(directory))


def log_scalars(directory: Path, record: dict[str, Any], step_key: str) -> None:
    """Every number of a metrics record as a scalar at the record's step."""
    summary = writer(Path(directory))
    if summary is None or not isinstance(record.get(step_key), numbers.Number):
        return
    step = int(record[step_key])
    for key, value in record.items():
        if key != step_key and isinstance(value, numbers.Number) and not isinstance(value, bool):
            summary.add_scalar(key, float(value), step)
    summary.flush()


_drawn: dict[str, int] = {}


def log_figure(png: Path) -> None:
    """A figure written to ``<pipeline>/figures/<name>.png`` as an image under ``tensorboard/figures``;
    a PNG drawn anywhere else (a figure for the docs) has no pipeline folder to log beside."""
    if png.parent.name != "figures":
        return
    directory = png.parent.parent / "tensorboard" / "figures"
    summary = writer(directory)
    if summary is None:
        return
    from PIL import Image

    with Image.open(png) as image:
        pixels = np.asarray(image.convert("RGB"))
    # Step: the how-many-th drawing of this figure in this process (V redraws its reconstructions as it improves).
    step = _drawn[png.stem] = _drawn.get(png.stem, -1) + 1
    summary.add_image(png.stem, pixels, step, dataformats="HWC")
    summary.flush()
