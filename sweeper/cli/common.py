"""What every command shares: the one way the CLI reports a problem and exits."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any, NoReturn

import click

from sweeper.errors import SweeperError


def fail(message: str, code: int = 2) -> NoReturn:
    """Print the problem on stderr, one ``error:`` line per line of ``message``, and exit
    with ``code`` (2: bad input, nothing written). No traceback."""
    for line in message.splitlines() or [""]:
        click.echo(f"error: {line}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _one_line_usage() -> Iterator[None]:
    """Click's own errors (an unknown option or command, a missing argument, a value of the
    wrong type) as one ``error:`` line naming what is wrong and where help is, with click's
    exit code (2 for usage), instead of click's three (usage, hint, message). A bare
    command group still prints its help (click's NoArgsIsHelpError)."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise
    except click.ClickException as error:
        message = " ".join(error.format_message().split())  # click's may span lines
        context = getattr(error, "ctx", None)
        where = f" (see {context.command_path} --help)" if context is not None else ""
        fail(f"{message}{where}", error.exit_code)


class Commands(click.Group):
    """The command group that turns a SweeperError raised anywhere below into ``fail``, and
    click's own usage errors (of this group or any command under it) into one line."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        # The group's own arguments are parsed here, before ``invoke``.
        with _one_line_usage():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> object:
        with _one_line_usage():
            try:
                return super().invoke(ctx)
            except SweeperError as error:
                fail(str(error), error.exit_code)


__all__ = ["Commands", "fail"]
