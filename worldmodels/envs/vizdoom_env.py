"""ViZDoom scenarios seen from pixels, e.g. ``vizdoom:take_cover`` (the paper's dream experiment).

The scenario's own ``.cfg`` from the ``vizdoom`` wheel is loaded (its WAD, rewards and buttons),
run headless. Scenarios whose two buttons move (or turn) left and right are seen through one
continuous action in [-1, 1], split in thirds as in the paper's Doom code: below -1/3 presses
left, above 1/3 presses right, in between presses nothing. So collection, C, Dreamer and the
evaluation all see a Box, and the discrete buttons live only here.

One agent step is ``action_repeat`` tics (the paper: 1, 35 per second of game time); the
episode is cut after ``max_episode_steps`` agent steps (the paper: 2,100), counted here rather
than by ViZDoom's timeout so that a cut episode is ``truncated``, not ``terminated``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from worldmodels.envs.base import PixelEnv, StepResult, crop_and_resize
from worldmodels.errors import UserValueError

# Button pairs that one [-1, 1] action can drive: (negative third, positive third).
_OPPOSED_BUTTONS = (("MOVE_LEFT", "MOVE_RIGHT"), ("TURN_LEFT", "TURN_RIGHT"))
NO_BUTTON, NEGATIVE_BUTTON, POSITIVE_BUTTON = 0, 1, 2


def action_third(action: float) -> int:
    """The button one action in [-1, 1] presses: ``NEGATIVE_BUTTON`` below -1/3 (left),
    ``POSITIVE_BUTTON`` above 1/3 (right), ``NO_BUTTON`` in between."""
    if action < -1.0 / 3.0:
        return NEGATIVE_BUTTON
    if action > 1.0 / 3.0:
        return POSITIVE_BUTTON
    return NO_BUTTON


def scenario_config(scenario: str) -> str:
    """The path of a scenario's ``.cfg`` shipped with the ``vizdoom`` wheel (``take_cover`` -> ...)."""
    import vizdoom

    path = os.path.join(vizdoom.scenarios_path, f"{scenario}.cfg")
    if not os.path.isfile(path):
        known = sorted(name[:-4] for name in os.listdir(vizdoom.scenarios_path) if name.endswith(".cfg"))
        raise UserValueError(f"env.id: unknown ViZDoom scenario {scenario!r} (known: {', '.join(known)})")
    return path


def keep_open_files_from_children() -> None:
    """Mark this process's open file descriptors (beyond stdin, stdout, stderr) close-on-exec.

    ViZDoom runs the Doom engine as a child process, which would otherwise inherit them: one holding
    an HDF5 file keeps that file's lock (h5py locks with flock) for as long as the engine runs, and
    every later open of the file fails with "unable to lock file"."""
    folder = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(folder):
        descriptor = int(name)
        if descriptor > 2:
            try:
                os.set_inheritable(descriptor, False)
            except OSError:  # closed since the listing (the listing's own descriptor among them)
                pass


class VizDoomEnv(PixelEnv):
    """A ViZDoom scenario with two opposed buttons, frames cropped to ``crop`` rows and resized."""

    def __init__(self, scenario: str, action_repeat: int = 1, size: int = 64,
                 crop: tuple[int, int] | None = None, max_episode_steps: int | None = None,
                 difficulty: int | None = None) -> None:
        import vizdoom

        self._game = vizdoom.DoomGame()
        self._game.load_config(scenario_config(scenario))
        # The engine writes its settings (_vizdoom.ini) and a _vizdoom/ folder to the working directory:
        # both go to a folder of this env's own, removed by close().
        self._settings_dir = tempfile.TemporaryDirectory(prefix="worldmodels-vizdoom-")
        self._game.set_doom_config_path(os.path.join(self._settings_dir.name, "_vizdoom.ini"))
        self._game.set_window_visible(False)
        self._game.set_screen_format(vizdoom.ScreenFormat.RGB24)
        self._game.set_mode(vizdoom.Mode.PLAYER)
        self._game.set_episode_timeout(0)  # the cap is counted in agent steps by step()
        if difficulty is not None:
            self._game.set_doom_skill(difficulty)
        buttons = [button.name for button in self._game.get_available_buttons()]
        pair = next((p for p in _OPPOSED_BUTTONS if sorted(p) == sorted(buttons)), None)
        if pair is None:
            raise UserValueError(f"env.id: ViZDoom scenario {scenario!r} has buttons {buttons}; only scenarios with "
                             f"one opposed pair ({', '.join('/'.join(p) for p in _OPPOSED_BUTTONS)}) are supported")
        # make_action takes one 0/1 per available button, in the cfg's order.
        self._presses = {NO_BUTTON: [0, 0],
                         NEGATIVE_BUTTON: [int(name == pair[0]) for name in buttons],
                         POSITIVE_BUTTON: [int(name == pair[1]) for name in buttons]}
        keep_open_files_from_children()
        working_directory = os.getcwd()
        os.chdir(self._settings_dir.name)  # the engine process starts here
        try:
            self._game.init()
        finally:
            os.chdir(working_directory)
        self._scenario, self._buttons, self._difficulty = scenario, buttons, difficulty
        self._action_repeat, self._size, self._crop = action_repeat, size, crop
        self.max_episode_steps = max_episode_steps
        self.action_size = 1
        self.frame_shape = (size, size, 3)
        self._frame = np.zeros(self.frame_shape, np.uint8)
        self._agent_steps = 0

    def _observe(self) -> np.ndarray:
        state = self._game.get_state()
        if state is not None:  # None once the episode has ended: the last frame stays
            self._frame = crop_and_resize(state.screen_buffer, self._crop, self._size)
        return self._frame

    def reset(self, seed: int) -> np.ndarray:
        self._game.set_seed(int(seed) % 2**32)  # applies to the next episode
        self._game.new_episode()
        self._agent_steps = 0
        return self._observe()

    def step(self, action: np.ndarray) -> StepResult:
        if self._game.is_episode_finished():  # ViZDoom would go on paying the living reward
            raise RuntimeError("step() after the episode ended; call reset() first")
        button = action_third(float(self._check_action(action)[0]))
        reward = float(self._game.make_action(self._presses[button], self._action_repeat))
        self._agent_steps += 1
        terminated = self._game.is_episode_finished()
        truncated = not terminated and self.max_episode_steps is not None \
            and self._agent_steps >= self.max_episode_steps
        return StepResult(self._observe(), reward, bool(terminated), bool(truncated))

    def describe(self) -> dict[str, Any]:
        import vizdoom

        return {
            "backend": "vizdoom",
            "vizdoom_version": vizdoom.__version__,
            "scenario": self._scenario,
            "difficulty": self._difficulty if self._difficulty is not None else "scenario default",
            "buttons": self._buttons,
            "action_mapping": "< -1/3: first of the opposed pair, > 1/3: second, else none",
            "action_repeat": self._action_repeat,
            "crop": None if self._crop is None else list(self._crop),
            "max_env_steps": None if self.max_episode_steps is None else self.max_episode_steps * self._action_repeat,
        }

    def close(self) -> None:
        self._game.close()
        self._settings_dir.cleanup()
