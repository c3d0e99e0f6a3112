"""Stop signals: SIGTERM (``kill``, a batch scheduler) and SIGINT (Ctrl-C) stop any ``wm`` command within seconds.

The first signal raises :class:`Stopped` (a ``SystemExit`` with code ``128 + signal``: 143 for SIGTERM,
130 for SIGINT) in the main thread, so the stage unwinds as after an error: worker pools are killed,
files closed, the stage's time recorded, and what was committed (episodes, epochs, generations)
stays for the same command to resume from. ``SystemExit`` passes through every ``except Exception``.
Once the command has unwound, :func:`exit_now` ends the process without the interpreter's
finalization, which a library cut off in the middle of its import can turn into an abort.

Two things could still keep the process alive, and a watchdog thread covers both:

- Python ignores an exception raised inside a destructor or a weakref callback (it prints
  "Exception ignored in ..."); a signal that lands there would be lost and the stage would run on.
  When the unwinding has not reached the command's top after ``REPEAT_AFTER_S``, the watchdog
  raises the stop once more in the main thread.
- Code that never returns to Python (a blocked read in native code, an exit hook joining a thread)
  cannot be unwound at all. After ``HARD_STOP_AFTER_S`` the watchdog ends the process with the same
  exit code; worker processes die with it (they ask the kernel for that, see ``pools.workers``).
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import sys
import threading
import time

REPEAT_AFTER_S = 2.0
"""Seconds after a stop signal before it is raised once more, if the command has not unwound by then."""

HARD_STOP_AFTER_S = 10.0
"""Seconds after a stop signal before the process is ended without further unwinding."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_state: dict[str, object] = {"signal": None, "unwound": False, "installed": False}
_received = threading.Event()
_watchdog_started = threading.Event()


class Stopped(SystemExit):
    """Raised in the main thread by a stop signal; ``code`` is ``128 + signal``."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"stopped by {signal.Signals(self.signum).name}"


def install() -> None:
    """Handle SIGTERM and SIGINT in this process as the module's docstring says (main thread only). The
    watchdog thread starts here, idle until a signal comes: the handler itself only records the signal,
    wakes the watchdog and raises, since a handler that writes or starts threads can deadlock or fail
    when the signal lands inside the same call in the main thread."""
    _state.update(signal=None, unwound=False, installed=True)
    _received.clear()
    if not _watchdog_started.is_set():
        _watchdog_started.set()
        threading.Thread(target=_watchdog, name="stop-watchdog", daemon=True).start()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _on_signal)


def reclaim() -> None:
    """Take SIGTERM and SIGINT back after a library replaced their handlers (``ray.init`` installs its own,
    which logs a stack and exits 1); a no-op where :func:`install` was not called (tests, library use)."""
    if not _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        # Set again even where Python still names ours: a native handler may have been put below it.
        signal.signal(signum, _on_signal)


def requested() -> int | None:
    """The stop signal this process received, or None."""
    return _state["signal"]  # type: ignore[return-value]


def raise_if_requested() -> None:
    """Raise :class:`Stopped` when a stop signal was received (for code that would otherwise report a
    consequence of the stop, such as a worker killed by the same signal, as an error of its own)."""
    if _state["signal"] is not None:
        raise Stopped(int(_state["signal"]))  # type: ignore[arg-type]


def unwound() -> None:
    """The command has returned or raised out of its top: from here only the interpreter's exit remains,
    and a stop signal ends the process at once with ``128 + signal``."""
    _state["unwound"] = True


def exit_now() -> None:
    """End a stopped command's process with ``128 + signal`` once it has unwound: Ray (if this process started
    one) shut down, logs and standard streams flushed, and the interpreter's finalization skipped. A stop can
    cut a library off in the middle of its import (torch), and finalizing such a half-made module has
    aborted the process (SIGABRT) instead of exiting; everything the stage writes is already closed."""
    ray = sys.modules.get("ray")
    if ray is not None:
        try:
            if ray.is_initialized():
                ray.shutdown()
        except Exception:  # noqa: BLE001 - ending anyway
            pass
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken stream
            pass
    os._exit(128 + int(_state["signal"]))  # type: ignore[arg-type]


def _on_signal(signum: int, frame: object) -> None:
    if _state["unwound"]:
        # The command is done (its end is in runs.jsonl) and only the interpreter's exit remains, whose
        # atexit hooks and weakref callbacks would swallow the exception and exit 0 as if the stop never came.
        _end_after_the_command(signum)
    if _state["signal"] is None:
        _state["signal"] = signum
        _received.set()
    raise Stopped(signum)


def _end_after_the_command(signum: int) -> None:
    """End the process with ``128 + signum`` at once: what the command printed is flushed (a flush the
    signal interrupted fails, and is skipped), the rest of the interpreter's exit is not waited for."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream, or a flush this signal interrupted
            pass
    os._exit(128 + signum)


def _say(text: str) -> None:
    """Write to standard error without Python's buffered writer (the main thread may be inside it)."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def _watchdog() -> None:
    _received.wait()
    signum = int(_state["signal"])  # type: ignore[arg-type]
    name = signal.Signals(signum).name
    _say(f"\n{name}: stopping; what was committed is kept, and the same command resumes from it\n")
    time.sleep(REPEAT_AFTER_S)
    if not _state["unwound"]:
        # Swallowed (raised inside a destructor or a weakref callback) or stuck: raise it once more at the
        # main thread's next Python step. Once only: a longer cleanup (closing pools, files) is not cut.
        _thread.interrupt_main(signum)
    time.sleep(max(HARD_STOP_AFTER_S - REPEAT_AFTER_S, 0.0))
    _say(f"{name}: not stopped after {HARD_STOP_AFTER_S:.0f} s; ending the process now\n")
    os._exit(128 + signum)
