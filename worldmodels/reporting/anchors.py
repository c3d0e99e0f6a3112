"""The published numbers the report puts beside ours, read from ``anchors.yaml`` (data, with sources)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from worldmodels.reporting.page import fixed, spread

ANCHORS_FILE = Path(__file__).with_name("anchors.yaml")


@cache
def _data() -> dict[str, Any]:
    return yaml.safe_load(ANCHORS_FILE.read_text())


def published_anchors() -> list[list[str]]:
    """Rows of (task and setting, agent, env steps, score, source)."""
    return [[a["task"], a["agent"], a["env_steps"], a["score"], a["source"]] for a in _data()["anchors"]]


def paper_temperature_table() -> list[list[str]]:
    """The paper's TakeCover table: rows of (tau, dream score, real score)."""
    return [[r["temperature"], r["dream"], r["real"]] for r in _data()["paper_temperature_table"]]


PAPER_TASK = "vizdoom:take_cover"
"""The env of the paper's temperature table: a sweep on it is put row for row beside the paper's."""


def paper_temperature_rows() -> dict[float | None, tuple[str, str]]:
    """The paper's TakeCover table by temperature (``None``: the random policy) -> (dream, real)."""
    rows = {}
    for row in _data()["paper_temperature_table"]:
        tau = None if row["temperature"] == "random policy" else float(row["temperature"])
        rows[tau] = (row["dream"], row["real"])
    return rows


def sweep_rows(rows: list[dict[str, Any]]) -> list[list[str]]:
    """A temperature sweep's rows (``temperature``, ``dream_mean``/``dream_std``, ``real_mean``/``real_std``;
    a ``None`` temperature is the random policy) as text: (tau, dream score, real score)."""
    return [["random policy" if row["temperature"] is None else f"{row['temperature']:g}",
             "-" if row.get("dream_mean") is None else _spread(row["dream_mean"], row.get("dream_std")),
             _spread(row["real_mean"], row["real_std"])] for row in rows]


def beside_the_paper(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Our sweep's rows (as :func:`sweep_rows`) beside the paper's, row for row: (tau, our dream, our real,
    the paper's dream, the paper's real). The paper's rows we did not run come last."""
    paper = paper_temperature_rows()
    lines, seen = [], set()
    for row, text in zip(rows, sweep_rows(rows), strict=True):
        tau = row["temperature"]
        key = next((t for t in paper if t is not None and tau is not None and abs(t - tau) < 1e-9), tau)
        seen.add(key)
        lines.append([*text, *paper.get(key, ("", ""))])
    for tau, (dream, real) in paper.items():
        if tau not in seen:
            lines.append(["random policy" if tau is None else f"{tau:g}", "not run", "not run", dream, real])
    return lines


def _spread(mean: float, std: float | None) -> str:
    return fixed(mean, 0) if std is None else spread(mean, std, decimals=0)
