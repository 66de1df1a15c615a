"""What every command shares: the one way the CLI reports a problem and exits."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from sweeper.errors import SweeperError


def fail(message: str, code: int = 2) -> NoReturn:
    """Print the problem on stderr, one ``error:`` line per line of ``message``, and exit
    with ``code`` (2: bad input, nothing written). No traceback."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(code)


class Commands(click.Group):
    """The command group that turns a SweeperError raised anywhere below into ``fail``."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SweeperError as error:
            fail(str(error), error.exit_code)


__all__ = ["Commands", "fail"]
