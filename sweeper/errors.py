"""The one error base of sweeper: every refusal a user can cause is a ``SweeperError``.

The CLI catches this class once, prints its message (one line per problem) and exits with
``exit_code``; nothing else in the package prints or exits. Subclasses name the stage that
refused (a recipe, a fit, an export) and may set another code: 2 means the input asks for
something wrong or impossible (nothing was written), 3 that the run folder is busy.
"""

from __future__ import annotations


class SweeperError(Exception):
    """A problem the user can fix; ``str(error)`` is what they read, ``exit_code`` the CLI's."""

    exit_code: int = 2

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


__all__ = ["SweeperError"]
