"""The published numbers the report puts beside ours, read from ``anchors.yaml`` (data, with sources)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

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
