"""What the stages say, through :mod:`logging`: results and progress notes at INFO, problems at WARNING.

``wm`` configures it once (``--quiet``: warnings only; ``--verbose``: debug too): INFO lines go to
standard output as plain text, warnings to standard error prefixed ``WARNING:``. Used as a library,
nothing is configured and Python shows warnings only; call :func:`configure` to see the rest.
"""

from __future__ import annotations

import logging
import sys


class _CurrentStream(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is at the time of each record (so that a
    redirected or captured stream, as in tests, is followed rather than a stale one)."""

    def __init__(self, stream_name: str) -> None:
        super().__init__()
        self._stream_name = stream_name

    @property
    def stream(self):  # noqa: D102
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value) -> None:
        pass


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def configure(level: int = logging.INFO) -> None:
    """Send the ``worldmodels`` loggers' records at ``level`` and above to stdout (below WARNING) and
    stderr (WARNING and above). Calling it again replaces the handlers, never doubles them."""
    logger = logging.getLogger("worldmodels")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    out = _CurrentStream("stdout")
    out.addFilter(_BelowWarning())
    out.setFormatter(logging.Formatter("%(message)s"))
    err = _CurrentStream("stderr")
    err.setLevel(logging.WARNING)
    err.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    logger.addHandler(out)
    logger.addHandler(err)
    logger.setLevel(level)
    # Libraries that log through the root logger (absl, below dm_control) give it a handler of its own;
    # without this every line would print twice.
    logger.propagate = False
