"""The user-error class: wrong input (config, flags, workdir, checkpoints), shown as one line.

Code that checks user input raises `UserError` (or a subclass) with a message that says what is
wrong and what to do; `launch.main` prints it as `error: ...` and exits with code 2. Any other
exception is a bug and keeps its traceback. It lives in the lowest layer so that `models/`,
`data/`, `train/` and `launch/` can all raise it.
"""

from __future__ import annotations


class UserError(Exception):
    """Input the user can fix: printed as one line, exit code 2, no traceback."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or directory the config names is not there (still a FileNotFoundError for callers
    that catch that)."""
