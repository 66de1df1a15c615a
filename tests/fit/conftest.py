from __future__ import annotations

import importlib.util
from pathlib import Path

import click
import pytest

from tests.fit.synthetic import Truth, synthetic_rows, write_run

STEPLAW_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "steplaw"
MOE_CSV = STEPLAW_DIR / "moe_lr_bs_loss.csv"


@pytest.fixture(scope="session")
def truth() -> Truth:
    return Truth()


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory, truth) -> Path:
    """A symmetric synthetic sweep (20 cells, 2340 runs) with known laws."""
    return write_run(tmp_path_factory.mktemp("synthetic"), synthetic_rows(truth))


@pytest.fixture(scope="session")
def asymmetric_run(tmp_path_factory, truth) -> Path:
    """Loss rises 3x faster above the optimal lr than below it, with noise."""
    rows = synthetic_rows(truth, asymmetry=3.0, noise=5e-4, seed=1)
    return write_run(tmp_path_factory.mktemp("asymmetric"), rows)


@pytest.fixture(scope="session")
def cli() -> click.Group:
    """The fit-stage commands on a click group. Uses the project's ``sweeper`` group when the
    whole CLI imports; otherwise (another stage's module missing while it is being written)
    a group of this stage's COMMANDS, loaded without the package's __init__."""
    try:
        from sweeper.cli import main

        return main
    except ImportError:
        path = Path(__file__).resolve().parents[2] / "sweeper" / "cli" / "fitting.py"
        spec = importlib.util.spec_from_file_location("_sweeper_cli_fitting", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        group = click.Group("sweeper")
        for command in module.COMMANDS:
            group.add_command(command)
        return group
