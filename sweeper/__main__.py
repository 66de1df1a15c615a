"""``python -m sweeper`` is the ``sweeper`` command."""

from sweeper.cli import main

main()
