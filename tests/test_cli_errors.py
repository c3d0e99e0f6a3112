"""What ``wm`` shows when a command fails: one line for what the user can fix, the traceback for a bug."""

import errno

import pytest
from click.testing import CliRunner

from worldmodels import cli
from worldmodels.cli import main
from worldmodels.errors import UserError, UserValueError


def _failing_config_command(monkeypatch, error: BaseException) -> None:
    """Make ``wm config`` raise ``error`` where it reads the pipeline."""
    def raising(*args, **kwargs):
        raise error
    monkeypatch.setattr(cli, "load_pipeline", raising)


@pytest.mark.parametrize("error", [UserError("collect.episodes: must be >= 1, got 0"),
                                   UserValueError("data.heldout_fraction=0 leaves no held-out episode")])
def test_a_user_error_is_one_line_without_a_traceback(monkeypatch, error):
    _failing_config_command(monkeypatch, error)
    result = CliRunner().invoke(main, ["config", "-p", "smoke"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {error}"
    assert isinstance(result.exception, SystemExit)  # click's one line, not the exception itself


@pytest.mark.parametrize("error", [ValueError("a bug: shapes (3,) and (4,) do not align"), KeyError("epoch"),
                                   FileNotFoundError(errno.ENOENT, "No such file or directory", "x.h5")])
def test_a_bug_keeps_its_traceback(monkeypatch, error):
    _failing_config_command(monkeypatch, error)
    result = CliRunner().invoke(main, ["config", "-p", "smoke"])
    assert result.exit_code == 1
    assert result.exception is error  # raised through, so Python prints its traceback


def test_the_machine_refusing_a_write_is_one_line_naming_the_file(monkeypatch):
    _failing_config_command(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "data/smoke/vae.pt"))
    result = CliRunner().invoke(main, ["config", "-p", "smoke"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: data/smoke/vae.pt: No space left on device"


def test_the_projects_errors_are_user_errors():
    from worldmodels.config import ConfigError
    from worldmodels.core.training import TrainingDiverged, TrainingOutputError
    from worldmodels.data.store import StoreError
    from worldmodels.pools.workers import WorkerError

    for kind in (ConfigError, StoreError, WorkerError, TrainingDiverged, TrainingOutputError, UserValueError):
        assert issubclass(kind, UserError), kind
