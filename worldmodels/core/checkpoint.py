"""Checkpoints and artifacts written atomically (temp file, fsync, rename), and file hashes.

A checkpoint is a dict saved with ``torch.save``; it carries what is needed to load the model or
resume training from the file alone (constructor arguments, config, step, optimizer and RNG
state, the fingerprint of its input).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldmodels.errors import UserValueError

# torch is imported where a checkpoint is saved or loaded, not here: the CLI imports this module (for
# atomic writes) before it installs its stop-signal handlers, and torch takes a second to import.


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary_path)``, flush it to disk, then rename it over ``path`` (and flush the rename).

    An OSError that names no file (a write on a full disk says only "No space left on device") is raised
    again naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename) to disk; where a folder cannot be opened for it, skip."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically: a crash leaves the old file or the new one.

    Serialized in memory first: torch's file writer turns a full disk into a RuntimeError that names
    neither the file nor the cause, where Python's own write raises the OSError that says both."""
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write(path, lambda temporary: temporary.write_bytes(buffer.getbuffer()))


def load_checkpoint(path: Path, kind: str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`; check it is a ``kind`` checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint")
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch raises several types for damaged files
        raise UserValueError(f"{path}: cannot read checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("kind") != kind:
        found = state.get("kind") if isinstance(state, dict) else type(state).__name__
        raise UserValueError(f"{path}: not a {kind} checkpoint (found {found!r})")
    return state


def file_sha256(path: Path, block_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()
