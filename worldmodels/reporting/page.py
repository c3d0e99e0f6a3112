"""The report page's HTML helpers: the style, the missing-input box, tables, numbers and counts, embedded
figures, linked videos, and :func:`page` that puts sections together so that one failing section never takes
the page down."""

from __future__ import annotations

import base64
import functools
import html
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from worldmodels.config import PipelineConfig
from worldmodels.core.paths import PipelinePaths
from worldmodels.errors import UserError

DEFAULT_PIPELINE = "cartpole_balance"

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; text-align: left; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: .6em 0; border: 1px solid #eee; }
figure { margin: .6em 0; } figure img { margin: 0 0 .2em 0; }
.missing { background: #fff4e0; border-left: 4px solid #e0a030; padding: .5em 1em; margin: .6em 0; }
.side { display: flex; gap: 1em; } .side > div { flex: 1; min-width: 0; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.note { color: #555; font-size: .92em; }
"""


class Missing(Exception):
    """An input of a section does not exist yet: ``path``, and the command that makes it."""

    def __init__(self, path: Path, command: str) -> None:
        super().__init__(f"{path} is missing")
        self.path, self.command = path, command


@dataclass
class Report:
    """What the sections read: the pipeline's config and paths, and how to name its commands."""

    config: PipelineConfig
    paths: PipelinePaths

    def make(self, target: str) -> str:
        """The Make command that builds ``target`` for this pipeline (and data folder)."""
        suffix = "" if self.config.name == DEFAULT_PIPELINE else f" PIPELINE={self.config.name}"
        if self.paths.root.parent != Path("data"):
            suffix += f" DATA_DIR={self.paths.root.parent}"
        return f"make {target}{suffix}"

    def wm(self, command: str) -> str:
        """The `wm` command line of ``command`` for this pipeline (and data folder)."""
        data_dir = "" if self.paths.root.parent == Path("data") else f" --data-dir {self.paths.root.parent}"
        return f"wm {command} --pipeline {self.config.name}{data_dir}"

    def json(self, path: Path, command: str) -> Any:
        if not path.is_file():
            raise Missing(path, command)
        return json.loads(path.read_text())

    def figure(self, name: str, command: str, alt: str) -> str:
        """The figure ``figures/<name>.png`` inlined as a data URL in an <img> (the page needs no other file
        for it), or a missing box. A figure of more than ``INLINE_PNG_LIMIT`` bytes (a strip of many noisy
        frames) is inlined as a JPEG copy linked to the full PNG beside the page."""
        path = self.paths.figure(name)
        if not path.is_file():
            return missing_box(path, command)
        png = path.read_bytes()
        if len(png) <= INLINE_PNG_LIMIT:
            return _inline_png(png, alt)
        link = html.escape(path.relative_to(self.paths.report.parent).as_posix())
        return (f'<figure><a href="{link}">{_inline_jpeg(png, alt)}</a>'
                f'<figcaption class="note">A JPEG copy of <a href="{link}"><code>{link}</code></a> '
                f"({_file_size(len(png))} as PNG, beside this page in the run's folder): open it for every "
                "pixel.</figcaption></figure>")

    def video(self, name: str, command: str, alt: str) -> str:
        """The animated GIF ``figures/<name>.gif``, linked beside the page with its first frame inline as a
        still, or a missing box. The page links its videos instead of embedding them: each is megabytes,
        and a page that carried them all would be tens of megabytes, slow to open and to share."""
        path = self.paths.video(name)
        if not path.is_file():
            return missing_box(path, command)
        link = html.escape(path.relative_to(self.paths.report.parent).as_posix())
        with Image.open(path) as gif:
            still = io.BytesIO()
            gif.save(still, format="PNG", optimize=True)  # the first frame alone, in the GIF's own palette
        return (f'<figure><a href="{link}">{_inline_png(still.getvalue(), alt)}</a>'
                f'<figcaption class="note">The first frame of the video <a href="{link}"><code>{link}</code></a> '
                f"(animated GIF, {_file_size(path.stat().st_size)}), a file beside this page in the run's "
                "folder: open it to play.</figcaption></figure>")


def _file_size(size: int) -> str:
    """A file's size in bytes as a reader reads it: "1.2 MB", "85 kB"."""
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{max(1, round(size / 1e3))} kB"


INLINE_PNG_LIMIT = 1_000_000
"""Bytes above which a figure is inlined as a JPEG copy: the open-loop strips are 3 MB as PNG, and the page
that carried them whole was over 5 MB."""


INLINE_MAX_WIDTH = 1600
"""Pixels: a JPEG copy is scaled down to this width (a page shows it narrower still; the PNG keeps them all)."""


def _inline_jpeg(png: bytes, alt: str, quality: int = 85) -> str:
    """An <img> of the PNG ``png`` re-encoded as a JPEG (on white where it is transparent, at most
    ``INLINE_MAX_WIDTH`` wide), inlined."""
    with Image.open(io.BytesIO(png)) as image:
        rgba = image.convert("RGBA")
    if rgba.width > INLINE_MAX_WIDTH:
        rgba = rgba.resize((INLINE_MAX_WIDTH, round(rgba.height * INLINE_MAX_WIDTH / rgba.width)), Image.LANCZOS)
    flat = Image.new("RGB", rgba.size, "white")
    flat.paste(rgba, mask=rgba.getchannel("A"))
    jpeg = io.BytesIO()
    flat.save(jpeg, format="JPEG", quality=quality, optimize=True)
    encoded = base64.b64encode(jpeg.getvalue()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{encoded}" alt="{html.escape(alt)}">'


def _inline_png(png: bytes, alt: str) -> str:
    """An <img> of the PNG ``png``, inlined as a data URL."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{html.escape(alt)}">'


@functools.lru_cache(maxsize=16)
def _load_cached(path: Path, mtime_ns: int) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def load(path: Path) -> dict[str, Any]:
    """A checkpoint, read once per version of the file however many sections ask for it."""
    return _load_cached(path, path.stat().st_mtime_ns)


def missing_box(path: Path, command: str) -> str:
    return (f'<div class="missing">Missing: <code>{html.escape(str(path))}</code>. '
            f'Make it with <code>{html.escape(command)}</code>.</div>')


def table(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; numbers are right-aligned, ``None`` shows as a dash."""
    def cell(value: Any) -> str:
        if value is None:
            return '<td class="number">-</td>'
        if isinstance(value, (int, float, np.floating, np.integer)):
            return f'<td class="number">{_number(value)}</td>'
        return f"<td>{html.escape(str(value))}</td>"
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _number(value: float) -> str:
    """A table's number: integers whole with thousands separators, floats to 3 significant digits."""
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if value == 0:
        return "0"  # -0.0 as well: a sign on nothing reads as a bug
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}" if magnitude >= 0.01 else f"{value:.2e}"


def fixed(value: float, decimals: int = 1) -> str:
    """``value`` with ``decimals`` decimals; one that rounds to zero prints unsigned ("0.000" for -0.0004 at 3
    decimals, "0" for -0.4 at none), as a small negative number would otherwise read "-0"."""
    text = f"{value:.{decimals}f}"
    return text.removeprefix("-") if float(text) == 0 else text


def spread(mean: float, std: float, decimals: int = 1) -> str:
    """A mean and its standard deviation, "mean +- std", each with ``decimals`` decimals."""
    return f"{fixed(mean, decimals)} +- {fixed(std, decimals)}"


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` with its noun, singular for one: "1 epoch", "2 epochs", "1,000 env steps"; ``plural`` for a
    noun that does not take an s ("search", "searches")."""
    return f"{count:,} {noun if count == 1 else plural or noun + 's'}"


def format_seconds(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


def page(config: PipelineConfig, paths: PipelinePaths,
         sections: tuple[tuple[str, Callable[[Report], str]], ...],
         section_agents: dict[str, str] | None = None) -> str:
    """The whole page as one HTML string. A section named in ``section_agents`` is left out when its agent
    is not one of ``config.report.agents`` (a Dreamer-only pipeline has no V, M or C to show)."""
    report = Report(config, paths)
    parts = []
    for title, section in sections:
        agent = (section_agents or {}).get(title)
        if agent is not None and agent not in config.report.agents:
            continue
        try:
            body = section(report)
        except Missing as missing:
            body = missing_box(missing.path, missing.command)
        except Exception as error:  # noqa: BLE001 - a file mid-write or damaged must not take the page down
            # A damaged file says what is wrong with it; anything else is a bug, named by its type.
            what = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            body = f'<div class="missing">This section could not be built: {html.escape(what)}</div>'
        anchor = title.split(":")[0].lower().replace(" ", "-")
        parts.append(f'<section id="{html.escape(anchor)}"><h2>{html.escape(title)}</h2>{body}</section>')
    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>worldmodels report: {html.escape(config.name)}</title><style>{STYLE}</style></head><body>"
            f"<h1>worldmodels report: {html.escape(config.name)}</h1>"
            f'<p class="note">{html.escape(config.description or "")} Built {created} from '
            f"<code>{html.escape(str(paths.root))}</code>.</p>"
            + "".join(parts) + "</body></html>\n")


