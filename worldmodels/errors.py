"""The one error type a user can act on.

``wm`` shows a :class:`UserError` as a single line naming the file, key or value at fault; any
other exception is a bug and keeps its traceback. Raise a subclass of it (or it) wherever the
cause is in the user's hands: a setting, a file, another run's artifact, a training that diverged.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what and where."""


class UserValueError(UserError, ValueError):
    """A setting, a file or a value from the user that cannot be used here (a ``ValueError`` too, so
    that callers testing for one still catch it)."""
