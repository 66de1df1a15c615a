"""The ``sweeper`` command line: thin click commands over functions that tests call directly.

Each submodule owns the commands of one stage (run, fit, export) and registers them on
``main`` here, so stages stay apart as they do in the package. A ``SweeperError`` raised by
any command is caught once, by ``main`` (cli/common.py): one line per problem, its exit code.
"""

from __future__ import annotations

import click

from sweeper.cli.common import Commands


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sweeper")
def main() -> None:
    """Hyperparameter sweeps for LM pre-training: run proxy ladders, fit lr/batch laws, predict."""


def _register() -> None:
    # Imported here, not at the top, so ``import sweeper.cli`` stays cheap and circular-free.
    from sweeper.cli import exporting, fitting, replaying, reporting, running

    for module in (running, fitting, exporting, reporting, replaying):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
